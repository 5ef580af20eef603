// Runs the page's benchmark (?bench=1) in headless Chromium, on WebGPU (SwiftShader here, the
// GPU where Chromium has one) unless --backend cpu, and writes the report as JSON.
//   npm run bench:browser -- [--prompt-tokens 64] [--gen-tokens 8] [--contexts 0,256]
//                            [--gpu-argmax 0|1] [--rows M,N] [--model models/FILE.gguf]
//                            [--backend gpu|cpu|auto (the page's own choice)]
//                            [--profile 0|1] [--fuse 0|1] [--subgroups 0|1] [--out bench/out/browser.json]
// As in `kvscope bench`, the GPU argmax is off unless --gpu-argmax 1; --profile 1 adds where the
// GPU time of a decode step and a prefill chunk goes, by kind of dispatch; --fuse 0 records the
// decode step one dispatch per op, --subgroups 0 builds the kernels without subgroup operations.
// Needs the built site in dist/ (`trunk build --release`) and the model in dist/models/.
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { serve, launch, ROOT, DIST } from '../tests/browser/harness.mjs';

const { values } = parseArgs({
  options: {
    'prompt-tokens': { type: 'string', default: '64' },
    'gen-tokens': { type: 'string', default: '8' },
    'gpu-argmax': { type: 'string', default: '0' },
    profile: { type: 'string', default: '0' },
    backend: { type: 'string', default: 'gpu' },
    contexts: { type: 'string', default: '0,256' },
    rows: { type: 'string' },
    fuse: { type: 'string' },
    subgroups: { type: 'string' },
    model: { type: 'string' },
    out: { type: 'string', default: path.join('bench', 'out', 'browser.json') },
  },
});
if (!fs.existsSync(path.join(DIST, 'index.html'))) {
  console.error('bench-browser: dist/ has no site; run `trunk build --release` first');
  process.exit(1);
}

const site = await serve();
const browser = await launch();
try {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  const query = `?bench=1&prompt_tokens=${values['prompt-tokens']}&gen_tokens=${values['gen-tokens']}&gpu_argmax=${values['gpu-argmax']}&contexts=${values.contexts}&profile=${values.profile}` +
    (values.backend !== 'auto' ? `&backend=${values.backend}` : '') + (values.rows ? `&rows=${values.rows}` : '') + (values.fuse ? `&fuse=${values.fuse}` : '') + (values.subgroups ? `&subgroups=${values.subgroups}` : '') + (values.model ? `&model=${encodeURIComponent(values.model)}` : '');
  await page.goto(site.url + query);
  await page.waitForFunction(() => {
    const s = document.getElementById('bench').dataset.state;
    return s === 'done' || s === 'error' || !document.getElementById('error').hidden;
  }, null, { timeout: 3_600_000, polling: 1000 });
  const result = await page.evaluate(() => ({
    state: document.getElementById('bench').dataset.state,
    error: document.getElementById('error').hidden ? '' : document.getElementById('error-text').textContent,
    report: window.kvscopeBench || null,
    userAgent: navigator.userAgent,
  }));
  if (result.state !== 'done') {
    console.error(`bench-browser: the benchmark failed: ${result.error || errors.join('; ')}`);
    process.exitCode = 1;
  } else {
    const out = path.resolve(ROOT, values.out);
    fs.mkdirSync(path.dirname(out), { recursive: true });
    fs.writeFileSync(out, JSON.stringify({ browser: result.userAgent, ...result.report }, null, 2) + '\n');
    const r = result.report;
    console.log(`${r.model} on ${r.adapter} (${result.userAgent})`);
    console.log(`prefill ${r.prefill_tokens_per_s.toFixed(2)} tok/s, token by token ${r.prefill_token_by_token_per_s.toFixed(2)} tok/s ` +
      `(batched ${r.batched_over_token_by_token.toFixed(2)}×); time to first token ${r.ttft_ms.toFixed(0)} ms`);
    console.log(`decode ${r.decode.map((d) => d.tokens_per_s.toFixed(2)).join(' / ')} tok/s at context ` +
      `${r.decode.map((d) => d.context).join(' / ')} (last / first ${r.decode_longest_over_shortest.toFixed(2)})`);
    console.log(`per token: ${r.dispatches_per_token} dispatches, ${r.submits_per_token} submits, ${r.maps_per_token} maps, ` +
      `${r.readback_bytes_per_token} bytes read back, ${r.encode_ms_per_token.toFixed(3)} ms encode${r.gpu_argmax ? ' (GPU argmax)' : ''}`);
    for (const p of r.profile || []) {
      console.log(`profile: ${p.what}: ${p.total_ms.toFixed(1)} ms, each dispatch alone (less ${p.submit_ms.toFixed(2)} ms per submit)`);
      for (const row of p.rows) {
        console.log(`  ${row.kind.padEnd(24)} ${String(row.dispatches).padStart(4)} ${row.ms.toFixed(2).padStart(10)} ms ${(100 * row.ms / p.total_ms).toFixed(1).padStart(5)}%`);
      }
    }
    console.log(`written: ${values.out}`);
  }
} finally {
  await browser.close();
  site.close();
}
