// Without WebGPU the page runs on the CPU backend: it says so and why (a notice with where WebGPU
// is, no native-driver advice, no error), and generates the CLI's greedy text.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { serve, launch, openSite, finished, cliGreedy, screenshot } from './harness.mjs';

const PROMPT = 'The capital of France is';

test('a browser without WebGPU runs on the CPU, says why, and generates the CLI\'s text', { timeout: 600_000 }, async () => {
  const want = cliGreedy(PROMPT, 8);
  const server = await serve();
  const browser = await launch({ webgpu: false });
  try {
    const q = `?prompt=${encodeURIComponent(PROMPT)}&max_tokens=8&greedy=1&autostart=1`;
    const page = await openSite(browser, server.url, q, { wait: false });
    const r = await finished(page);
    assert.equal(r.error, '');
    assert.equal(r.text, want.text);
    assert.equal(r.stats.generatedTokens, String(want.generated_tokens));
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
