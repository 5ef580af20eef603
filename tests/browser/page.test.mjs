// The built site in Debian's Chromium with WebGPU on SwiftShader: the real default model loads,
// generates, and matches the native CLI token for token.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { useSite, cliGreedy, openSite, finished, screenshot, ROOT } from './harness.mjs';

const site = useSite();

const PROMPTS = ['The capital of France is', 'Once upon a time, in a small village by the sea,'];

test('greedy text equals the CLI for two prompts, from a link and from the form', { timeout: 900_000 }, async () => {
  const want = PROMPTS.map((p) => cliGreedy(p, 16));
  // First prompt: a link that reproduces a run.
  // On the GPU (SwiftShader): the page's other tests run on the backend it chooses, the CPU.
  const q = `?backend=gpu&prompt=${encodeURIComponent(PROMPTS[0])}&max_tokens=16&greedy=1&autostart=1`;
  const page = await openSite(site.browser, site.server.url, q, { wait: false });
  let r = await finished(page);
  assert.equal(r.error, '');
  assert.equal(r.text, want[0].text);
  assert.equal(r.stats.generatedTokens, String(want[0].generated_tokens));
  assert.equal(r.stats.promptTokens, String(want[0].prompt_tokens));
  for (const k of ['ttftMs', 'prefillTps', 'decodeTps']) assert.ok(Number(r.stats[k]) > 0, `${k} = ${r.stats[k]}`);
  // Every generated token is fed back, except an end-of-text token.
  assert.equal(Number(r.stats.cachedTokens), want[0].prompt_tokens + want[0].generated_tokens - (want[0].stop === 'eos' ? 1 : 0));

  // Second prompt: typed into the form.
  await page.fill('#prompt', PROMPTS[1]);
  await page.fill('#max-tokens', '16');
  await page.click('#generate');
  r = await finished(page);
  assert.equal(r.error, '');
  assert.equal(r.text, want[1].text);
  assert.ok(want[1].generated_tokens >= 16);
  await screenshot(page, 'page-finished.png');
  // The model file stays in JavaScript memory; wasm memory holds one tensor at a time.
  const mem = await page.$eval('#model-info', (e) => ({ ...e.dataset }));
  console.log(`# wasm peak ${mem.wasmPeakBytes} bytes for a ${mem.fileBytes}-byte model`);
  assert.ok(Number(mem.wasmPeakBytes) < Number(mem.fileBytes), JSON.stringify(mem));
  console.log(`# page stats: ${JSON.stringify(r.stats)}`);
  assert.deepEqual(page.errors, []);
  await page.close();
});

test('Stop ends generation within a step and the engine stays usable', { timeout: 600_000 }, async () => {
  const page = await openSite(site.browser, site.server.url);
  await page.fill('#prompt', PROMPTS[1]);
  await page.fill('#max-tokens', '500');
  await page.click('#generate');
  await page.waitForFunction(() => document.getElementById('output').textContent.length > 0, null, { timeout: 300_000 });
  await page.click('#stop');
  const r = await finished(page);
  assert.match(r.status, /stopped/);
  assert.ok(Number(r.stats.generatedTokens) < 20, `generated ${r.stats.generatedTokens}`);
  // Usable right after: a short run completes.
  await page.fill('#max-tokens', '2');
  await page.click('#generate');
  const again = await finished(page);
  assert.equal(again.error, '');
  assert.equal(again.stats.generatedTokens, '2');
  await page.close();
});

test('chat keeps the cache across turns: the second turn prefills only its own tokens', { timeout: 900_000 }, async () => {
  const page = await openSite(site.browser, site.server.url);
  await page.check('#chat');
  await page.fill('#max-tokens', '4');
  await page.fill('#prompt', 'hi');
  await page.click('#generate');
  const first = await finished(page);
  assert.equal(first.error, '');
  assert.equal(first.text, cliGreedy('hi', 4, { chat: true }).text);
  await page.fill('#prompt', 'Name a colour.');
  await page.click('#generate');
  const second = await finished(page);
  assert.equal(second.error, '');
  const firstTotal = Number(first.stats.promptTokens) + Number(first.stats.generatedTokens);
  assert.ok(Number(second.stats.promptTokens) < firstTotal, `second turn prefilled ${second.stats.promptTokens} tokens`);
  assert.equal(await page.locator('#transcript .turn').count(), 4);
  await screenshot(page, 'page-chat.png');
  await page.close();
});

test('bad files show their errors, and a good model loads after them', { timeout: 600_000 }, async () => {
  const page = await openSite(site.browser, site.server.url);
  const model = fs.readFileSync(path.join(ROOT, 'www/models/SmolLM2-135M-Instruct.Q4_1.gguf'));
  const bad = [
    { name: 'cat.png', buffer: Buffer.from('\x89PNG\r\n\x1a\n\0\0\0\rIHDR', 'binary'), want: /not a GGUF file/ },
    { name: 'notes.txt', buffer: Buffer.from('just some text, not a model\n'), want: /not a GGUF file/ },
    { name: 'empty.gguf', buffer: Buffer.alloc(0), want: /truncated/ },
    { name: 'half.gguf', buffer: model.subarray(0, 1 << 20), want: /truncated|outside/ },
  ];
  for (const f of bad) {
    await page.setInputFiles('#model-file', { name: f.name, mimeType: 'application/octet-stream', buffer: f.buffer });
    await page.waitForFunction((n) => !document.getElementById('error').hidden && document.getElementById('error-text').textContent.includes(n), f.name);
    const err = await page.textContent('#error-text');
    assert.match(err, f.want, `${f.name}: ${err}`);
    if (f.name === 'cat.png') await screenshot(page, 'page-bad-file.png');
  }
  await page.click('#load-url');
  await page.waitForFunction(() => /^Ready/.test(document.getElementById('status').textContent), null, { timeout: 180_000 });
  assert.equal(await page.isHidden('#error'), true);
  await page.fill('#max-tokens', '2');
  await page.click('#generate');
  const r = await finished(page);
  assert.equal(r.error, '');
  assert.equal(r.stats.generatedTokens, '2');
  await page.close();
});
