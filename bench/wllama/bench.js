// The wllama side of scripts/bench-wllama.mjs. One page holds one wllama instance (one worker,
// one wasm heap); the script opens a fresh page per configuration and drives it through
// window.wllamaBench. Every request goes to this page's own origin: the library from /wllama/,
// its wasm from /wllama/wasm/, the GGUF from /model.gguf.
import { Wllama } from '/wllama/index.js';

let wllama = null;
const logLines = [];

/** wllama forwards llama.cpp's log (level INFO and up) through these. */
const logger = Object.fromEntries(['debug', 'log', 'warn', 'error'].map((level) =>
  [level, (...args) => logLines.push(`${level}: ${args.map((a) => (typeof a === 'string' ? a : JSON.stringify(a))).join(' ')}`)]));

/** The lines of the log that say which device llama.cpp used and why. */
const DEVICE_LINE = /webgpu|wgpu|gpu|offload|device|backend|f16|thread|cpu|error|fail|abort|unsupported/i;

/** What the page's own WebGPU adapter offers (llama.cpp's WebGPU backend asks for shader-f16). */
async function adapterInfo() {
  if (!navigator.gpu) return { webgpu: false };
  const adapter = await navigator.gpu.requestAdapter();
  if (!adapter) return { webgpu: true, adapter: null };
  const info = adapter.info || {};
  return {
    webgpu: true,
    adapter: [info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(' '),
    fallback: !!info.isFallbackAdapter,
    shader_f16: adapter.features.has('shader-f16'),
    features: [...adapter.features].sort(),
  };
}

/** Loads the model with `threads` llama.cpp threads, on the CPU (`gpu` false: no layer
 * offloaded, and wllama hides navigator.gpu from its worker) or with every layer offered to
 * WebGPU (wllama's default). `debugLog` lowers llama.cpp's log level from INFO to DEBUG (where
 * ggml's WebGPU backend says what it found). A failed load is a result, not an exception. */
async function load({ threads, gpu, nCtx, debugLog }) {
  const t0 = performance.now();
  const model = await (await fetch('/model.gguf')).blob();
  const fetchMs = performance.now() - t0;
  wllama = new Wllama({ default: '/wllama/wasm/wllama.wasm' }, { logger });
  const params = { n_threads: threads, n_ctx: nCtx, n_parallel: 1, log_level: debugLog ? 1 : 2 };
  if (!gpu) params.n_gpu_layers = 0;
  const t1 = performance.now();
  let error = null;
  try {
    await wllama.loadModel([model], params);
  } catch (e) {
    error = `${e.name || 'Error'}${e.type ? ` (${e.type})` : ''}: ${e.message || e}`;
  }
  const info = wllama.isModelLoaded() ? wllama.getLoadedContextInfo() : null;
  const offload = logLines.map((l) => /offloaded (\d+)\/(\d+) layers to GPU/.exec(l)).find(Boolean);
  const modelBuffers = logLines.map((l) => /load_tensors: +(.+?) model buffer size = +([\d.]+) MiB/.exec(l)).filter(Boolean);
  return {
    loaded: !error && wllama.isModelLoaded(),
    error,
    model_bytes: model.size,
    fetch_ms: fetchMs,
    load_ms: performance.now() - t1,
    cross_origin_isolated: self.crossOriginIsolated,
    hardware_concurrency: navigator.hardwareConcurrency,
    libllama: Wllama.getLibllamaVersion(),
    multithread: info ? wllama.isMultithread() : null,
    threads_used: info ? wllama.getNumThreads() : null,
    layers_offloaded: offload ? { offloaded: Number(offload[1]), of: Number(offload[2]) } : null,
    model_buffers_mib: Object.fromEntries(modelBuffers.map((m) => [m[1], Number(m[2])])),
    n_ctx: info?.n_ctx ?? null,
    n_batch: info?.n_batch ?? null,
    n_ubatch: info?.n_ubatch ?? null,
    add_bos_token: info?.add_bos_token ?? null,
    general_name: info?.metadata?.['general.name'] ?? null,
    page_adapter: await adapterInfo(),
    debug_info: gpu && info ? await wllama._getDebugInfo().catch((e) => `unavailable: ${e.message || e}`) : null,
    log_device_lines: logLines.filter((l) => DEVICE_LINE.test(l)).slice(0, 80),
  };
}

/** Greedy, no prompt reuse between requests (llama-server keeps a slot's prompt cached unless
 * told otherwise, which would turn the second prefill into one token). */
const GREEDY = { temperature: 0, seed: 0, cache_prompt: false };

/** Tokens llama.cpp counts for `prompt` (BOS included when the model adds one). */
async function countTokens(prompt) {
  const r = await wllama.createCompletion({ prompt, max_tokens: 1, ...GREEDY });
  return r.usage.prompt_tokens;
}

/** A prompt of exactly `target` tokens as wllama tokenizes it: `sentence` repeated, cut at a
 * word (binary search on the number of words; token counts grow with it), then, if one word
 * spans the boundary, at a character of that word. wllama 3 has no tokenize call, so each
 * probe is a one-token completion whose usage reports the prompt's length. */
async function promptOfTokens({ sentence, target }) {
  const words = [];
  while (words.length < target * 2) words.push(...sentence.trim().split(/\s+/));
  const probes = [];
  const count = async (text) => {
    const n = await countTokens(text);
    probes.push({ chars: text.length, tokens: n });
    return n;
  };
  let lo = 1;
  let hi = words.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if ((await count(words.slice(0, mid).join(' '))) >= target) hi = mid;
    else lo = mid + 1;
  }
  let text = words.slice(0, lo).join(' ');
  let tokens = await count(text);
  if (tokens !== target) {
    const head = words.slice(0, lo - 1).join(' ');
    const word = words[lo - 1];
    for (let c = 1; c < word.length; c++) {
      const t = `${head} ${word.slice(0, c)}`;
      const n = await count(t);
      if (n === target) {
        text = t;
        tokens = n;
        break;
      }
    }
  }
  return { text, tokens, probes };
}

/** One short greedy generation, so that the measured run finds the code paths compiled and the
 * buffers allocated. */
async function warmup() {
  const t0 = performance.now();
  const r = await wllama.createCompletion({ prompt: 'The capital of France is', max_tokens: 8, ...GREEDY });
  return { ms: performance.now() - t0, text: r.choices[0].text };
}

/** One measured run: prefill `prompt`, then `genTokens` decode steps. llama.cpp's own timings
 * (llama-server's slot counters, returned with the last chunk) give the rates: prompt_ms runs
 * from the start of prompt processing to the first sampled token; predicted_ms from that token
 * to the last, so it covers predicted_n − 1 forward passes. Asking for genTokens + 1 tokens makes
 * it cover genTokens passes, as kvscope's bench times genTokens steps after the first token. The
 * page's own clock gives the time to first token as an app sees it (worker messages included). */
async function measure({ prompt, genTokens }) {
  const arrivals = [];
  let text = '';
  let last = null;
  const t0 = performance.now();
  await wllama.createCompletion({
    prompt, max_tokens: genTokens + 1, ignore_eos: true, ...GREEDY, stream: true,
    onData: (chunk) => {
      const piece = chunk.choices?.[0]?.text ?? '';
      if (piece) {
        arrivals.push(performance.now() - t0);
        text += piece;
      }
      if (chunk.timings) last = chunk;
    },
  });
  const wallMs = performance.now() - t0;
  const t = last?.timings;
  if (!t) throw new Error('wllama returned no timings with the last chunk');
  const steps = t.predicted_n - 1;
  return {
    prompt_tokens: t.prompt_n,
    cached_prompt_tokens: t.cache_n,
    prompt_ms: t.prompt_ms,
    prefill_tokens_per_s: t.prompt_n / (t.prompt_ms / 1e3),
    generated_tokens: t.predicted_n,
    decode_steps: steps,
    decode_ms: t.predicted_ms,
    decode_tokens_per_s: steps / (t.predicted_ms / 1e3),
    llama_predicted_per_second: t.predicted_per_second,
    ttft_ms: arrivals[0] ?? null,
    decode_tokens_per_s_page_clock: arrivals.length > 1 ? (arrivals.length - 1) / ((arrivals.at(-1) - arrivals[0]) / 1e3) : null,
    wall_ms: wallMs,
    usage: last.usage ?? null,
    text,
  };
}

async function exit() {
  await wllama?.exit();
  wllama = null;
}

window.wllamaBench = { load, promptOfTokens, warmup, measure, exit, log: () => logLines.slice() };
document.getElementById('state').textContent = 'ready';
