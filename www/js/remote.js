// The page's end of the engine worker (worker.js): every operation of ops.js as a promise — the
// worker's own on `EngineWorker`, a loaded engine's on `RemoteEngine` — each taking one object of
// arguments; a streaming operation's token events go to a callback. The engine's state arrives
// with every reply, so `state()` needs no round trip.
import { OPS } from './ops.js';

/** An error from the worker, with its kind (`DeviceLost`, `NoAdapter`, `Busy`, …) as `name`
 * and the request field at fault (if any) as `param`. */
function revive({ name, message, param }) {
  const e = new Error(message);
  e.name = name;
  if (param) e.param = param;
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

  /** Runs `op` in the worker; resolves to {value, state}. `onEvent` gets each streamed event;
   * `signal` aborting cancels a worker op (it rejects with the worker's AbortError). */
  call(op, args = {}, { handle, transfer = [], onEvent = () => {}, signal } = {}) {
    if (this.failed) return Promise.reject(this.failed);
    if (signal?.aborted) return Promise.reject(new DOMException('cancelled', 'AbortError'));
    const id = this.nextId++;
    const cancel = () => this.worker.postMessage({ op: 'cancel', target: id });
    signal?.addEventListener('abort', cancel);
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, onEvent });
      this.worker.postMessage({ id, op, handle, args }, transfer);
    }).finally(() => signal?.removeEventListener('abort', cancel));
  }

  /** Loads a model: {bytes (a Uint8Array whose buffer moves to the worker: it is empty here
   * afterwards; a Blob such as a picked File, which the worker reads slice by slice; or {parts,
   * name}: a split set's files in order, named by the first), context, options}. `onInfo(facts)`
   * gets the header's facts before the weights load, `onProgress({phase: 'upload', got, total})`
   * the bytes of the file read into the backend so far. Resolves to a RemoteEngine. */
  async load({ bytes, context, options }, onInfo = () => {}, onProgress = () => {}) {
    const array = bytes instanceof Uint8Array;
    const whole = !array || (bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength) ? bytes : bytes.slice();
    const transfer = array ? [whole.buffer] : [];
    const onEvent = (ev) => (ev.info ? onInfo(ev.info) : ev.progress && onProgress(ev.progress));
    const r = await this.call('load', { bytes: whole, context, options }, { transfer, onEvent });
    return new RemoteEngine(this, r.value.handle, r.state, r.value.wasmMemoryBytes);
  }

  terminate() {
    this.worker.terminate();
  }
}

/** One loaded engine in the worker. */
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

  /** The state after the last call that ended (backend, cache fill, the model's facts). */
  state() {
    return this.snapshot;
  }

  /** Ends the running generation after the current step or prefill chunk. */
  stop() {
    this.worker.worker.postMessage({ op: 'stop', handle: this.handle });
  }
}

// Every operation of OPS as a method: the worker's own on EngineWorker (but `load`, above), an
// engine's on RemoteEngine; a stream's `onToken(ev)` returning false stops it.
for (const [op, kind] of Object.entries(OPS)) {
  if (kind === 'worker' && op !== 'load') {
    // `onEvent` gets the op's events (a store's progress); `signal` cancels it in the worker.
    EngineWorker.prototype[op] = async function (args, { onEvent, signal } = {}) {
      return (await this.call(op, args, { onEvent, signal })).value;
    };
  } else if (kind === 'engine') {
    RemoteEngine.prototype[op] = function (args) {
      return this.call(op, args);
    };
  } else if (kind === 'stream') {
    RemoteEngine.prototype[op] = function (args, onToken) {
      return this.call(op, args, (ev) => {
        if (onToken(ev) === false) this.stop();
      });
    };
  }
}
