// kvscope as a library, in the shape of OpenAI's JavaScript client: one module import gives
// `createEngine`, which starts its own engine worker, loads a GGUF model and answers
// `engine.chat.completions.create(…)` and `engine.completions.create(…)` with OpenAI's objects
// (streamed as an async iterator of chunks with `stream: true`). The README ("The JavaScript
// API") documents every field.
import { EngineWorker } from './remote.js';
import { engineOptions } from './options.js';

/** Reads `model` (a URL string or URL, a File or Blob, an ArrayBuffer or a Uint8Array) into a
 * Uint8Array of its own. */
async function modelBytes(model, signal) {
  if (typeof model === 'string' || model instanceof URL) {
    const url = new URL(model, globalThis.location ? location.href : import.meta.url);
    const res = await fetch(url, { signal });
    if (!res.ok) throw new Error(`${url}: HTTP ${res.status} ${res.statusText}`);
    return new Uint8Array(await res.arrayBuffer());
  }
  if (model instanceof Blob) return new Uint8Array(await model.arrayBuffer());
  if (model instanceof ArrayBuffer) return new Uint8Array(model.slice(0));
  if (ArrayBuffer.isView(model)) return new Uint8Array(model.buffer.slice(model.byteOffset, model.byteOffset + model.byteLength));
  throw new TypeError('createEngine: `model` must be a URL, a File or Blob, an ArrayBuffer or a Uint8Array of a GGUF file');
}

const FINISH = { eos: 'stop', stopped: 'stop', max_tokens: 'length', context_full: 'length' };

const randomId = (prefix) => `${prefix}-${Array.from(crypto.getRandomValues(new Uint8Array(12)), (b) => b.toString(16).padStart(2, '0')).join('')}`;

function abortError() {
  return new DOMException('the request was aborted', 'AbortError');
}

/** Engine options from an OpenAI request (`options.js` checks them). `temperature` 0 is greedy
 * (argmax); absent it is 1, as in OpenAI's API. `max_tokens` (or `max_completion_tokens`)
 * absent: until the end of text or a full context. */
function options(req, context) {
  const fields = { max_tokens: req.max_tokens ?? req.max_completion_tokens, temperature: req.temperature, top_p: req.top_p, seed: req.seed };
  const seed = crypto.getRandomValues(new Uint32Array(1))[0];
  return engineOptions(fields, { max_tokens: context, temperature: 1, top_p: 1, top_k: 0, report_top: 0, seed });
}

function checkMessages(messages) {
  if (!Array.isArray(messages) || messages.length === 0) throw new TypeError('messages must be a non-empty array of {role, content}');
  return messages.map((m, i) => {
    if (!m || typeof m.role !== 'string') throw new TypeError(`messages[${i}].role must be a string`);
    // OpenAI's content parts [{type: 'text', text}] are joined; other parts have no meaning here.
    const content = Array.isArray(m.content) ? m.content.map((p) => (p && p.type === 'text' ? p.text : '')).join('') : m.content;
    if (typeof content !== 'string') throw new TypeError(`messages[${i}].content must be a string or text parts`);
    return { role: m.role, content };
  });
}

/** A run as an async iterator: `start(onToken)` starts the engine and resolves to its summary;
 * `chunk(text)` and `last(summary)` shape what is yielded. Leaving the loop early (`break`,
 * `return`) or `signal` stops the engine. */
function stream(engine, signal, start, chunk, last) {
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
  const run = start((text) => {
    if (text) push(chunk(text));
  }).then(
    (summary) => last(summary).forEach(push),
    (e) => { failure = e; },
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
  constructor(worker, remote, choice) {
    this.worker = worker;
    this.remote = remote;
    /** {backend: 'gpu'|'cpu'|…, reason, adapter}: what the engine runs on, and why. */
    this.backend = choice;
    /** Requests run one at a time, in order. */
    this.queue = Promise.resolve();
    // A bad request rejects (it never throws synchronously).
    this.chat = { completions: { create: (req) => Promise.resolve().then(() => this.createChat(req)) } };
    this.completions = { create: (req) => Promise.resolve().then(() => this.createCompletion(req)) };
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

  /** A request: `call(onToken)` runs the engine; the answer is `whole(summary)` or, streamed,
   * chunks from `chunk(text)` and `last(summary)`. */
  request(req, call, { whole, chunk, last }) {
    const signal = req.signal;
    if (signal?.aborted) return Promise.reject(abortError());
    if (!req.stream) {
      return this.exclusive(async () => {
        const onAbort = () => this.remote.stop();
        signal?.addEventListener('abort', onAbort);
        try {
          const summary = await call(() => {});
          if (signal?.aborted) throw abortError();
          return whole(summary);
        } finally {
          signal?.removeEventListener('abort', onAbort);
        }
      });
    }
    // The iterator starts the engine when the requests before it are done.
    return Promise.resolve(stream(this.remote, signal, (onText) => this.exclusive(() => call((ev) => onText(ev.text))), chunk, last));
  }

  createChat(req) {
    const messages = checkMessages(req?.messages);
    const o = options(req, this.state().context);
    const id = randomId('chatcmpl');
    const created = Math.floor(Date.now() / 1000);
    const model = this.state().name;
    const usage = (s) => ({ prompt_tokens: s.prompt_tokens + s.reused_tokens, completion_tokens: s.generated_tokens, total_tokens: s.prompt_tokens + s.reused_tokens + s.generated_tokens });
    const base = { id, created, model };
    let first = true;
    return this.request(req, (onToken) => this.remote.chat({ messages, options: o }, onToken), {
      whole: (s) => ({
        ...base,
        object: 'chat.completion',
        choices: [{ index: 0, message: { role: 'assistant', content: s.text }, finish_reason: FINISH[s.stop], logprobs: null }],
        usage: usage(s),
      }),
      chunk: (text) => {
        const delta = first ? { role: 'assistant', content: text } : { content: text };
        first = false;
        return { ...base, object: 'chat.completion.chunk', choices: [{ index: 0, delta, finish_reason: null }] };
      },
      last: (s) => {
        const end = { ...base, object: 'chat.completion.chunk', choices: [{ index: 0, delta: first ? { role: 'assistant', content: '' } : {}, finish_reason: FINISH[s.stop] }] };
        if (!req.stream_options?.include_usage) return [end];
        return [end, { ...base, object: 'chat.completion.chunk', choices: [], usage: usage(s) }];
      },
    });
  }

  createCompletion(req) {
    if (typeof req?.prompt !== 'string') throw new TypeError('prompt must be a string');
    const o = options(req, this.state().context);
    const id = randomId('cmpl');
    const created = Math.floor(Date.now() / 1000);
    const model = this.state().name;
    const base = { id, object: 'text_completion', created, model };
    const usage = (s) => ({ prompt_tokens: s.prompt_tokens, completion_tokens: s.generated_tokens, total_tokens: s.prompt_tokens + s.generated_tokens });
    return this.request(req, (onToken) => this.remote.complete({ prompt: req.prompt, options: o }, onToken), {
      whole: (s) => ({ ...base, choices: [{ index: 0, text: s.text, finish_reason: FINISH[s.stop], logprobs: null }], usage: usage(s) }),
      chunk: (text) => ({ ...base, choices: [{ index: 0, text, finish_reason: null, logprobs: null }] }),
      last: (s) => [{ ...base, choices: [{ index: 0, text: '', finish_reason: FINISH[s.stop], logprobs: null }], ...(req.stream_options?.include_usage ? { usage: usage(s) } : {}) }],
    });
  }
}

/** Starts an engine worker and loads `model` (a URL, File, Blob, ArrayBuffer or Uint8Array of a
 * GGUF file) with `context` positions of KV cache (default: the engine's, 2048). `backend`: 'gpu' or 'cpu', or
 * absent to choose as the kvscope page does (WebGPU on a hardware adapter, else the CPU). */
export async function createEngine({ model, context = null, backend = null, signal } = {}) {
  if (model === undefined || model === null) throw new TypeError('createEngine: `model` is required');
  const worker = new EngineWorker(new URL('./worker.js', import.meta.url));
  try {
    const bytes = await modelBytes(model, signal);
    const { choice, defaults } = await worker.hello({ backend });
    const remote = await worker.load({ bytes, context: context ?? defaults.context, options: { backend: choice.backend } });
    return new Engine(worker, remote, choice);
  } catch (e) {
    worker.terminate();
    throw e;
  }
}
