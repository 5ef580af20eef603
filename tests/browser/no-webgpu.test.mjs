// Without WebGPU the page runs on the CPU backend: it says so and why (a notice with where WebGPU
// is, no native-driver advice, no error), and generates the CLI's greedy text.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { serve, launch, openSite, finished, cliGreedy, screenshot, recordTokenEvents, ROOT } from './harness.mjs';

/** The CLI's token events (id, top: [{id, p}]) for a greedy run on `backend`. */
function cliEvents(prompt, maxTokens, backend) {
  const args = ['generate', '--prompt', prompt, '--max-tokens', String(maxTokens), '--json', '--backend', backend];
  const out = execFileSync(path.join(ROOT, 'target/release/kvscope'), args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  return out.trim().split('\n').slice(0, -1).map((l) => JSON.parse(l));
}

const PROMPT = 'The capital of France is';

test('a browser without WebGPU runs on the CPU, says why, and generates the CLI\'s text', { timeout: 600_000 }, async () => {
  const want = cliGreedy(PROMPT, 8);
  const exact = cliEvents(PROMPT, 8, 'reference');
  const server = await serve();
  const browser = await launch({ webgpu: false });
  try {
    const context = await browser.newContext();
    await recordTokenEvents(context);
    const q = `?prompt=${encodeURIComponent(PROMPT)}&max_tokens=8&greedy=1&autostart=1`;
    const page = await openSite(context, server.url, q, { wait: false });
    const r = await finished(page);
    assert.equal(r.error, '');
    assert.equal(r.text, want.text);
    assert.equal(r.stats.generatedTokens, String(want.generated_tokens));
    // The wasm SIMD kernels against the exact f32 pass (the CLI's reference backend): the same
    // tokens, and each step's most probable tokens with probabilities within 1e-3.
    const events = await page.evaluate(() => window.__tokenEvents);
    assert.deepEqual(events.map((e) => e.id), exact.map((e) => e.id));
    for (const [i, e] of events.entries()) {
      for (const t of exact[i].top.slice(0, 3)) {
        const mine = e.top.find((m) => m.id === t.id);
        assert.ok(mine, `step ${i}: token ${t.id} missing from the page's table`);
        assert.ok(Math.abs(mine.p - t.p) < 1e-3, `step ${i}, token ${t.id}: p ${mine.p} against ${t.p}`);
      }
    }
    const notice = await page.$eval('#backend', (e) => ({ ...e.dataset, text: e.textContent, hidden: e.hidden }));
    assert.equal(notice.hidden, false);
    assert.equal(notice.backend, 'cpu');
    // Debian's Chromium without the flag has navigator.gpu but grants no adapter.
    assert.ok(['no-webgpu', 'no-adapter'].includes(notice.reason), notice.reason);
    assert.match(notice.text, /^CPU \(WebAssembly SIMD\): this browser has (no WebGPU|WebGPU but granted no adapter)/);
    assert.match(notice.text, /Chrome and Edge 113\+/);
    assert.match(notice.text, /enable-unsafe-webgpu/);
    assert.doesNotMatch(notice.text, /Vulkan|mesa|driver/i);
    assert.match(await page.textContent('#status'), /Done/);
    assert.match(await page.textContent('#kv-bytes'), /wasm memory/);
    await screenshot(page, 'page-no-webgpu.png');
    assert.deepEqual(page.errors, []);
  } finally {
    await browser.close();
    server.close();
  }
});
