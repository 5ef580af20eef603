// kvscope as a library, in the shape of OpenAI's JavaScript client: one module import gives
// `createEngine`, which starts its own engine worker, loads a GGUF model and answers
// `engine.chat.completions.create(…)` and `engine.completions.create(…)` with OpenAI's objects
// (streamed as an async iterator of chunks with `stream: true`), and `engine.fetch`, the same
// behind fetch's signature for OpenAI's own client (fetch.js). The README ("The JavaScript
// API") documents every field; openai.js holds the requests' fields and the answers' shapes.
import { EngineWorker } from './remote.js';
import { checkRequest, checkPolicy, requestOptions, requestError, chatMessages, chatShape, completionShape, randomHex } from './openai.js';
import { makeFetch } from './fetch.js';
import { modelStore } from './model-store.js';

/** `model` (a URL string or URL, a File or Blob, an ArrayBuffer or a Uint8Array; or an array of
 * those: a split model's parts in order) as the worker takes it: a Uint8Array of its own, a
 * Blob, or {parts, name} (the engine reads the parts as one model). A URL goes through the site's
 * model store where the browser has one (OPFS): the download streams into it, hashed as it
 * passes, and the engine reads the stored file slice by slice (a later load checks the stored
 * copy and downloads nothing); with `store: false`, or where there is no store, it is fetched
 * into memory. */
async function modelBytes(model, signal, worker, store = true) {
  if (Array.isArray(model)) {
    if (!model.length) throw new TypeError('createEngine: `model` is an empty array; give a split model\'s parts in order');
    const parts = [];
    for (const m of model) parts.push(await modelBytes(m, signal, worker, store));
    const first = model[0];
    const name = first instanceof Blob ? first.name || '' : typeof first === 'string' || first instanceof URL ? decodeURIComponent(new URL(first, globalThis.location ? location.href : import.meta.url).pathname.split('/').pop()) : '';
    return { parts, name };
  }
  if (typeof model === 'string' || model instanceof URL) {
    const url = new URL(model, globalThis.location ? location.href : import.meta.url);
    if (store && modelStore.available) {
      const key = url.href;
      const name = decodeURIComponent(url.pathname.split('/').pop() || 'model.gguf');
      const hit = await modelStore.get(key, { signal });
      if (hit) return hit;
      await modelStore.put({ key, name, url: key }, worker, { signal });
      return modelStore.file(key, name);
    }
    const res = await fetch(url, { signal });
    if (!res.ok) throw new Error(`${url}: HTTP ${res.status} ${res.statusText}`);
    return new Uint8Array(await res.arrayBuffer());
  }
  // A File or Blob goes to the worker as it is, which reads it slice by slice.
  if (model instanceof Blob) return model;
  if (model instanceof ArrayBuffer) return new Uint8Array(model.slice(0));
  if (ArrayBuffer.isView(model)) return new Uint8Array(model.buffer.slice(model.byteOffset, model.byteOffset + model.byteLength));
  throw new TypeError('createEngine: `model` must be a URL, a File or Blob, an ArrayBuffer or a Uint8Array of a GGUF file, or an array of them (a split model\'s parts)');
}

function abortError() {
  return new DOMException('the request was aborted', 'AbortError');
}

/** A run as an async iterator: `start(onEvent)` starts the engine and resolves to its summary;
 * `shape.event(ev)` (a chunk or null) and `shape.last(summary)` make what is yielded. Leaving the
 * loop early (`break`, `return`) or `signal` stops the engine. */
function stream(engine, signal, start, shape) {
  const queue = [];
  let wake = null;
  let finished = false;
  let failure = null;
  const push = (item) => {
    queue.push(item);
    if (wake) wake();
  };
  const onAbort = () => engine.stop();
  signal?.addEventListener('abort', onAbort);
  const run = start((ev) => {
    const chunk = shape.event(ev);
    if (chunk) push(chunk);
  }).then(
    (summary) => shape.last(summary).forEach(push),
    (e) => { failure = requestError(e); },
  ).finally(() => {
    finished = true;
    signal?.removeEventListener('abort', onAbort);
    if (wake) wake();
  });
  return {
    async next() {
      for (;;) {
        if (signal?.aborted) {
          await run;
          throw abortError();
        }
        if (queue.length) return { value: queue.shift(), done: false };
        if (failure) throw failure;
        if (finished) return { value: undefined, done: true };
        await new Promise((resolve) => { wake = resolve; });
        wake = null;
      }
    },
    async return() {
      engine.stop();
      await run;
      return { value: undefined, done: true };
    },
    [Symbol.asyncIterator]() {
      return this;
    },
  };
}

/** A loaded model and its worker, with OpenAI's `chat.completions` and `completions`. */
class Engine {
  constructor(worker, remote, choice, model) {
    /** What the model was loaded from (`createEngine`'s `model`): read again by `kvCompare`,
     * so that no copy of the file is kept. */
    this.model = model;
    this.worker = worker;
    this.remote = remote;
    /** {backend: 'gpu'|'cpu'|…, reason, adapter}: what the engine runs on, and why. */
    this.backend = choice;
    /** Requests run one at a time, in order. */
    this.queue = Promise.resolve();
    // A bad request rejects (it never throws synchronously).
    this.chat = { completions: { create: (req) => Promise.resolve().then(() => this.createChat(req)) } };
    this.completions = { create: (req) => Promise.resolve().then(() => this.createCompletion(req)) };
    /** `fetch(url, init)` answering OpenAI's HTTP API (`…/v1/chat/completions`,
     * `…/v1/completions`, `…/v1/models`), for OpenAI's own client (fetch.js). */
    this.fetch = makeFetch(this);
  }

  /** The model's name, cache fill, context and backend ("cpu" or "gpu: <adapter>"). */
  state() {
    return this.remote.state();
  }

  /** Stops the worker and frees everything. */
  async close() {
    await this.remote.free().catch(() => {});
    this.worker.terminate();
  }

  /** Runs `task` after the requests before it; its failure does not block the next. */
  exclusive(task) {
    const run = this.queue.then(task);
    this.queue = run.then(() => {}, () => {});
    return run;
  }

  /** A request: `call(onEvent)` runs the engine; `shape` makes the answer (openai.js): whole,
   * or streamed chunks. */
  request(req, call, shape) {
    const signal = req.signal;
    if (signal?.aborted) return Promise.reject(abortError());
    if (!req.stream) {
      return this.exclusive(async () => {
        const onAbort = () => this.remote.stop();
        signal?.addEventListener('abort', onAbort);
        try {
          const summary = await call((ev) => shape.event(ev)).catch((e) => { throw requestError(e); });
          if (signal?.aborted) throw abortError();
          return shape.whole(summary);
        } finally {
          signal?.removeEventListener('abort', onAbort);
        }
      });
    }
    // The iterator starts the engine when the requests before it are done.
    return Promise.resolve(stream(this.remote, signal, (onEvent) => this.exclusive(() => call(onEvent)), shape));
  }

  /** What every answer carries: an id, the time, the model's name. */
  base(prefix) {
    return { id: `${prefix}-${randomHex(12)}`, created: Math.floor(Date.now() / 1000), model: this.state().name };
  }

  /** The KV-cache lab, as `kvscope kv-compare`: `text` through the exact cache and each of
   * `policies` (names: 'f16', 'q8_0', 'window-64', …), every model loaded afresh in the worker
   * from this engine's model file, on this engine's backend unless `backend` names another
   * ('cpu' runs every policy). Resolves to {positions, free_steps, prefix_text, reference:
   * {ids, pieces, text}, policies: [{name, cache_bytes, bytes_per_position, positions_held,
   * top1_agreement, mean_kl, perplexity, first_divergence, free, agreement_by_position,
   * kl_by_position}], refused: [{name, error: {name, message}}] (the policies the backend does
   * not run), backend}. A bad policy name rejects with the engine's message; `signal` stops it. */
  kvCompare({ text, policies, backend = null, signal } = {}) {
    return Promise.resolve().then(() => {
      if (typeof text !== 'string') throw Object.assign(new TypeError('kvCompare: `text` must be a string'), { param: 'text' });
      if (!Array.isArray(policies) || policies.length === 0 || !policies.every((p) => typeof p === 'string')) {
        throw Object.assign(new TypeError('kvCompare: `policies` must be a non-empty array of policy names'), { param: 'policies' });
      }
      if (signal?.aborted) throw abortError();
      return this.exclusive(async () => {
        const onAbort = () => this.remote.stop();
        signal?.addEventListener('abort', onAbort);
        try {
          const options = { backend: backend ?? this.backend.backend };
          const bytes = await modelBytes(this.model, signal, this.worker, this.store);
          return await this.remote.kvCompare({ bytes, text, policies, options });
        } catch (e) {
          throw signal?.aborted ? abortError() : e;
        } finally {
          signal?.removeEventListener('abort', onAbort);
        }
      });
    });
  }

  createChat(req) {
    checkRequest(req, 'chat');
    checkPolicy(req, this.state().kv_policy);
    const messages = chatMessages(req.messages);
    const options = requestOptions(req, 'chat', this.state().context);
    // Only the fields given: the engine reads a key that is present but undefined as a value.
    const request = { messages };
    for (const k of ['tools', 'tool_choice', 'parallel_tool_calls']) if (req[k] != null) request[k] = req[k];
    const shape = chatShape(req, this.base('chatcmpl'));
    return this.request(req, (onEvent) => this.remote.chat({ request, options }, onEvent), shape);
  }

  createCompletion(req) {
    checkRequest(req, 'completion');
    checkPolicy(req, this.state().kv_policy);
    if (typeof req.prompt !== 'string') throw Object.assign(new TypeError('prompt must be a string'), { param: 'prompt' });
    const options = requestOptions(req, 'completion', this.state().context);
    const shape = completionShape(req, { ...this.base('cmpl'), object: 'text_completion' });
    return this.request(req, (onEvent) => this.remote.complete({ prompt: req.prompt, options }, onEvent), shape);
  }
}

/** Starts an engine worker and loads `model` (a URL, File, Blob, ArrayBuffer or Uint8Array of a
 * GGUF file) with `context` positions of KV cache (default: the engine's, 2048). `backend`: 'gpu' or 'cpu', or
 * absent to choose as the kvscope page does (WebGPU on a hardware adapter, else the CPU).
 * `kv_policy`: the cache policy ('f32' by default, 'f16', 'q8_0', 'q4_0', 'window-N',
 * 'sink-S-window-N', 'h2o-N'); a bad one, or one the backend does not run, rejects with the
 * engine's message. A URL's download is kept in the site's model store (OPFS) and checked on
 * the next load, unless `store` is false. */
export async function createEngine({ model, context = null, backend = null, kv_policy = null, store = true, signal } = {}) {
  if (model === undefined || model === null) throw new TypeError('createEngine: `model` is required');
  const worker = new EngineWorker(new URL('./worker.js', import.meta.url));
  try {
    const bytes = await modelBytes(model, signal, worker, store);
    const { choice, defaults } = await worker.hello({ backend });
    const options = { backend: choice.backend };
    if (kv_policy !== null) {
      if (typeof kv_policy !== 'string') throw Object.assign(new TypeError('createEngine: `kv_policy` must be a policy name such as "q8_0"'), { param: 'kv_policy' });
      options.kv_policy = kv_policy;
    }
    const remote = await worker.load({ bytes, context: context ?? defaults.context, options });
    const engine = new Engine(worker, remote, choice, model);
    engine.store = store;
    return engine;
  } catch (e) {
    worker.terminate();
    throw e;
  }
}
