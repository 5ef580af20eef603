// Load once, then run with no network: the service worker serves the app shell, the model comes
// from browser storage (verified), and a damaged stored model is caught.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { serve, launch, openSite, ready, generate, screenshot } from './harness.mjs';

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

const SUBPATH = '/some/path/';
const info = (page) => page.$eval('#model-info', (e) => ({ ...e.dataset }));

test('online first, then offline from a sub-path: same page, same model, same text', { timeout: 900_000 }, async () => {
  const server = await serve(undefined, SUBPATH);
  const context = await browser.newContext();
  const requests = [];
  context.on('request', (r) => requests.push(r.url()));
  try {
    const page = await openSite(context, server.url);
    const cold = await info(page);
    assert.equal(cold.loadSource, 'network');
    const online = await generate(page, 'The capital of France is', 8);
    assert.equal(online.error, '');
    await page.evaluate(() => navigator.serviceWorker.ready);
    await page.waitForFunction(() => document.getElementById('models-panel').dataset.count === '1');
    const origin = new URL(server.url).origin;
    assert.deepEqual(requests.filter((u) => !u.startsWith(origin)), [], 'no request leaves the site');
    assert.deepEqual(server.requests.filter((u) => !u.startsWith(SUBPATH)), [], 'no request outside the sub-path');

    // The network goes away entirely.
    server.close();
    await context.setOffline(true);
    await page.reload();
    await ready(page);
    const warm = await info(page);
    assert.equal(warm.loadSource, 'storage');
    assert.equal(await page.isHidden('#error'), true);
    const offline = await generate(page, 'The capital of France is', 8);
    assert.equal(offline.error, '');
    assert.equal(offline.text, online.text);
    console.log(`# time to ready: cold (network) ${cold.loadMs} ms, warm (storage) ${warm.loadMs} ms`);
    await screenshot(page, 'offline.png');
  } finally {
    await context.close();
    server.close();
  }
});

test('a damaged stored model is downloaded again online and reported offline', { timeout: 900_000 }, async () => {
  const server = await serve();
  const context = await browser.newContext();
  // One byte of the stored copy flipped, in place (OPFS: opfs.js's layout).
  const corrupt = (page) => page.evaluate(async () => {
    const dir = await (await navigator.storage.getDirectory()).getDirectoryHandle('kvscope-models');
    for await (const [name, h] of dir.entries()) {
      if (!name.endsWith('.gguf')) continue;
      const f = await h.getFile();
      const at = f.size - 100;
      const byte = new Uint8Array(await f.slice(at, at + 1).arrayBuffer());
      byte[0] ^= 0xff;
      const w = await h.createWritable({ keepExistingData: true });
      await w.write({ type: 'write', position: at, data: byte });
      await w.close();
    }
  });
  try {
    const page = await openSite(context, server.url);
    await page.evaluate(() => navigator.serviceWorker.ready);
    await page.waitForFunction(() => document.getElementById('models-panel').dataset.count === '1');
    await corrupt(page);
    await page.reload();
    await ready(page);
    assert.equal(await page.isHidden('#error'), true);
    assert.equal((await info(page)).loadSource, 'network', 'downloaded again');

    await page.waitForFunction(() => document.getElementById('models-panel').dataset.count === '1');
    await corrupt(page);
    server.close();
    await context.setOffline(true);
    await page.reload();
    await page.waitForSelector('#error:not([hidden])', { timeout: 120_000 });
    const msg = await page.textContent('#error-text');
    assert.match(msg, /damaged/);
    assert.match(msg, /offline/);
    await screenshot(page, 'offline-damaged.png');
  } finally {
    await context.close();
    server.close();
  }
});

test('the Models panel lists stored models and deletes them', { timeout: 600_000 }, async () => {
  const server = await serve();
  const context = await browser.newContext();
  try {
    const page = await openSite(context, server.url);
    await page.waitForFunction(() => document.getElementById('models-panel').dataset.count === '1');
    await page.evaluate(() => { document.getElementById('models-panel').open = true; });
    const row = await page.$eval('#models-list tr', (r) => ({ ...r.dataset, text: r.textContent }));
    assert.match(row.text, /SmolLM2-135M-Instruct\.Q4_1\.gguf/);
    assert.equal(Number(row.bytes), 98362432);
    await page.click('#models-list button.delete');
    await page.waitForFunction(() => document.getElementById('models-panel').dataset.count === '0');
  } finally {
    await context.close();
    server.close();
  }
});
