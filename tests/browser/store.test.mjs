// The model store (OPFS, written by the engine's worker slice by slice and hashed as it passes):
// a download cancelled or cut off part way keeps its bytes unmarked and resumes with an HTTP
// Range request; a quota too small is refused by name before the download; models kept by the
// older Cache Storage store move over once; a picked file kept for offline use loads again.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { serve, launch, openSite, ready, generate, cliGreedy, ROOT } from './harness.mjs';

const MODEL = 'models/SmolLM2-135M-Instruct.Q4_1.gguf';
const MIB = 1 << 20;
const PROMPT = 'The capital of France is';

let browser;
let want;
before(async () => {
  browser = await launch();
  want = cliGreedy(PROMPT, 3, { backend: 'cpu' });
});
after(async () => { await browser?.close(); });

const info = (page) => page.$eval('#model-info', (e) => ({ ...e.dataset }));
const panel = (page) => page.$eval('#models-panel', (e) => ({ count: e.dataset.count, partial: e.dataset.partial }));
/** The requests for the model file after the `from`th: [with a Range header, without]. */
const modelGets = (server, from) => {
  const all = server.requests.slice(from).filter((u) => u.endsWith(MODEL)).length;
  const ranged = server.ranges.filter((r) => r.url.endsWith(MODEL) && r.at >= from);
  return { ranged, plain: all - ranged.length };
};

/** Runs `fn(server, context)` with a fresh server (`serve`'s options) and browser context (its
 * own store), closing both after. */
async function session(options, fn) {
  const server = await serve(undefined, '/', options);
  const context = await browser.newContext();
  try {
    await fn(server, context);
  } finally {
    await context.close();
    server.close();
  }
}

async function loadUrl(page) {
  await page.$eval('#status', (s) => { s.textContent = ''; });
  await page.click('#load-url');
  await page.waitForFunction(() => /^Ready|still loaded|No model loaded|cancelled/.test(document.getElementById('status').textContent), null, { timeout: 300_000 });
}

test('a download cancelled, then cut off, resumes from the stored bytes with a Range request and loads the whole, checked', { timeout: 900_000 }, async () => {
  await session({ cut: (rel) => (rel === MODEL ? { at: 30 * MIB, stall: true } : null) }, async (server, context) => {
    const page = await openSite(context, server.url, '?backend=cpu', { wait: false });
    // The download stalls at 30 MiB: Cancel stops it, and nothing is marked as stored.
    await page.waitForFunction(() => document.getElementById('progress').value > 0.25 && document.getElementById('progress').dataset.phase === 'download', null, { timeout: 120_000 });
    assert.match(await page.textContent('#progress-text'), /downloaded · \d+\.\d \/ 93\.8 MB · \d+% · [\d.]+ MB\/s/);
    await page.click('#cancel');
    await page.waitForFunction(() => /cancelled/.test(document.getElementById('status').textContent));
    await page.waitForFunction(() => document.getElementById('models-panel').dataset.partial === '1');
    assert.deepEqual(await panel(page), { count: '0', partial: '1' });

    // The connection drops at 60 MiB: a named error, the bytes kept for the next try.
    server.cut = (rel) => (rel === MODEL ? { at: 60 * MIB } : null);
    let mark = server.requests.length;
    await loadUrl(page);
    assert.equal(await page.$eval('#error', (e) => e.dataset.name), 'Truncated');
    assert.match(await page.textContent('#error-text'), /stopped after 60\.0 of 93\.8 MiB.*load it again to resume/);
    assert.deepEqual(modelGets(server, mark).ranged.map((r) => r.range).filter((r) => !r.startsWith('bytes=0-')), [`bytes=${30 * MIB}-`], 'the second try resumed at 30 MiB');
    assert.deepEqual(await panel(page), { count: '0', partial: '1' });

    // The whole file: the rest fetched from 60 MiB, the copy checked, stored, and it generates.
    server.cut = null;
    mark = server.requests.length;
    await loadUrl(page);
    assert.equal(await page.isHidden('#error'), true, await page.textContent('#error-text'));
    assert.equal((await info(page)).loadSource, 'network');
    const gets = modelGets(server, mark);
    assert.deepEqual(gets.ranged.map((r) => r.range).filter((r) => !r.startsWith('bytes=0-')), [`bytes=${60 * MIB}-`]);
    assert.equal(gets.plain, 0, 'no request for the whole file');
    await page.waitForFunction(() => document.getElementById('models-panel').dataset.count === '1');
    assert.deepEqual(await panel(page), { count: '1', partial: '0' });
    const r = await generate(page, PROMPT, 3);
    assert.equal(r.text, want.text);

    // From the store, offline of the server: the same text.
    server.close();
    await page.reload();
    await ready(page);
    assert.equal((await info(page)).loadSource, 'storage');
    assert.equal((await generate(page, PROMPT, 3)).text, want.text);
  });
});

test('a model larger than the storage left is refused by name before it downloads; with room, it loads', { timeout: 600_000 }, async () => {
  await session({}, async (server, context) => {
    const page = await openSite(context, server.url, '?backend=cpu');
    await page.waitForFunction(() => document.getElementById('models-panel').dataset.count === '1');
    await page.evaluate(() => { document.getElementById('models-panel').open = true; });
    await page.click('#models-list button.delete');
    await page.waitForFunction(() => document.getElementById('models-panel').dataset.count === '0');
    // The worker's view of the site's storage: 60 MiB, 10 of them used.
    const worker = page.workers().find((w) => w.url().endsWith('/worker.js'));
    await worker.evaluate(() => { navigator.storage.estimate = async () => ({ quota: 60 << 20, usage: 10 << 20 }); });
    const mark = server.requests.length;
    await loadUrl(page);
    assert.equal(await page.$eval('#error', (e) => e.dataset.name), 'QuotaExceeded');
    assert.match(await page.textContent('#error-text'), /not enough browser storage for SmolLM2-135M-Instruct\.Q4_1\.gguf: it needs 93\.8 MiB more; 50\.0 MiB of the site's 60\.0 MiB are free/);
    assert.match(await page.textContent('#status'), /previous model is still loaded/);
    assert.equal(modelGets(server, mark).plain, 0, 'only the header was read');
    await worker.evaluate(() => { delete navigator.storage.estimate; });
    await loadUrl(page);
    assert.equal(await page.isHidden('#error'), true, await page.textContent('#error-text'));
    assert.equal((await generate(page, PROMPT, 3)).text, want.text);
  });
});

test('a model kept by the older Cache Storage store moves to OPFS once and loads from there', { timeout: 600_000 }, async () => {
  await session({}, async (server, context) => {
    const page = await openSite(context, server.url, '?backend=cpu');
    await page.waitForFunction(() => document.getElementById('models-panel').dataset.count === '1');
    // The store as an older build left it: the model in Cache Storage with its hash; no OPFS copy.
    await page.evaluate(async (url) => {
      const key = new URL(url, location.href).href;
      const bytes = new Uint8Array(await (await fetch(key)).arrayBuffer());
      const sha = Array.from(new Uint8Array(await crypto.subtle.digest('SHA-256', bytes)), (b) => b.toString(16).padStart(2, '0')).join('');
      const cache = await caches.open('kvscope-models');
      await cache.put(key, new Response(bytes, { headers: { 'content-length': String(bytes.length), 'x-kvscope-sha256': sha, 'x-kvscope-name': 'SmolLM2-135M-Instruct.Q4_1.gguf' } }));
      await (await navigator.storage.getDirectory()).removeEntry('kvscope-models', { recursive: true });
    }, MODEL);
    const mark = server.requests.length;
    await page.reload();
    await ready(page);
    assert.equal(await page.isHidden('#error'), true, await page.textContent('#error-text'));
    assert.equal((await info(page)).loadSource, 'storage');
    assert.equal(modelGets(server, mark).plain, 0, 'not downloaded again');
    assert.equal(await page.evaluate(() => caches.has('kvscope-models')), false, 'the old store is gone');
    assert.deepEqual(await panel(page), { count: '1', partial: '0' });
    assert.equal((await generate(page, PROMPT, 3)).text, want.text);
  });
});

test('a picked file kept for offline use is stored, listed and loads again from the Models panel', { timeout: 600_000 }, async () => {
  await session({}, async (server, context) => {
    const page = await openSite(context, server.url, '?backend=cpu');
    await page.$eval('#status', (s) => { s.textContent = ''; });
    await page.setInputFiles('#model-file', path.join(ROOT, 'www', MODEL));
    await page.waitForFunction(() => /^Ready/.test(document.getElementById('status').textContent), null, { timeout: 300_000 });
    await page.click('#keep');
    await page.waitForFunction(() => document.getElementById('models-panel').dataset.count === '2');
    assert.equal(await page.isHidden('#keep'), true);
    await page.reload();
    await ready(page);
    await page.evaluate(() => { document.getElementById('models-panel').open = true; });
    await page.$eval('#status', (s) => { s.textContent = ''; });
    await page.click('#models-list tr[data-key*="/local-models/"] button:not(.delete)');
    await page.waitForFunction(() => /^Ready/.test(document.getElementById('status').textContent), null, { timeout: 300_000 });
    assert.equal((await info(page)).loadSource, 'disk');
    assert.equal((await generate(page, PROMPT, 3)).text, want.text);
  });
});
