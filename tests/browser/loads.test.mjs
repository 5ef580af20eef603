// A split model (`kvscope split` cuts the default model into three parts, as llama-gguf-split
// does) loads in the page picked as files together and from its first part's URL (the others
// fetched beside it), generating the CLI's greedy text of the single file; a set picked without
// a part is refused by the part's name and the loaded model is kept. And a model the CPU backend
// cannot hold at the chosen context, refused from its header before it downloads; and a Blob given
// to the JavaScript API, read by the worker slice by slice.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { useSite, openSite, generate, cliGreedy, ROOT } from './harness.mjs';

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

test('a split model loads picked together and from its first part\'s URL; a missing part is named', { timeout: 900_000 }, async () => {
  const parts = splitSet();
  const want = cliGreedy(PROMPT, 4, { backend: 'cpu' });
  // Requests under split/ are answered from the parts' directory (the service worker blocked,
  // so that the page's own fetches reach the route).
  const context = await site.browser.newContext({ serviceWorkers: 'block' });
  await context.route(`${site.server.url}split/*`, (route) => {
    const file = path.join(path.dirname(parts[0]), path.basename(new URL(route.request().url()).pathname));
    return fs.existsSync(file) ? route.fulfill({ path: file, contentType: 'application/octet-stream' }) : route.fulfill({ status: 404, body: 'not found' });
  });
  const page = await openSite(context, site.server.url, '?backend=cpu');

  await afterLoad(page, () => page.setInputFiles('#model-file', parts));
  assert.equal(await page.isHidden('#error'), true, await page.textContent('#error-text'));
  assert.match(await page.textContent('#status'), /^Ready/);
  assert.equal(Number(await page.$eval('#model-info', (e) => e.dataset.fileBytes)) > 0, true);
  let r = await generate(page, PROMPT, 4);
  assert.equal(r.text, want.text);

  await afterLoad(page, async () => {
    await page.fill('#model-url', `${site.server.url}split/smol-00001-of-00003.gguf`);
    await page.click('#load-url');
  });
  assert.equal(await page.isHidden('#error'), true, await page.textContent('#error-text'));
  r = await generate(page, PROMPT, 4);
  assert.equal(r.text, want.text);

  await afterLoad(page, () => page.setInputFiles('#model-file', [parts[0], parts[2]]));
  assert.match(await page.textContent('#error-text'), /split model part `smol-00002-of-00003\.gguf`/);
  assert.match(await page.textContent('#status'), /previous model is still loaded/);
  assert.deepEqual(page.errors ?? [], []);
  await context.close();
  fs.rmSync(path.dirname(parts[0]), { recursive: true, force: true });
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
