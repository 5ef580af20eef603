// The engine's thread: a module worker that owns the wasm module and every WebEngine, so that
// loading, prefill and decoding never block the page. remote.js is the other end; ops.js lists
// the operations both ends know.
//
// Messages in:  {id, op, handle?, args}  — op is one of OPS; {op: 'stop', handle} and
//               {op: 'cancel', target: id} (aborts a worker op's signal) get no reply.
// Messages out: {id, value, state?}      — the result, with the engine's state after the call;
//               {id, error: {name, message, param}}  — the error's kind survives as `name`,
//                                          the request field at fault as `param`;
//               {id, event}              — a token event of a running stream op, or the model's
//                                          facts during a load.
import init, * as wasm from '../kvscope.js';
import { OPS } from './ops.js';
import { storeModel } from './store-writer.js';

/** Optional WebGPU features the kernels use where the adapter has them. wgpu 30 does not ask
 * browsers for `subgroups`, so every device this worker requests asks for it here; the engine
 * then reads from the device whether it was granted. */
const WANTED_FEATURES = ['subgroups'];
const adapterProto = self.GPUAdapter && self.GPUAdapter.prototype;
if (adapterProto && !adapterProto.requestDevice.kvscope) {
  const requestDevice = adapterProto.requestDevice;
  adapterProto.requestDevice = function (desc = {}) {
    const features = new Set(desc.requiredFeatures || []);
    for (const f of WANTED_FEATURES) if (this.features.has(f)) features.add(f);
    return requestDevice.call(this, { ...desc, requiredFeatures: [...features] });
  };
  adapterProto.requestDevice.kvscope = true;
}

const started = init({ module_or_path: new URL('../kvscope_bg.wasm', import.meta.url) });
/** The AbortControllers of the running calls, by id (`cancel`). */
const running = new Map();
/** Loaded engines by handle (a page may hold the old one until the new one is ready). */
const engines = new Map();
let nextHandle = 1;

/** Software WebGPU adapters, by what `adapter.info` says of them. */
const SOFTWARE = /swiftshader|llvmpipe|lavapipe|softpipe|warp|basic render/i;

/** Which backend to load on, and why: {backend: 'gpu'|'cpu'|'reference', reason, adapter}.
 * reason: 'requested' (the page asked for one), 'hardware', 'software' (the only adapter is a
 * CPU-type one, slower here than the CPU backend), 'no-adapter', 'no-webgpu'. */
async function chooseBackend(requested) {
  const gpu = self.navigator.gpu;
  let adapter = null;
  if (gpu) {
    try {
      adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
    } catch (e) {
      console.warn('requestAdapter failed:', e);
    }
  }
  const info = adapter ? adapter.info || {} : null;
  const name = info ? [info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(' ') : '';
  if (requested) return { backend: requested, reason: 'requested', adapter: name, webgpu: !!gpu };
  if (!gpu) return { backend: 'cpu', reason: 'no-webgpu', adapter: '', webgpu: false };
  if (!adapter) return { backend: 'cpu', reason: 'no-adapter', adapter: '', webgpu: true };
  if (info.isFallbackAdapter || SOFTWARE.test(name)) return { backend: 'cpu', reason: 'software', adapter: name, webgpu: true };
  return { backend: 'gpu', reason: 'hardware', adapter: name, webgpu: true };
}

function engine(handle) {
  const e = engines.get(handle);
  if (!e) throw Object.assign(new Error('this engine was freed'), { name: 'InvalidInput' });
  return e;
}

/** Each op of OPS: (args, engine, send an event) → value (or a promise of it). */
const serve = {
  hello: async ({ backend }) => ({ flaws: wasm.flaws(), defaults: wasm.defaults(), choice: await chooseBackend(backend) }),
  inspectModel: ({ bytes, context, options }) => wasm.inspectModel(bytes, context, options),
  // The model store's writer (store-writer.js): progress events as {progress: {phase, got, total}}.
  storeModel: (args, _e, send, _h, signal) => storeModel(args, send, signal, wasm.Sha256),
  async load({ bytes, context, options }, _e, send) {
    const e = await wasm.WebEngine.load(bytes, context, options, (info) => send({ info }), (got, total) => send({ progress: { phase: 'upload', got, total } }));
    const handle = nextHandle++;
    engines.set(handle, e);
    return { handle, wasmMemoryBytes: wasm.wasmMemoryBytes() };
  },
  peek: ({ k }, e) => e.peek(k),
  reset: (_a, e) => e.reset(),
  bench: ({ promptTokens, genTokens, gpuArgmax, contexts, profile }, e) =>
    e.bench(promptTokens, genTokens, gpuArgmax, new Uint32Array(contexts), profile),
  loseDevice: (_a, e) => e.loseDevice(),
  free: (_a, e, _send, handle) => {
    engines.delete(handle);
    e.free();
  },
  // The model's bytes come with each comparison (the page reads them again from its store).
  kvCompare: ({ bytes, text, policies, options }, e) => e.kvCompare(bytes, text, policies, options),
  complete: ({ prompt, options }, e, send) => e.complete(prompt, options, send),
  chat: ({ request, options }, e, send) => e.chat(request, options, send),
  step: ({ options }, e, send) => e.step(options, send),
};

const missing = Object.keys(OPS).filter((op) => !(op in serve)).concat(Object.keys(serve).filter((op) => !(op in OPS)));
if (missing.length) throw new Error(`worker.js and ops.js disagree about ${missing.join(', ')}`);

/** The engine's state for the reply, or nothing while another call holds the engine. */
function snapshot(handle) {
  const e = engines.get(handle);
  if (!e) return undefined;
  try {
    return e.state();
  } catch {
    return undefined;
  }
}

self.onmessage = async ({ data }) => {
  const { id, op, handle, args } = data;
  if (op === 'stop') {
    const e = engines.get(handle);
    if (e) e.stop();
    return;
  }
  if (op === 'cancel') {
    running.get(data.target)?.abort();
    return;
  }
  const abort = new AbortController();
  running.set(id, abort);
  try {
    await started;
    if (!Object.hasOwn(OPS, op)) throw new Error(`unknown engine operation ${op}`);
    const send = (event) => {
      self.postMessage({ id, event });
      return true;
    };
    const value = await serve[op](args || {}, OPS[op] === 'worker' ? null : engine(handle), send, handle, abort.signal);
    const h = op === 'load' ? value.handle : handle;
    self.postMessage({ id, value, state: op === 'free' ? undefined : snapshot(h) });
  } catch (e) {
    self.postMessage({ id, error: { name: (e && e.name) || 'Error', message: String((e && e.message) || e), param: e && e.param } });
  } finally {
    running.delete(id);
  }
};
