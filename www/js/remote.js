// The page's end of the engine worker (worker.js): the WebEngine operations as promises, each
// token of a run as a callback, and the engine's state as a snapshot that arrives with every
// reply (so `state()` needs no round trip).

/** An error from the worker, with its kind (`DeviceLost`, `NoAdapter`, `Busy`, …) as `name`. */
function revive({ name, message }) {
  const e = new Error(message);
  e.name = name;
  return e;
}

/** The worker and its pending calls. `url` is worker.js's address. */
export class EngineWorker {
  constructor(url = new URL('./worker.js', import.meta.url)) {
    this.worker = new Worker(url, { type: 'module', name: 'kvscope engine' });
    this.pending = new Map();
    this.nextId = 1;
    this.worker.onmessage = ({ data }) => {
      const call = this.pending.get(data.id);
      if (!call) return;
      if ('event' in data) {
        call.onEvent(data.event);
        return;
      }
      this.pending.delete(data.id);
      if (data.error) call.reject(revive(data.error));
      else call.resolve(data);
    };
    // A worker that fails to start (a missing file, a CSP refusal) fails every pending call.
    this.worker.onerror = (ev) => {
      ev.preventDefault();
      const e = new Error(`the engine worker failed: ${ev.message || 'it could not start'}`);
      for (const call of this.pending.values()) call.reject(e);
      this.pending.clear();
      this.failed = e;
    };
  }

  /** Runs `op` in the worker; resolves to {value, state}. `onEvent` gets each streamed event. */
  call(op, args = {}, { handle, transfer = [], onEvent = () => {} } = {}) {
    if (this.failed) return Promise.reject(this.failed);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, onEvent });
      this.worker.postMessage({ id, op, handle, args }, transfer);
    });
  }

  /** The flaws and the backend the worker chooses: `requested` ('gpu', 'cpu', …) or by the
   * adapter it finds. */
  async hello(requested = null) {
    return (await this.call('hello', { backend: requested })).value;
  }

  /** The header facts of a model (`inspectModel` of the wasm module), from a copy of `bytes`. */
  async inspectModel(bytes, context, options) {
    return (await this.call('inspectModel', { bytes, context, options })).value;
  }

  async adapterInfo() {
    return (await this.call('adapterInfo')).value;
  }

  async wasmMemoryBytes() {
    return (await this.call('wasmMemoryBytes')).value;
  }

  /** Loads a model from `bytes` (a Uint8Array whose buffer moves to the worker: it is empty here
   * afterwards). `onInfo(info)` gets the header's facts before the weights load. */
  async load(bytes, context, options, onInfo = () => {}) {
    const whole = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength ? bytes : bytes.slice();
    const r = await this.call('load', { bytes: whole, context, options }, { transfer: [whole.buffer], onEvent: (ev) => onInfo(ev.info) });
    return new RemoteEngine(this, r.value.handle, r.state, r.value.wasmMemoryBytes);
  }

  terminate() {
    this.worker.terminate();
  }
}

/** One loaded engine in the worker: WebEngine's operations, async. */
export class RemoteEngine {
  constructor(worker, handle, state, wasmMemoryBytes) {
    this.worker = worker;
    this.handle = handle;
    this.snapshot = state;
    /** Bytes of wasm memory right after the load (the peak so far). */
    this.loadedWasmBytes = wasmMemoryBytes;
  }

  async call(op, args, onEvent) {
    const r = await this.worker.call(op, args, { handle: this.handle, onEvent });
    if (r.state) this.snapshot = r.state;
    return r.value;
  }

  /** The state after the last call that ended (backend, cache fill, geometry). */
  state() {
    return this.snapshot;
  }

  /** A run that streams tokens: `onToken(ev)` per token; returning false stops it. */
  run(op, args, onToken) {
    return this.call(op, args, (ev) => {
      if (onToken(ev) === false) this.stop();
    });
  }

  complete(prompt, options, onToken) {
    return this.run('complete', { prompt, options }, onToken);
  }

  chat(messages, options, onToken) {
    return this.run('chat', { messages, options }, onToken);
  }

  step(options, onToken) {
    return this.run('step', { options }, onToken);
  }

  /** Ends the running generation after the current step or prefill chunk. */
  stop() {
    this.worker.worker.postMessage({ op: 'stop', handle: this.handle });
  }

  tokenize(text) {
    return this.call('tokenize', { text });
  }

  peek(k) {
    return this.call('peek', { k });
  }

  tokenText(id) {
    return this.call('tokenText', { id });
  }

  reset() {
    return this.call('reset');
  }

  loseDevice() {
    return this.call('loseDevice');
  }

  bench(promptTokens, genTokens, gpuArgmax, contexts, profile = false) {
    return this.call('bench', { promptTokens, genTokens, gpuArgmax, contexts: Array.from(contexts), profile });
  }

  /** Frees the engine's memory in the worker; later calls fail. */
  free() {
    return this.call('free');
  }
}
