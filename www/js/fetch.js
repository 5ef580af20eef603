// `engine.fetch`: kvscope's JavaScript API behind a function with fetch's signature, answering
// OpenAI's HTTP API in the page — `POST …/v1/chat/completions` and `…/v1/completions` (JSON, or
// `text/event-stream` with `stream: true`) and `GET …/v1/models` — so that OpenAI's own client
// runs against it:
//
//   new OpenAI({ baseURL: 'https://kvscope.invalid/v1', apiKey: 'none', fetch: engine.fetch, dangerouslyAllowBrowser: true })
//
// A refused request is answered 400 with OpenAI's error body {error: {message, type, param,
// code}} (the client's BadRequestError), before any token of a stream; an engine failure 500
// with `x-should-retry: false` (the client would otherwise retry it twice).

const JSON_TYPE = { 'content-type': 'application/json' };

/** The request's path, method and parsed body (`init.body`: a string, as OpenAI's client sends,
 * or bytes). */
async function readRequest(input, init) {
  const url = new URL(typeof input === 'string' ? input : input.url ?? String(input), 'http://kvscope.invalid/');
  const method = (init.method || input.method || 'GET').toUpperCase();
  let body = init.body ?? null;
  if (body !== null && typeof body !== 'string') body = new TextDecoder().decode(body);
  return { path: url.pathname.replace(/\/+$/, ''), method, body };
}

/** OpenAI's error body for `e`, and its status. */
function errorResponse(e, status = null) {
  const refused = ['TypeError', 'RangeError', 'SyntaxError', 'InvalidInput', 'ContextFull', 'AbortError'].includes(e?.name);
  const code = status ?? (refused ? 400 : 500);
  const error = { message: String(e?.message ?? e), type: code < 500 ? 'invalid_request_error' : 'server_error', param: e?.param ?? null, code: e?.name ?? null };
  return new Response(JSON.stringify({ error }), { status: code, headers: { ...JSON_TYPE, 'x-should-retry': 'false' } });
}

const sse = (v) => new TextEncoder().encode(`data: ${typeof v === 'string' ? v : JSON.stringify(v)}\n\n`);

/** A stream's chunks as server-sent events, ending `data: [DONE]`; the first is read before the
 * reply so that a refused request is a 400, not an error inside a 200. Cancelling the body
 * stops the engine. */
async function eventStream(chunks) {
  let pending = await chunks.next();
  const body = new ReadableStream({
    async pull(controller) {
      try {
        const r = pending ?? (await chunks.next());
        pending = null;
        if (r.done) {
          controller.enqueue(sse('[DONE]'));
          controller.close();
        } else {
          controller.enqueue(sse(r.value));
        }
      } catch (e) {
        // OpenAI's client throws an APIError for an event with an `error` key.
        controller.enqueue(sse({ error: { message: String(e?.message ?? e), type: 'server_error', param: e?.param ?? null, code: e?.name ?? null } }));
        controller.close();
      }
    },
    cancel: () => chunks.return(),
  });
  return new Response(body, { headers: { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' } });
}

/** `fetch(input, init)` for `engine` (kvscope.js's Engine). */
export function makeFetch(engine) {
  const routes = {
    'POST /chat/completions': (req) => engine.chat.completions.create(req),
    'POST /completions': (req) => engine.completions.create(req),
  };
  return async function fetch(input, init = {}) {
    const { path, method, body } = await readRequest(input, init);
    if (method === 'GET' && path.endsWith('/models')) {
      const data = [{ id: engine.state().name, object: 'model', created: 0, owned_by: 'kvscope' }];
      return new Response(JSON.stringify({ object: 'list', data }), { headers: JSON_TYPE });
    }
    const route = Object.keys(routes).find((r) => r.startsWith(`${method} `) && path.endsWith(r.slice(method.length + 1)));
    if (!route) return errorResponse(new Error(`kvscope serves POST …/v1/chat/completions, POST …/v1/completions and GET …/v1/models, not ${method} ${path}`), 404);
    try {
      const req = JSON.parse(body ?? 'null');
      if (req && typeof req === 'object' && init.signal) req.signal = init.signal;
      const answer = await routes[route](req);
      return req.stream ? await eventStream(answer) : new Response(JSON.stringify(answer), { headers: JSON_TYPE });
    } catch (e) {
      return errorResponse(e);
    }
  };
}
