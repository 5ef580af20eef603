// A split model (`kvscope split` cuts the default model into three parts, as llama-gguf-split
// does) loads in the page picked as files together and from its first part's URL (the others
// fetched beside it, each part stored as it downloads, then loaded again from the store),
// generating the CLI's greedy text of the single file; a set picked without a part is refused by
// the part's name and the loaded model is kept. A model the CPU backend cannot hold at the chosen
// context and one the GPU cannot hold, each refused from its header before it downloads; and a
// Blob given to the JavaScript API, read by the worker slice by slice.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { useSite, openSite, generate, cliGreedy, serve, DIST, ROOT } from './harness.mjs';

const site = useSite();
const PROMPT = 'The capital of France is';

/** The default model cut into three parts in a temporary directory: their paths, in order. */
function splitSet() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvscope-split-'));
  const out = path.join(dir, 'smol');
  execFileSync(path.join(ROOT, 'target/release/kvscope'), ['split', '--parts', '3', '--out', out], { cwd: ROOT, stdio: 'ignore' });
  return [1, 2, 3].map((i) => `${out}-0000${i}-of-00003.gguf`);
}

/** Runs `action` and waits until the page reports a model ready again, or an error. */
async function afterLoad(page, action) {
  await page.$eval('#status', (s) => { s.textContent = ''; });
  await action();
  await page.waitForFunction(() => /^Ready|still loaded/.test(document.getElementById('status').textContent), null, { timeout: 300_000 });
}

test('a split model loads picked together and from its first part\'s URL; a missing part is named', { timeout: 900_000 }, async (t) => {
  const parts = splitSet();
  t.after(() => fs.rmSync(path.dirname(parts[0]), { recursive: true, force: true }));
  const want = cliGreedy(PROMPT, 4, { backend: 'cpu' });
  // A site of its own (its own store), with the parts under split/.
  const files = Object.fromEntries(parts.map((p) => [`split/${path.basename(p)}`, p]));
  const server = await serve(DIST, '/', { files });
  t.after(() => server.close());
  const context = await site.browser.newContext();
  const page = await openSite(context, server.url, '?backend=cpu');

  await afterLoad(page, () => page.setInputFiles('#model-file', parts));
  assert.equal(await page.isHidden('#error'), true, await page.textContent('#error-text'));
  assert.match(await page.textContent('#status'), /^Ready/);
  assert.equal(Number(await page.$eval('#model-info', (e) => e.dataset.fileBytes)) > 0, true);
  let r = await generate(page, PROMPT, 4);
  assert.equal(r.text, want.text);

  await afterLoad(page, async () => {
    await page.fill('#model-url', `${server.url}split/smol-00001-of-00003.gguf`);
    await page.click('#load-url');
  });
  assert.equal(await page.isHidden('#error'), true, await page.textContent('#error-text'));
  r = await generate(page, PROMPT, 4);
  assert.equal(r.text, want.text);
  // Each part's header was read first (the set checked before a byte of it downloaded), then each
  // part downloaded once, whole, and stored: loading the set again reads the store.
  const fetched = () => server.requests.filter((u) => u.startsWith('/split/'));
  const urls = Object.keys(files).map((f) => `/${f}`).sort();
  const heads = server.ranges.filter((r) => r.url.startsWith('/split/'));
  assert.deepEqual(heads.map((r) => r.url).sort(), urls);
  assert.ok(heads.every((r) => r.range === 'bytes=0-2097151'), JSON.stringify(heads));
  const whole = server.requests.filter((u, i) => u.startsWith('/split/') && !heads.some((r) => r.at === i));
  assert.deepEqual(whole.sort(), urls);
  await afterLoad(page, () => page.click('#load-url'));
  assert.equal(await page.isHidden('#error'), true, await page.textContent('#error-text'));
  assert.equal(await page.$eval('#model-info', (e) => e.dataset.loadSource), 'storage');
  assert.equal(fetched().length, 6, 'nothing downloaded again');
  // Through the JavaScript API, the parts' URLs in order (stored: read from the store).
  const api = await page.evaluate(async (prompt) => {
    const { createEngine } = await import(new URL('js/kvscope.js', location.href).href);
    const parts = [1, 2, 3].map((i) => `split/smol-0000${i}-of-00003.gguf`);
    const engine = await createEngine({ model: parts, context: 256, backend: 'cpu' });
    const c = await engine.completions.create({ prompt, max_tokens: 4, temperature: 0 });
    await engine.close();
    return c.choices[0].text;
  }, PROMPT);
  assert.equal(api, want.text);
  assert.equal(fetched().length, 6, 'nothing downloaded for the API either');

  await afterLoad(page, () => page.setInputFiles('#model-file', [parts[0], parts[2]]));
  assert.match(await page.textContent('#error-text'), /split model part `smol-00002-of-00003\.gguf`/);
  assert.match(await page.textContent('#status'), /previous model is still loaded/);
  assert.deepEqual(page.errors ?? [], []);
  await context.close();
});

test('a model the CPU backend cannot hold at the chosen context is refused from its header, before it downloads', { timeout: 600_000 }, async () => {
  // SmolLM2's f32 K and V at 100,000 positions: 2 × 30 layers × 192 values × 4 bytes each, 4.6 GB.
  const page = await openSite(site.browser, site.server.url, '?backend=cpu&context=100000');
  await page.waitForFunction(() => !document.getElementById('error').hidden, null, { timeout: 120_000 });
  const err = await page.textContent('#error-text');
  assert.match(err, /KV cache at 100000 positions \(4395 MiB\) need \d+ MiB, more than wasm32's 4096 MiB of memory/);
  assert.equal(await page.textContent('#progress-text'), '', 'no download began');
  assert.match(await page.textContent('#status'), /No model loaded/);
  // At a context it can hold, the same model loads and generates.
  await page.selectOption('#context', '2048');
  await page.click('#load-url');
  await page.waitForFunction(() => /^Ready/.test(document.getElementById('status').textContent), null, { timeout: 300_000 });
  const r = await generate(page, PROMPT, 2);
  assert.equal(r.stats.generatedTokens, '2');
  await page.close();
});

test('a model the GPU cannot hold is refused from its header, before it downloads, and the default model loads after', { timeout: 600_000 }, async (t) => {
  // One layer of an 8B-class shape with an FFN 524,288 wide, every weight zero: a sparse file of
  // 3.6 GiB (examples/big_model.rs --zeros). Its gate and up weights, one buffer, are 2,304 MiB:
  // past SwiftShader's maxBufferSize of 1,024 MiB.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvscope-wide-'));
  const file = path.join(dir, 'wide.gguf');
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  execFileSync('cargo', ['run', '--release', '-q', '--example', 'big_model', '--', file, '--layers', '1', '--ffn', '524288', '--zeros'], { cwd: ROOT, stdio: 'ignore' });
  const server = await serve(DIST, '/', { files: { 'models/wide.gguf': file } });
  t.after(() => server.close());
  const page = await openSite(site.browser, server.url, '?backend=gpu&load=0', { wait: false });
  await page.waitForFunction(() => /^No model loaded/.test(document.getElementById('status').textContent), null, { timeout: 120_000 });
  await page.fill('#model-url', `${server.url}models/wide.gguf`);
  await page.click('#load-url');
  await page.waitForFunction(() => !document.getElementById('error').hidden, null, { timeout: 120_000 });
  const err = await page.textContent('#error-text');
  assert.match(err, /`blk\.0\.ffn_gate_up\.weight` needs \d+ bytes \(2304 MiB\) but the device allows \d+ \(maxBufferSize\)/);
  assert.equal(await page.textContent('#progress-text'), '', 'no download began');
  // Only the header was asked for: Range requests of a few MiB, nothing else.
  const asked = server.requests.filter((u) => u.endsWith('/wide.gguf'));
  const ranges = server.ranges.filter((r) => r.url.endsWith('/wide.gguf'));
  assert.equal(asked.length, ranges.length, 'every request for the model was a Range request');
  for (const r of ranges) assert.match(r.range, /^bytes=0-\d+$/);
  assert.ok(ranges.every((r) => Number(r.range.split('-')[1]) < 8 << 20));
  // The default model loads on the GPU after.
  await page.fill('#model-url', `${server.url}models/SmolLM2-135M-Instruct.Q4_1.gguf`);
  await page.click('#load-url');
  await page.waitForFunction(() => /^Ready/.test(document.getElementById('status').textContent), null, { timeout: 300_000 });
  // The upload's progress was shown: bytes of the file, the rate.
  assert.equal(await page.$eval('#progress', (e) => e.dataset.phase), 'upload');
  assert.match(await page.textContent('#progress-text'), /^uploaded to the GPU · [\d.]+ \/ [\d.]+ MB · \d+% · [\d.]+ MB\/s/);
  const r = await generate(page, PROMPT, 1);
  assert.equal(r.stats.generatedTokens, '1');
  await page.close();
});

test('through the JavaScript API a model given as a Blob loads from it slice by slice and generates the CLI\'s text', { timeout: 600_000 }, async () => {
  const want = cliGreedy(PROMPT, 4, { backend: 'cpu' });
  const page = await site.browser.newPage();
  const base = `${site.server.url}__test/`;
  await page.route(`${base}page.html`, (route) => route.fulfill({ contentType: 'text/html', body: '<!doctype html><title>blob</title>' }));
  await page.goto(`${base}page.html`);
  const got = await page.evaluate(async (prompt) => {
    const { createEngine } = await import(new URL('../js/kvscope.js', location.href).href);
    const blob = await (await fetch('../models/SmolLM2-135M-Instruct.Q4_1.gguf')).blob();
    const engine = await createEngine({ model: blob, context: 256, backend: 'cpu' });
    const c = await engine.completions.create({ prompt, max_tokens: 4, temperature: 0 });
    await engine.close();
    return { text: c.choices[0].text, size: blob.size };
  }, PROMPT);
  assert.equal(got.text, want.text);
  assert.equal(got.size, fs.statSync(path.join(ROOT, 'www/models/SmolLM2-135M-Instruct.Q4_1.gguf')).size, 'the Blob is the model file');
  assert.deepEqual(page.errors ?? [], []);
  await page.close();
});
