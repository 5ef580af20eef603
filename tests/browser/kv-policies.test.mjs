// The GPU's cache policies in Chromium (WebGPU on SwiftShader, the kernels compiled by Tint rather
// than naga): a Q8_0 block cache and a window of 8 positions give the greedy text of the native
// CLI on the same policy (lavapipe), and the KV-cache view names the policy, its bytes per
// position and, for the window, the positions it evicted. And on the CPU backend, an evicting
// policy running past the loaded context, which the page names.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { useSite, openSite, generate, ROOT } from './harness.mjs';

const site = useSite();
const PROMPT = 'The capital of France is a city that';

/** The native CLI's greedy run on the GPU with cache policy `policy`: its summary. */
function cliGpu(policy, maxTokens) {
  const args = ['generate', '--prompt', PROMPT, '--max-tokens', String(maxTokens), '--backend', 'gpu', '--kv-policy', policy, '--json'];
  const out = execFileSync(path.join(ROOT, 'target/release/kvscope'), args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  return JSON.parse(out.trim().split('\n').at(-1)).summary;
}

for (const policy of ['q8_0', 'window-8']) {
  test(`the GPU backend with a ${policy} cache generates the CLI's greedy text`, { timeout: 900_000 }, async () => {
    const want = cliGpu(policy, 6);
    const page = await openSite(site.browser, site.server.url, `?backend=gpu&kv_policy=${policy}`);
    const r = await generate(page, PROMPT, 6);
    assert.equal(r.error, '');
    assert.equal(r.text, want.text);
    // The engine runs on WebGPU (not the CPU fallback) with the policy loaded.
    assert.match(await page.textContent('#model-info'), /GPU memory/);
    const view = await page.$eval('#kv-view', (v) => ({ ...v.dataset }));
    assert.equal(view.kvPolicy, policy);
    const cached = want.prompt_tokens + want.generated_tokens - (want.stop === 'eos' ? 1 : 0);
    if (policy === 'q8_0') {
      // SmolLM2: 30 layers × K and V × 192 values in Q8_0 blocks of 34 bytes per 32 values.
      assert.equal(Number(view.bytesPerPosition), 30 * 2 * (192 / 32) * 34);
    } else {
      assert.equal(view.held, Array.from({ length: 8 }, (_, i) => cached - 8 + i).join(','));
      assert.equal(view.evicted.split(',').length, cached - 8);
    }
    assert.deepEqual(page.errors, []);
    await page.close();
  });
}

test('on the CPU backend, sink-4-window-28 runs past a context of 32 and the page says which policy let it', { timeout: 900_000 }, async () => {
  const prompt = 'Once upon a time, in a small village by the sea,';
  const args = ['generate', '--prompt', prompt, '--max-tokens', '40', '--backend', 'cpu', '--kv-policy', 'sink-4-window-28', '--context', '32', '--json'];
  const out = execFileSync(path.join(ROOT, 'target/release/kvscope'), args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  const want = JSON.parse(out.trim().split('\n').at(-1)).summary;
  assert.ok(want.past_context, 'the CLI passes the context');
  const page = await openSite(site.browser, site.server.url, '?backend=cpu&context=32&kv_policy=sink-4-window-28');
  // Every view open, so that each draws positions past the context.
  await page.$$eval('details', (ds) => ds.forEach((d) => { d.open = true; }));
  const r = await generate(page, prompt, 40);
  assert.equal(r.error, '');
  assert.equal(r.text, want.text);
  assert.equal(r.stats.generatedTokens, String(want.generated_tokens));
  assert.equal(await page.$eval('#stats', (s) => s.dataset.pastContext), 'sink-4-window-28');
  assert.match(r.status, /passed the context of 32 tokens at position 32: cache policy sink-4-window-28 keeps 32 positions/);
  assert.deepEqual(page.errors, []);
  await page.close();
});
