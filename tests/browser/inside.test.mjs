// The "Inside the model" views on the real default model: cache growth, the next-token table,
// attention weights, Step, decoding without the cache, and the size of an f16 cache.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { useSite, openSite, finished, screenshot, modelConfig, cliIds, ARTIFACTS } from './harness.mjs';

const site = useSite();

const PROMPT = 'The capital of France is';
const kv = (page) => page.$eval('#kv-view', (e) => ({ ...e.dataset }));
const topk = (page) => page.$$eval('#topk tr', (rows) => rows.map((r) => ({ id: Number(r.dataset.tokenId), p: Number(r.dataset.p), chosen: r.dataset.chosen === 'true' })));
const attention = (page) => page.$eval('#attention', (e) => ({ weights: e.dataset.weights ? e.dataset.weights.split(',').map(Number) : [], positions: Number(e.dataset.positions) }));

test('cache growth, top-k, attention and Step follow the engine', { timeout: 900_000 }, async () => {
  const cfg = modelConfig();
  const bytesPerToken = cfg.n_layers * 2 * cfg.n_kv_heads * cfg.head_dim * 4;
  const steps = 6;
  const cli = cliIds(PROMPT, steps + 1);
  const n = cli.summary.prompt_tokens;

  const page = await openSite(site.browser, site.server.url);
  assert.deepEqual(await kv(page), { cachedTokens: '0', capacityTokens: '2048', bytesUsed: '0', bytesAllocated: String(2048 * bytesPerToken), layers: String(cfg.n_layers), ringLayers: '0', ringRows: '', memory: 'wasm', kvPolicy: 'f32', bytesPerPosition: String(bytesPerToken) });
  assert.match(await page.textContent('#gqa'), /× 4 bytes \(f32\)/);
  await page.evaluate(() => { document.getElementById('attention-panel').open = true; });
  await page.fill('#prompt', PROMPT);

  // The first Step prefills the prompt and takes one decode step; each later Step takes one more.
  for (let m = 1; m <= steps; m++) {
    const before = Number((await kv(page)).cachedTokens);
    await page.click('#step');
    const r = await finished(page);
    assert.equal(r.error, '');
    const view = await kv(page);
    const cached = Number(view.cachedTokens);
    assert.equal(cached, n + m, `after ${m} steps`);
    if (m > 1) assert.equal(cached, before + 1, 'one Step adds exactly one cache row');
    assert.equal(Number(view.bytesUsed), (n + m) * bytesPerToken);

    const rows = await topk(page);
    assert.equal(rows.length, 5);
    for (let i = 1; i < rows.length; i++) assert.ok(rows[i - 1].p >= rows[i].p, 'top-k is sorted');
    assert.ok(rows.reduce((a, b) => a + b.p, 0) <= 1 + 1e-6);
    const chosen = rows.filter((x) => x.chosen);
    assert.equal(chosen.length, 1);
    assert.equal(chosen[0].id, rows[0].id, 'greedy: the highlighted row is the most probable');
    assert.equal(chosen[0].id, cli.ids[m - 1], `step ${m} emits the CLI's token`);

    const att = await attention(page);
    assert.equal(att.positions, n + m - 1, 'the query that picked this token saw every earlier position');
    assert.equal(att.weights.length, n + m - 1);
    assert.ok(Math.abs(att.weights.reduce((a, b) => a + b, 0) - 1) < 1e-4);
    assert.ok(att.weights.every((w) => w >= 0));
  }
  const log = await page.$$eval('#step-log li', (li) => li.map((x) => x.textContent));
  assert.equal(log.length, 7);
  assert.match(log[0], /argmax/);
  assert.match(log[3], /cache row/);
  assert.match(await page.textContent('#step-cache'), /one more/);
  await screenshot(page, 'inside-step.png');
  await page.$eval('#kv-view', (e) => e.scrollIntoView());
  await (await page.$('#kv-view')).screenshot({ path: path.join(ARTIFACTS, 'inside-kv-view.png') });
  await (await page.$('#attention-panel')).screenshot({ path: path.join(ARTIFACTS, 'inside-attention.png') });
  await (await page.$('#next-token')).screenshot({ path: path.join(ARTIFACTS, 'inside-topk.png') });
  assert.deepEqual(page.errors, []);
  await page.close();
});

test('decoding without the cache emits the same tokens and is timed per step', { timeout: 900_000 }, async () => {
  const page = await openSite(site.browser, site.server.url);
  await page.fill('#prompt', PROMPT);
  await page.fill('#max-tokens', '8');
  await page.click('#generate');
  const withCache = await finished(page);
  await page.check('#no-cache');
  await page.click('#generate');
  const without = await finished(page);
  assert.equal(without.error, '');
  assert.equal(without.text, withCache.text);
  const t = await page.$eval('#timing', (e) => ({ w: JSON.parse(e.dataset.withCache), wo: JSON.parse(e.dataset.withoutCache) }));
  assert.equal(t.w.length, 7);
  assert.equal(t.wo.length, 7);
  assert.deepEqual(t.w.map(([p]) => p), t.wo.map(([p]) => p), 'the same positions were timed');
  await (await page.$('#timing')).screenshot({ path: path.join(ARTIFACTS, 'inside-timing.png') });
  await page.close();
});

test('an f16 cache (?kv=f16) is sized and described at 2 bytes a value, before and after loading', { timeout: 600_000 }, async () => {
  const cfg = modelConfig();
  const bytesPerToken = cfg.n_layers * 2 * cfg.n_kv_heads * cfg.head_dim * 2;
  const page = await openSite(site.browser, site.server.url, '?kv=f16');
  assert.equal(await page.isHidden('#error'), true, await page.textContent('#error-text'));
  assert.equal((await kv(page)).bytesAllocated, String(2048 * bytesPerToken));
  assert.match(await page.textContent('#gqa'), /× 2 bytes \(f16\)/);
  // The model info line is written from the header alone, before the upload.
  assert.ok((await page.textContent('#model-info')).includes(`f16 KV cache ${(2048 * bytesPerToken / 1048576).toFixed(1)} MB`));
  assert.deepEqual(page.errors, []);
  await page.close();
});
