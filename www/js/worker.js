// The engine's thread: a module worker that owns the wasm module and every WebEngine, so that
// loading, prefill and decoding never block the page. remote.js is the other end.
//
// Messages in:  {id, op, handle?, args}  — op is a method of `ops` below; 'stop' gets no reply.
// Messages out: {id, value, state?}      — the result, with the engine's state after the call;
//               {id, error: {name, message}}  — the error's kind survives as `name`;
//               {id, event}              — a token event of a running complete/chat/step, or the
//                                          model info of a running load.
import init, * as wasm from '../kvscope.js';

const started = init({ module_or_path: new URL('../kvscope_bg.wasm', import.meta.url) });
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

/** Each op: (args, engine handle, send an event) → value (or a promise of it). */
const ops = {
  hello: async ({ backend }) => ({ flaws: wasm.flaws(), choice: await chooseBackend(backend) }),
  inspectModel: ({ bytes, context, options }) => wasm.inspectModel(bytes, context, options),
  async load({ bytes, context, options }, _h, send) {
    send({ info: wasm.inspectModel(bytes, context, options) });
    const e = await wasm.WebEngine.load(bytes, context, options);
    const handle = nextHandle++;
    engines.set(handle, e);
    return { handle, wasmMemoryBytes: wasm.wasmMemoryBytes() };
  },
  adapterInfo: () => wasm.adapterInfo(),
  wasmMemoryBytes: () => wasm.wasmMemoryBytes(),
  state: (_a, h) => engine(h).state(),
  tokenize: ({ text }, h) => Array.from(engine(h).tokenize(text)),
  peek: ({ k }, h) => engine(h).peek(k),
  tokenText: ({ id }, h) => engine(h).tokenText(id),
  reset: (_a, h) => engine(h).reset(),
  loseDevice: (_a, h) => engine(h).loseDevice(),
  free(_a, h) {
    const e = engines.get(h);
    engines.delete(h);
    if (e) e.free();
  },
  complete: ({ prompt, options }, h, send) => engine(h).complete(prompt, options, (event) => send(event)),
  chat: ({ messages, options }, h, send) => engine(h).chat(messages, options, (event) => send(event)),
  step: ({ options }, h, send) => engine(h).step(options, (event) => send(event)),
  bench: ({ promptTokens, genTokens, gpuArgmax, contexts, profile }, h) =>
    engine(h).bench(promptTokens, genTokens, gpuArgmax, new Uint32Array(contexts), profile),
};

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
  try {
    await started;
    if (!Object.hasOwn(ops, op)) throw new Error(`unknown engine operation ${op}`);
    const value = await ops[op](args || {}, handle, (event) => {
      self.postMessage({ id, event });
      return true;
    });
    const h = op === 'load' ? value.handle : handle;
    self.postMessage({ id, value, state: op === 'free' ? undefined : snapshot(h) });
  } catch (e) {
    self.postMessage({ id, error: { name: (e && e.name) || 'Error', message: String((e && e.message) || e) } });
  }
};
