// The bench page (?bench=1) on WebGPU: it runs the engine's benchmark in the browser and reports
// the CLI's figures; the per-token counters must equal the native CLI's for the same model and
// options (the same recorded programs), and the speed figures must be real measurements.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { useSite, openSite, screenshot, ROOT } from './harness.mjs';

const site = useSite();

test('?bench=1 reports prefill, decode and per-token costs like the CLI', { timeout: 900_000 }, async () => {
  const args = { prompt: 40, gen: 3, contexts: '0,40' };
  const cli = JSON.parse(execFileSync(path.join(ROOT, 'target/release/kvscope'),
    ['bench', '--prompt-tokens', String(args.prompt), '--gen-tokens', String(args.gen), '--contexts', args.contexts, '--gpu-argmax', '--json'],
    { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }));

  const q = `?backend=gpu&bench=1&prompt_tokens=${args.prompt}&gen_tokens=${args.gen}&contexts=${args.contexts}&gpu_argmax=1`;
  const page = await openSite(site.browser, site.server.url, q, { wait: false });
  await page.waitForFunction(() => ['done', 'error'].includes(document.getElementById('bench').dataset.state), null, { timeout: 840_000 });
  const r = await page.evaluate(() => ({ state: document.getElementById('bench').dataset.state, report: window.kvscopeBench,
    rows: document.querySelectorAll('#bench-table tr').length, json: document.getElementById('bench-json').textContent }));
  assert.equal(r.state, 'done');
  const b = r.report;
  console.log(`# browser bench: ${JSON.stringify(b)}`);
  assert.deepEqual(JSON.parse(r.json), b);
  assert.ok(r.rows >= 9);
  assert.equal(b.prompt_tokens, args.prompt);
  assert.equal(b.gpu_argmax, true, '&gpu_argmax=1 turns the GPU argmax on');
  assert.deepEqual(b.decode.map((d) => d.context), [1, 40]);
  for (const d of b.decode) assert.ok(d.tokens_per_s > 0 && d.steps === args.gen, JSON.stringify(d));
  // Decode steps at the first and last contexts, alternating.
  const il = b.decode_interleaved;
  assert.ok(il && il.short_context === 1 && il.long_context === 40 && il.short_median_ms > 0 && il.long_over_short > 0, JSON.stringify(il));
  assert.ok(b.prefill_tokens_per_s > 0 && b.prefill_token_by_token_per_s > 0 && b.ttft_ms > 0);
  // Same programs as natively: the counters per decode token are identical.
  for (const k of ['dispatches_per_token', 'submits_per_token', 'maps_per_token', 'readback_bytes_per_token', 'prefill_chunk', 'weight_bytes']) {
    assert.equal(b[k], cli[k], k);
  }
  assert.equal(b.submits_per_token, 1);
  assert.equal(b.readback_bytes_per_token, 8);
  await screenshot(page, 'bench-page.png');
  assert.deepEqual(page.errors, []);
  await page.close();
});
