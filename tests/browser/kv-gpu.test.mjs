// The GPU's cache policies in Chromium (WebGPU on SwiftShader, the kernels compiled by Tint rather
// than naga): a Q8_0 block cache and a window of 8 positions give the greedy text of the native
// CLI on the same policy (lavapipe), and the KV-cache view names the policy, its bytes per
// position and, for the window, the positions it evicted.
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
