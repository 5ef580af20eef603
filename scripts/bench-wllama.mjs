// wllama (llama.cpp compiled to wasm, npm @wllama/wllama) on the same GGUF in the same headless
// Chromium as the browser tests: prefill and decode speed and time to first token with greedy
// sampling, on the CPU with each thread count asked for, and with wllama's WebGPU path (every layer
// offered to WebGPU: on SwiftShader it runs there, falls back to the CPU or fails, and the report
// says which). Optionally kvscope's own page benchmark (?bench=1) in the same browser, and the
// ratios kvscope / wllama.
//   npm run bench:wllama -- [--prompt-tokens 64] [--gen-tokens 32] [--threads 1,2] [--no-webgpu]
//                           [--model www/models/FILE.gguf] [--no-isolation] [--n-ctx 1024]
//                           [--with-kvscope [--kvscope-backend cpu|gpu] [--dist DIR]]
//                           [--out bench/out/wllama.json]
// Pages are served with Cross-Origin-Opener-Policy / Cross-Origin-Embedder-Policy so that they are
// cross-origin isolated (SharedArrayBuffer, hence wllama's threads); --no-isolation drops them,
// and a thread count above 1 then falls back to one thread (reported as threads_used).
// Chromium may reach only 127.0.0.1: every other host name fails to resolve.
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';
import { serve, ROOT } from '../tests/browser/harness.mjs';

const { values } = parseArgs({
  options: {
    'prompt-tokens': { type: 'string', default: '64' },
    'gen-tokens': { type: 'string', default: '32' },
    threads: { type: 'string', default: '1,2' },
    model: { type: 'string', default: path.join('www', 'models', 'SmolLM2-135M-Instruct.Q4_1.gguf') },
    'n-ctx': { type: 'string', default: '1024' },
    'no-webgpu': { type: 'boolean', default: false },
    'no-isolation': { type: 'boolean', default: false },
    'with-kvscope': { type: 'boolean', default: false },
    'kvscope-backend': { type: 'string', default: 'cpu' },
    dist: { type: 'string', default: path.join(ROOT, 'dist') },
    out: { type: 'string', default: path.join('bench', 'out', 'wllama.json') },
  },
});

const promptTokens = Number(values['prompt-tokens']);
const genTokens = Number(values['gen-tokens']);
const threadCounts = values.threads.split(',').filter(Boolean).map(Number);
const nCtx = Number(values['n-ctx']);
const isolate = !values['no-isolation'];
const kvscopeBackend = values['kvscope-backend'];
for (const [name, n] of [['--prompt-tokens', promptTokens], ['--gen-tokens', genTokens], ['--n-ctx', nCtx], ...threadCounts.map((t) => ['--threads', t])]) {
  if (!Number.isInteger(n) || n < 1) fail(`${name} needs positive integers, got '${n}'`);
}
if (promptTokens + genTokens + 1 > nCtx) fail(`--n-ctx ${nCtx} holds fewer than ${promptTokens} + ${genTokens} + 1 positions`);
if (!['cpu', 'gpu'].includes(kvscopeBackend)) fail(`--kvscope-backend is cpu or gpu, not '${kvscopeBackend}'`);
const modelPath = path.resolve(ROOT, values.model);
if (!fs.existsSync(modelPath)) fail(`no model at ${modelPath} (scripts/fetch-model.sh fetches the default one)`);
const WLLAMA = path.join(ROOT, 'node_modules', '@wllama', 'wllama');
if (!fs.existsSync(path.join(WLLAMA, 'esm', 'index.js'))) fail('node_modules/@wllama/wllama is missing; run `npm install`');
const dist = path.resolve(ROOT, values.dist);
if (values['with-kvscope'] && !fs.existsSync(path.join(dist, 'index.html'))) {
  fail(`${dist} has no site; run \`trunk build --release\` or point --dist at a built one`);
}

/** The sentence kvscope's own bench repeats for its prompt (src/bench.rs), so both engines read
 * the same text. */
const SENTENCE = 'The KV cache stores the keys and values of every token seen so far, so that each new token ' +
  'attends over them without recomputing the prefix.';

function fail(message) {
  console.error(`bench-wllama: ${message}`);
  process.exit(1);
}

const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm', '.json': 'application/json' };

/** Serves the bench page at /, wllama's ES module build at /wllama/ and the model at /model.gguf,
 * on a free loopback port. */
function serveBench() {
  const mounts = [['/wllama/', path.join(WLLAMA, 'esm')], ['/', path.join(ROOT, 'bench', 'wllama')]];
  const requests = [];
  const server = http.createServer((req, res) => {
    const pathname = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    requests.push(pathname);
    let file = null;
    if (pathname === '/model.gguf') file = modelPath;
    else {
      const [prefix, dir] = mounts.find(([p]) => pathname.startsWith(p));
      file = path.join(dir, pathname.slice(prefix.length) || 'index.html');
      if (!file.startsWith(dir)) file = null;
    }
    if (!file || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      res.writeHead(404).end('not found');
      return;
    }
    const headers = { 'content-type': TYPES[path.extname(file)] || 'application/octet-stream', 'content-length': fs.statSync(file).size, 'cache-control': 'no-store' };
    if (isolate) Object.assign(headers, { 'cross-origin-opener-policy': 'same-origin', 'cross-origin-embedder-policy': 'require-corp' });
    res.writeHead(200, headers);
    fs.createReadStream(file).pipe(res);
  });
  const close = () => { server.close(); server.closeAllConnections(); };
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ url: `http://127.0.0.1:${server.address().port}/`, requests, close })));
}

/** Debian's Chromium with the harness's flags (WebGPU on SwiftShader), and a host resolver that
 * knows only the loopback address, so neither page can fetch a model or a wasm build from
 * elsewhere (wllama's compatibility mode would reach for a CDN). */
function launch() {
  const args = ['--no-sandbox', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-quic', '--no-first-run',
    '--enable-unsafe-webgpu', '--use-webgpu-adapter=swiftshader', '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1'];
  return chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args, headless: true });
}

/** Runs `fn(bench)` in a fresh page (a fresh wllama worker and wasm heap); page errors and
 * console errors are collected. */
async function inPage(browser, url, fn) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('crash', () => errors.push('the page crashed'));
  try {
    await page.goto(url);
    await page.waitForFunction(() => window.wllamaBench, null, { timeout: 60_000 });
    const call = (name, arg) => page.evaluate(([n, a]) => window.wllamaBench[n](a), [name, arg]);
    return await fn(call, errors);
  } finally {
    await context.close();
  }
}

/** One configuration: load, (on the first, find the prompt), warm up, measure. */
async function runConfig(browser, url, { label, threads, gpu }, prompt) {
  const t0 = Date.now();
  return inPage(browser, url, async (call, errors) => {
    const result = { label, threads_asked: threads, webgpu_asked: gpu };
    try {
      result.load = await call('load', { threads, gpu, nCtx, debugLog: gpu });
      if (!result.load.loaded) throw new Error(result.load.error);
      if (!prompt.text) Object.assign(prompt, await call('promptOfTokens', { sentence: SENTENCE, target: promptTokens }));
      result.warmup = await call('warmup');
      result.run = await call('measure', { prompt: prompt.text, genTokens });
      if (result.run.prompt_tokens !== promptTokens) result.warning = `llama.cpp prefilled ${result.run.prompt_tokens} tokens, not ${promptTokens}`;
    } catch (e) {
      result.error = String(e.message || e).split('\n')[0];
    }
    if (errors.length) result.page_errors = errors;
    result.log = await call('log').catch(() => []);
    result.seconds = (Date.now() - t0) / 1e3;
    return result;
  });
}

/** kvscope's page benchmark (?bench=1, as scripts/bench-browser.mjs runs it) in the same browser:
 * the same prompt length, decode steps timed after `promptTokens` cached positions (the context
 * wllama decodes at), the backend passed as &backend=. */
async function runKvscope(browser) {
  const site = await serve(dist);
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    const query = `?bench=1&prompt_tokens=${promptTokens}&gen_tokens=${genTokens}&contexts=${promptTokens}&gpu_argmax=0&backend=${kvscopeBackend}`;
    const t0 = Date.now();
    await page.goto(site.url + query);
    await page.waitForFunction(() => {
      const s = document.getElementById('bench')?.dataset.state;
      return s === 'done' || s === 'error' || !document.getElementById('error').hidden;
    }, null, { timeout: 3_600_000, polling: 1000 });
    const r = await page.evaluate(() => ({
      state: document.getElementById('bench').dataset.state,
      error: document.getElementById('error').hidden ? '' : document.getElementById('error-text').textContent,
      status: document.getElementById('status').textContent,
      report: window.kvscopeBench || null,
    }));
    // The page's status line ends 'on <backend>…' once the model is loaded; a page that predates
    // &backend= loads on its default and says so.
    const used = /\bon (gpu|cpu|reference)\b/i.exec(r.status)?.[1]?.toLowerCase() ?? null;
    const base = { dist, query, backend_asked: kvscopeBackend, backend_used: used, status: r.status, seconds: (Date.now() - t0) / 1e3 };
    if (used && used !== kvscopeBackend) base.warning = `asked for backend=${kvscopeBackend}, the page ran on ${used}`;
    if (r.state !== 'done') return { ...base, error: r.error || errors.join('; ') || `state ${r.state}` };
    return { ...base, report: r.report };
  } finally {
    await context.close();
    site.close();
  }
}

const f = (x, digits = 2) => (x == null || !Number.isFinite(x) ? '–' : x.toFixed(digits));

/** Which device wllama's WebGPU attempt ended on, read from llama.cpp's load log. */
function webgpuOutcome(r) {
  if (r.error && !r.load?.loaded) return `failed: ${r.error}`;
  if (r.error) return `loaded, then failed: ${r.error}`;
  const o = r.load.layers_offloaded;
  const buffers = Object.entries(r.load.model_buffers_mib).map(([dev, mib]) => `${dev} ${mib} MiB`).join(', ');
  if (o && o.offloaded > 0) return `ran on WebGPU (${o.offloaded}/${o.of} layers offloaded; model buffers: ${buffers})`;
  const why = r.load.log_device_lines.find((l) => /ggml_webgpu/i.test(l));
  const backends = r.load.log_device_lines.find((l) => /backend_ptrs\.size\(\)/.test(l));
  const a = r.load.page_adapter;
  const adapter = a.adapter ? `the page's adapter: ${a.adapter}, shader-f16 ${a.shader_f16 ? 'offered' : 'not offered'}` : 'the page has no adapter';
  if (buffers && !/webgpu/i.test(buffers)) {
    return `fell back to the CPU without an error (model buffers: ${buffers}; ` +
      `${why ? `llama.cpp: ${why.replace(/^\w+: /, '')}` : 'no ggml_webgpu message'}${backends ? `; ${backends.replace(/^\w+: /, '')}` : ''}; ${adapter})`;
  }
  return 'ran; the log does not say where (see log_device_lines)';
}

const configs = threadCounts.map((t) => ({ label: `cpu-${t}t`, threads: t, gpu: false }));
if (!values['no-webgpu']) configs.push({ label: 'webgpu', threads: 1, gpu: true });

const load1 = os.loadavg()[0];
const server = await serveBench();
const browser = await launch();
const browserVersion = browser.version();
const prompt = {};
const runs = [];
let kvscope = null;
try {
  for (const c of configs) {
    process.stderr.write(`bench-wllama: ${c.label}…\n`);
    runs.push(await runConfig(browser, server.url, c, prompt));
  }
  if (values['with-kvscope']) {
    process.stderr.write(`bench-wllama: kvscope page benchmark (backend=${kvscopeBackend})…\n`);
    kvscope = await runKvscope(browser).catch((e) => ({ error: String(e.message || e).split('\n')[0] }));
  }
} finally {
  await browser.close();
  server.close();
}
const outside = server.requests.filter((p) => !/^\/(wllama\/|model\.gguf$|$|index\.html$|bench\.js$)/.test(p));

const cpuRuns = runs.filter((r) => !r.webgpu_asked);
const gpuRun = runs.find((r) => r.webgpu_asked);
const report = {
  wllama: JSON.parse(fs.readFileSync(path.join(WLLAMA, 'package.json'), 'utf8')).version,
  libllama: runs.find((r) => r.load?.libllama)?.load.libllama ?? null,
  browser: `Chromium ${browserVersion}`,
  model: path.relative(ROOT, modelPath),
  prompt_tokens: promptTokens,
  gen_tokens: genTokens,
  sampling: 'greedy (temperature 0), end of sequence ignored, no prompt cache',
  prompt: prompt.text ?? null,
  prompt_probes: prompt.probes ?? null,
  isolation_headers: isolate,
  host: { cpus: os.cpus().length, loadavg_1min_before: load1, loadavg_1min_after: os.loadavg()[0] },
  unexpected_requests: outside,
  runs,
  webgpu_outcome: gpuRun ? webgpuOutcome(gpuRun) : null,
  kvscope,
};
if (kvscope?.report) {
  const k = kvscope.report;
  const kDecode = k.decode.at(-1).tokens_per_s;
  report.ratios = cpuRuns.filter((r) => r.run).map((r) => ({
    wllama: r.label,
    threads_used: r.load.threads_used,
    prefill_kvscope_over_wllama: k.prefill_tokens_per_s / r.run.prefill_tokens_per_s,
    decode_kvscope_over_wllama: kDecode / r.run.decode_tokens_per_s,
    ttft_kvscope_over_wllama: k.ttft_ms / r.run.ttft_ms,
  }));
}
// llama.cpp's full log of each run goes beside the report; the report keeps the lines about devices.
const out = path.resolve(ROOT, values.out);
fs.mkdirSync(path.dirname(out), { recursive: true });
for (const r of runs) {
  const logFile = out.replace(/\.json$/, '') + `.${r.label}.log`;
  fs.writeFileSync(logFile, r.log.join('\n') + '\n');
  r.log = path.relative(ROOT, logFile);
}
fs.writeFileSync(out, JSON.stringify(report, null, 2) + '\n');

console.log(`wllama ${report.wllama} (llama.cpp ${report.libllama}) in ${report.browser}, ${report.model}`);
console.log(`prompt ${promptTokens} tokens, ${genTokens} decode steps, greedy; ${report.host.cpus} CPUs, load average ${f(load1)} → ${f(report.host.loadavg_1min_after)}`);
console.log(`cross-origin isolated: ${runs.map((r) => `${r.label} ${r.load?.cross_origin_isolated ?? '?'}`).join(', ')}`);
console.log('');
console.log('run       threads  prefill tok/s  decode tok/s  TTFT ms (page)  prompt ms (llama.cpp)');
for (const r of runs) {
  const threads = r.load?.threads_used ?? '–';
  if (r.run) {
    console.log(`${r.label.padEnd(10)}${String(threads).padStart(7)}  ${f(r.run.prefill_tokens_per_s).padStart(13)}  ${f(r.run.decode_tokens_per_s).padStart(12)}  ` +
      `${f(r.run.ttft_ms, 0).padStart(14)}  ${f(r.run.prompt_ms, 0).padStart(21)}${r.warning ? `  (${r.warning})` : ''}`);
  } else {
    console.log(`${r.label.padEnd(10)}${String(threads).padStart(7)}  failed: ${r.error}`);
  }
}
if (gpuRun) console.log(`\nwllama with WebGPU: ${report.webgpu_outcome}`);
const texts = new Set(runs.filter((r) => r.run).map((r) => r.run.text));
if (texts.size > 1) console.log('note: the greedy continuations differ between runs (see runs[].run.text)');
if (outside.length) console.log(`note: requests outside the bench page: ${outside.join(', ')}`);
if (kvscope) {
  console.log('');
  if (kvscope.error) console.log(`kvscope (${kvscope.query ?? `backend=${kvscopeBackend}`}): failed: ${kvscope.error}`);
  else {
    const k = kvscope.report;
    if (kvscope.warning) console.log(`note: ${kvscope.warning}`);
    console.log(`kvscope on ${k.adapter} (asked backend=${kvscopeBackend}, ran on ${kvscope.backend_used ?? '?'}): prefill ${f(k.prefill_tokens_per_s)} tok/s, ` +
      `decode ${f(k.decode.at(-1).tokens_per_s)} tok/s at context ${k.decode.at(-1).context}, TTFT ${f(k.ttft_ms, 0)} ms`);
    console.log('kvscope / wllama   prefill  decode  TTFT (lower is faster)');
    for (const q of report.ratios) {
      console.log(`${`${q.wllama} (${q.threads_used} thr)`.padEnd(18)} ${f(q.prefill_kvscope_over_wllama).padStart(7)}  ${f(q.decode_kvscope_over_wllama).padStart(6)}  ${f(q.ttft_kvscope_over_wllama).padStart(4)}`);
    }
  }
}
console.log(`\nwritten: ${values.out}`);
if (cpuRuns.some((r) => !r.run)) process.exitCode = 1;
