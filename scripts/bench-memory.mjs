// The browser's memory while it loads a large model: the whole of Chromium (every process: the
// page, its worker, the GPU process, where SwiftShader keeps the GPU buffers) sampled every 200 ms
// as PSS, its peak above the idle browser, per source — the model's URL (downloaded into the
// page's store), the store again (offline) and a picked file — and each time the first greedy
// token against the CLI's.
//   npm run bench:memory -- [--backend gpu,cpu] [--sources url,store,file] [--out bench/out/memory.json]
// The models are synthetic (examples/big_model.rs, on the default model's vocabulary), written to
// target/bench/ once: on the GPU backend an 8B-class one (32 layers, d 4096, 8 KV heads, ffn
// 14336, Q4_0: 3.9 GiB); on the CPU backend, whose wasm32 memory holds 4 GiB, 8 of those layers
// (1.1 GiB). Targets: a peak of at most 1.25 × the file + 512 MiB on the GPU backend and 1.3 × the
// file + 512 MiB on the CPU backend. Needs the built site (`trunk build --release`) and the CLI
// (`cargo build --release`). Chromium runs with a profile on disk, so that its store is on disk.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';
import { serve, browserOptions, ROOT, DIST } from '../tests/browser/harness.mjs';

const { values } = parseArgs({
  options: {
    backend: { type: 'string', default: 'gpu,cpu' },
    sources: { type: 'string', default: 'url,store,file' },
    out: { type: 'string', default: path.join('bench', 'out', 'memory.json') },
  },
});
const MIB = 1 << 20;
const PROMPT = 'Hi';
const MODELS = {
  gpu: { file: 'synthetic-8b.gguf', args: [], limit: (n) => 1.25 * n + 512 * MIB, target: '1.25 × file + 512 MiB' },
  cpu: { file: 'synthetic-8b-8layers.gguf', args: ['--layers', '8'], limit: (n) => 1.3 * n + 512 * MIB, target: '1.3 × file + 512 MiB' },
};
for (const need of [path.join(DIST, 'index.html'), path.join(ROOT, 'target/release/kvscope')]) {
  if (!fs.existsSync(need)) {
    console.error(`bench-memory: ${need} is missing; run \`cargo build --release && trunk build --release\` first`);
    process.exit(1);
  }
}

/** The synthetic model for `backend`, written once. */
function model(backend) {
  const file = path.join(ROOT, 'target', 'bench', MODELS[backend].file);
  if (!fs.existsSync(file)) {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    console.log(`writing ${file}…`);
    execFileSync('cargo', ['run', '--release', '--example', 'big_model', '--', file, ...MODELS[backend].args], { cwd: ROOT, stdio: 'inherit' });
  }
  return file;
}

/** The CLI's first greedy token of PROMPT (the exact f32 CPU path), kept beside the model (a
 * minute of CPU for the 8B-class one) for as long as the model file and the CLI are unchanged. */
function cliFirstToken(file) {
  const cli = path.join(ROOT, 'target/release/kvscope');
  const stamp = `${fs.statSync(file).mtimeMs} ${fs.statSync(cli).mtimeMs} ${PROMPT}`;
  const kept = `${file}.first-token.json`;
  if (fs.existsSync(kept)) {
    const k = JSON.parse(fs.readFileSync(kept, 'utf8'));
    if (k.stamp === stamp) return k.token;
  }
  const token = cliRun(file);
  fs.writeFileSync(kept, JSON.stringify({ stamp, token }));
  return token;
}

function cliRun(file) {
  const out = execFileSync(path.join(ROOT, 'target/release/kvscope'), ['generate', '--model', file, '--prompt', PROMPT, '--max-tokens', '1', '--backend', 'cpu', '--json'], { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], maxBuffer: 1 << 26 });
  return JSON.parse(out.trim().split('\n').at(-1)).summary.text;
}

/** Every process below this one (Chromium and its children), by /proc's parent links. */
function descendants(root = process.pid) {
  const parent = new Map();
  for (const pid of fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      parent.set(Number(pid), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch { /* gone */ }
  }
  const out = [];
  const walk = (p) => {
    for (const [c, pp] of parent) if (pp === p) { out.push(c); walk(c); }
  };
  walk(root);
  return out;
}

/** The browser's memory now: {total, by} — the sum of every Chromium process's PSS in bytes, and
 * the sums by kind of process (browser, renderer, gpu-process, utility, …). */
function browserPss() {
  const by = {};
  let total = 0;
  for (const pid of descendants()) {
    try {
      const m = /^Pss:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
      if (!m) continue;
      const kind = (/--type=([a-z-]+)/.exec(fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8')) || [, 'browser'])[1];
      by[kind] = (by[kind] || 0) + Number(m[1]) * 1024;
      total += Number(m[1]) * 1024;
    } catch { /* gone */ }
  }
  return { total, by };
}

/** Samples the browser's memory every 200 ms until stop(); stop() resolves to the peak, with its
 * breakdown by kind of process at that moment. */
function sampler() {
  let peak = browserPss();
  const take = () => {
    const now = browserPss();
    if (now.total > peak.total) peak = now;
  };
  const timer = setInterval(take, 200);
  return { stop: () => { clearInterval(timer); take(); return peak; } };
}

const settle = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitReady(page) {
  await page.waitForFunction(() => /^Ready/.test(document.getElementById('status').textContent) || !document.getElementById('error').hidden, null, { timeout: 3_600_000, polling: 500 });
  const err = await page.evaluate(() => (document.getElementById('error').hidden ? '' : document.getElementById('error-text').textContent));
  if (err) throw new Error(err);
}

/** Generates one token of PROMPT in the page; its text. */
async function firstToken(page) {
  await page.fill('#prompt', PROMPT);
  await page.fill('#max-tokens', '1');
  await page.click('#generate');
  await page.waitForSelector('#output[data-done="true"]', { timeout: 3_600_000 });
  return page.textContent('#output');
}

/** One source: a fresh page on the idle browser, then `load(page)`; the peak above idle. */
async function measure(context, site, backend, source, load) {
  for (const p of context.pages()) await p.close();
  const page = await context.newPage();
  await settle(3000);
  const idle = browserPss().total;
  const s = sampler();
  const t0 = Date.now();
  await load(page);
  await waitReady(page);
  const info = await page.$eval('#model-info', (e) => ({ ...e.dataset }));
  const token = await firstToken(page);
  const { total: peak, by } = s.stop();
  return { backend, source, loadSource: info.loadSource, idle, peak, above: peak - idle, atPeak: by, wasmBytes: Number(info.wasmPeakBytes), seconds: (Date.now() - t0) / 1000, loadMs: Number(info.loadMs), token };
}

const results = [];
for (const backend of values.backend.split(',')) {
  const file = model(backend);
  const bytes = fs.statSync(file).size;
  const want = cliFirstToken(file);
  const site = await serve(DIST, '/', { files: { 'bench/model.gguf': file } });
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'kvscope-memory-'));
  const context = await chromium.launchPersistentContext(profile, browserOptions());
  const q = `?backend=${backend}&context=256`;
  try {
    const runs = [
      ['url', (page) => page.goto(`${site.url}${q}&model=bench/model.gguf`)],
      ['store', (page) => page.goto(`${site.url}${q}&model=bench/model.gguf`)],
      ['file', async (page) => {
        await page.goto(`${site.url}${q}&load=0`);
        await page.waitForFunction(() => /No model loaded/.test(document.getElementById('status').textContent), null, { timeout: 120_000 });
        await page.setInputFiles('#model-file', file);
      }],
    ];
    for (const [source, load] of runs.filter(([name]) => values.sources.split(',').includes(name))) {
      const r = await measure(context, site, backend, source, load);
      const row = { ...r, file: bytes, ratio: r.above / bytes, limit: MODELS[backend].limit(bytes), target: MODELS[backend].target, cliToken: want };
      row.ok = row.above <= row.limit && row.token === want;
      results.push(row);
      console.log(`${backend} ${source.padEnd(5)} (from ${r.loadSource}): peak ${(r.above / MIB).toFixed(0)} MiB above idle = ${row.ratio.toFixed(2)} × the ${(bytes / MIB).toFixed(0)} MiB file ` +
        `(limit ${(row.limit / MIB).toFixed(0)} MiB: ${row.target}; at the peak ${Object.entries(r.atPeak).map(([k, v]) => `${k} ${(v / MIB).toFixed(0)}`).join(', ')} MiB; wasm memory ${(r.wasmBytes / MIB).toFixed(0)} MiB); ready in ${(r.loadMs / 1000).toFixed(1)} s; first token ${JSON.stringify(r.token)} (CLI ${JSON.stringify(want)}) ${row.ok ? 'ok' : 'FAIL'}`);
    }
  } finally {
    await context.close();
    site.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
}
const out = path.resolve(ROOT, values.out);
fs.mkdirSync(path.dirname(out), { recursive: true });
fs.writeFileSync(out, JSON.stringify({ date: new Date().toISOString(), results }, null, 2));
console.log(`bench-memory: ${out}`);
if (results.some((r) => !r.ok)) process.exitCode = 1;
