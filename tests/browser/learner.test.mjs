// The learner's walk through the page, at a laptop's 1366×768 and at 700 px wide: generate from a
// link, open every panel, Step (the attention matrix gains one row per Step, whenever its panel
// was opened), move the timeline back and forth, run each teaching flaw. The harness fails the
// test on any uncaught page error or unhandled rejection along the way.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { useSite, openSite, finished, screenshot, ready } from './harness.mjs';

const site = useSite();
const LINK = `?prompt=${encodeURIComponent('The capital of France is')}&max_tokens=6&greedy=1&autostart=1`;

const matrixRows = (page) => page.$eval('#attention-matrix', (c) => Number(c.dataset.rows));
const cached = (page) => page.$eval('#kv-view', (e) => Number(e.dataset.cachedTokens));

async function step(page) {
  await page.click('#step');
  const r = await finished(page);
  assert.equal(r.error, '', 'Step fails with no error');
}

/** Drags the timeline to `value` as a user would (an input event), and returns the step on show. */
async function slide(page, value) {
  await page.$eval('#timeline', (s, v) => {
    s.value = String(v);
    s.dispatchEvent(new Event('input', { bubbles: true }));
  }, value);
  return page.$eval('#inside', (e) => Number(e.dataset.step));
}

async function walk(page, tag) {
  // Every view drawn with its panel opened before anything ran: nothing to show, no error.
  await page.waitForSelector('#output[data-done="true"]', { timeout: 540_000 });
  const first = await finished(page);
  assert.equal(first.error, '');
  assert.ok(first.text.length > 0, 'the link generated text');

  // Open every panel, in page order, with the mouse on its summary.
  for (const id of await page.$$eval('details', (ds) => ds.map((d) => d.id).filter(Boolean))) {
    if (await page.isVisible(`#${id} > summary`)) {
      if (!(await page.$eval(`#${id}`, (d) => d.open))) await page.click(`#${id} > summary`);
    } else {
      await page.$eval(`#${id}`, (d) => { d.open = true; });
    }
  }
  await page.$eval('#bench', (b) => { b.hidden = false; });

  // The matrix was not read during the link's run: each Step now adds exactly one row.
  let rows = await matrixRows(page);
  for (let i = 0; i < 3; i++) {
    const before = await cached(page);
    await step(page);
    assert.equal(await cached(page), before + 1, 'one Step, one cache row');
    const now = await matrixRows(page);
    assert.equal(now, rows + 1, `${tag}: Step ${i + 1} adds one matrix row`);
    rows = now;
  }
  const m = await page.evaluate(() => window.kvscopeDebug.attentionMatrix());
  const read = m.rows.filter(Boolean);
  assert.equal(read.length, 3, 'three rows read, one per Step');
  for (const r of read) assert.ok(Math.abs(r.reduce((a, b) => a + b, 0) - 1) < 1e-3, 'a row of weights sums to 1');
  await screenshot(page, `learner-${tag}-steps.png`, { fullPage: false });

  // The timeline back to its first step, through the middle, and live again.
  const { min, max } = await page.$eval('#timeline', (s) => ({ min: Number(s.min), max: Number(s.max) }));
  assert.ok(max > min, 'the timeline kept several steps');
  assert.equal(await slide(page, min), min);
  assert.equal(await page.$eval('#timeline-label', (e) => e.dataset.live), 'false');
  assert.equal(await slide(page, Math.floor((min + max) / 2)), Math.floor((min + max) / 2));
  assert.equal(await slide(page, max), max);
  assert.equal(await page.$eval('#timeline-label', (e) => e.dataset.live), 'true');

  // Each teaching flaw, run beside the correct cache.
  const flaws = await page.$$eval('#flaw option', (os) => os.map((o) => o.value).filter((v) => v !== 'none'));
  assert.ok(flaws.length >= 3, 'the flaws are offered');
  await page.fill('#max-tokens', '3');
  for (const flaw of flaws) {
    await page.selectOption('#flaw', flaw);
    await page.click('#generate');
    const r = await finished(page);
    assert.equal(r.error, '', `${flaw}: no error`);
    assert.equal(await page.$eval('#flaw-view', (v) => v.dataset.flaw), flaw);
  }
  await page.selectOption('#flaw', 'none');
  await screenshot(page, `learner-${tag}-flaws.png`);
}

for (const [tag, viewport] of [['1366', { width: 1366, height: 768 }], ['700', { width: 700, height: 900 }]]) {
  test(`the learner's walk at ${viewport.width} px: link, every panel, Step, timeline, each flaw, no page error`, { timeout: 900_000 }, async () => {
    const context = await site.browser.newContext({ viewport });
    try {
      // Panels opened before the first run must draw nothing, without an error.
      const early = await openSite(context, site.server.url, '', { wait: false });
      await early.evaluate(() => document.querySelectorAll('details').forEach((d) => { d.open = true; }));
      await ready(early);
      await early.close();
      const page = await openSite(context, site.server.url, LINK, { wait: false });
      await walk(page, tag);
    } finally {
      await context.close();
    }
  });
}
