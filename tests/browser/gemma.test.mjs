// The second real model in the page: Gemma 3 270M Q4_K_M (K-quants, a SentencePiece vocabulary of
// 262,144 tokens, sliding-window layers) loads from the site's models/, generates the CLI's greedy
// text, has Chat turned off for want of a chat template, and shows its sliding-window layers as
// rings in the cache view.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { useSite, cliGreedy, openSite, finished, screenshot } from './harness.mjs';

const site = useSite();
const MODEL = 'www/models/gemma-3-270m-q4_k_m.gguf';

test('Gemma 3 generates the CLI greedy text; no Chat; rings in the cache view', { timeout: 900_000 }, async () => {
  const prompt = 'The capital of France is';
  const want = cliGreedy(prompt, 3, { model: MODEL });
  const q = `?backend=gpu&model=models/gemma-3-270m-q4_k_m.gguf&prompt=${encodeURIComponent(prompt)}&max_tokens=3&greedy=1&autostart=1`;
  const page = await openSite(site.browser, site.server.url, q, { wait: false });
  const r = await finished(page);
  assert.equal(r.error, '');
  assert.equal(r.text, want.text);
  assert.equal(r.stats.promptTokens, String(want.prompt_tokens));
  // No chat template: Chat is off and says why.
  const chat = await page.evaluate(() => ({ disabled: document.getElementById('chat').disabled, reason: !document.getElementById('chat-reason').hidden }));
  assert.deepEqual(chat, { disabled: true, reason: true });
  // 15 of 18 layers keep a ring of 512 + 32 rows.
  const kv = await page.$eval('#kv-view', (e) => ({ ...e.dataset }));
  assert.equal(kv.layers, '18');
  assert.equal(kv.ringLayers, '15');
  assert.equal(kv.ringRows, '544');
  await screenshot(page, 'gemma.png');
  console.log(`# Gemma page stats: ${JSON.stringify(r.stats)}`);
});
