// The page's views on the real default model: one screen at common desktop sizes, the attention
// matrix and the layers × heads overview against the engine's own weights, the timeline, and a
// flawed KV cache next to the correct one (against the CLI's --flaw).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { useSite, openSite, finished, generate, screenshot, cliIds, recordTokenEvents } from './harness.mjs';

const site = useSite();

// Short prompts and few tokens: SwiftShader decodes about one token a second. On this prompt
// every flaw parts from the correct text within three tokens.
const PROMPT = 'A B C D';

/** Runs `body(page)` on the site (with `query`) in a fresh 1366×768 context that records the
 * engine's token events; no page error may occur. `wait`: until the model is loaded. */
async function withPage(query, wait, body) {
  const context = await site.browser.newContext({ viewport: { width: 1366, height: 768 } });
  try {
    await recordTokenEvents(context);
    const page = await openSite(context, site.server.url, query, { wait });
    await body(page);
    assert.deepEqual(page.errors, []);
  } finally {
    await context.close();
  }
}

const tokenEvents = (page) => page.evaluate(() => window.__tokenEvents);

/** Where each element is against the viewport: {id: {top, bottom, left, right}} and the scroll. */
function placement(page, ids) {
  return page.evaluate((ids) => ({
    scroll: [scrollX, scrollY],
    viewport: [innerWidth, innerHeight],
    boxes: Object.fromEntries(ids.map((id) => {
      const r = document.getElementById(id).getBoundingClientRect();
      return [id, { top: r.top, bottom: r.bottom, left: r.left, right: r.right, height: r.height }];
    })),
  }), ids);
}

test('output, KV cache and next-token table share one screen at 1366×768 and 1920×1080; narrow screens stack', { timeout: 600_000 }, async () => {
  await withPage('', true, async (page) => {
    const r = await generate(page, PROMPT, 3);
    assert.equal(r.error, '');
    for (const [width, height] of [[1366, 768], [1920, 1080]]) {
      await page.setViewportSize({ width, height });
      const p = await placement(page, ['output', 'kv-view', 'topk']);
      assert.deepEqual(p.scroll, [0, 0], 'nothing was scrolled');
      for (const [id, b] of Object.entries(p.boxes)) {
        assert.ok(b.height > 0, `#${id} is shown`);
        assert.ok(b.top >= 0 && b.left >= 0 && b.bottom <= height && b.right <= width, `#${id} at ${width}×${height}: ${JSON.stringify(b)}`);
      }
      assert.equal(await page.locator('#topk tr').count(), 5);
      await screenshot(page, `views-${width}x${height}.png`, { fullPage: false });
    }
    // Motion follows the user's setting.
    const transition = () => page.$eval('#topk .bar', (e) => getComputedStyle(e).transitionDuration);
    assert.notEqual(await transition(), '0s');
    await page.emulateMedia({ reducedMotion: 'reduce' });
    assert.equal(await transition(), '0s');
    // A narrow screen: the model's inside comes below the generation.
    await page.setViewportSize({ width: 700, height: 900 });
    const narrow = await placement(page, ['run', 'inside']);
    assert.ok(narrow.boxes.inside.top >= narrow.boxes.run.bottom, JSON.stringify(narrow.boxes));
  });
});

test('the attention matrix holds the engine\'s weights, one row per query, and the overview every layer × head', { timeout: 600_000 }, async () => {
  await withPage('', true, async (page) => {
    // Opened from the keyboard, as a user without a mouse would.
    await page.focus('#attention-panel > summary');
    await page.keyboard.press('Enter');
    await page.focus('#attention-overview > summary');
    await page.keyboard.press('Enter');
    await page.selectOption('#attention-layer', '3');
    await page.selectOption('#attention-head', '2');
    const r = await generate(page, PROMPT, 3);
    assert.equal(r.error, '');
    const events = await tokenEvents(page);
    const view = await page.evaluate(() => window.kvscopeDebug.attentionMatrix());
    const dims = await page.$eval('#attention-matrix', (e) => ({ rows: Number(e.dataset.rows), cols: Number(e.dataset.cols), layer: e.dataset.layer }));
    const nHeads = events[0].attention.length / events[0].pos;
    const head = (w, n) => w.slice(2 * n, 3 * n);

    // Independently: the prompt's rows from the first event, then each event's query (pos - 1).
    const want = events[0].prompt_attention.map((w, q) => head(w, q + 1));
    for (const ev of events.slice(1)) want[ev.pos - 1] = head(ev.attention, ev.pos);
    const P = events[0].pos;
    assert.equal(want.length, P + events.length - 1);
    assert.deepEqual([view.layer, view.head, dims.layer], [3, 2, '3']);
    assert.deepEqual([dims.rows, dims.cols], [want.length, want.length], 'the causal triangle: one row per query, one column per key');
    assert.equal(view.rows.length, want.length);
    view.rows.forEach((row, q) => {
      assert.equal(row.length, q + 1, `query ${q} attends over keys 0…${q}`);
      row.forEach((w, k) => assert.ok(Math.abs(w - want[q][k]) < 1e-6, `row ${q}, key ${k}: ${w} vs ${want[q][k]}`));
      assert.ok(Math.abs(row.reduce((a, b) => a + b, 0) - 1) < 1e-4, `row ${q} sums to 1`);
    });
    assert.equal(events.at(-1).attention_layers.length, 30 * nHeads * events.at(-1).pos, 'every layer × head for the newest query');

    // The keyboard reads a cell; the overview picks a layer and head for the matrix.
    await page.focus('#attention-matrix');
    await page.keyboard.press('ArrowUp');
    assert.match(await page.textContent('#attention-matrix-caption'), new RegExp(`^Query ${want.length - 2} `));
    await screenshot(page, 'attention-matrix.png', { selector: '#attention-panel' });
    await screenshot(page, 'attention-layers.png', { selector: '#attention-overview' });
    await page.focus('#attention-layers');
    for (const key of ['ArrowDown', 'ArrowRight', 'Enter']) await page.keyboard.press(key);
    assert.deepEqual([await page.inputValue('#attention-layer'), await page.inputValue('#attention-head')], ['4', '3'], 'one layer down and one head right of the one on show');
    assert.equal(await page.$eval('#attention-layers', (e) => Number(e.dataset.keys)), events.at(-1).pos);

    // A Step adds one row: the triangle grows with the cache.
    await page.selectOption('#attention-layer', '3');
    await page.click('#step');
    assert.equal((await finished(page)).error, '');
    const grown = await page.$eval('#attention-matrix', (e) => Number(e.dataset.rows));
    assert.equal(grown, want.length + 1);
  });
});

test('the timeline shows an earlier step\'s cache and next-token table, and returns to live at its end', { timeout: 600_000 }, async () => {
  await withPage('', true, async (page) => {
    const topk = () => page.$$eval('#topk tr', (rows) => rows.map((r) => [r.dataset.tokenId, r.dataset.p, r.dataset.chosen || '']));
    const cached = () => page.$eval('#kv-view', (e) => Number(e.dataset.cachedTokens));
    await page.fill('#prompt', PROMPT);
    const seen = [];
    for (let i = 0; i < 3; i++) {
      await page.click('#step');
      assert.equal((await finished(page)).error, '');
      seen.push({ topk: await topk(), cached: await cached() });
    }
    assert.notDeepEqual(seen[0].topk, seen[2].topk);
    const slider = await page.$eval('#timeline', (e) => ({ min: e.min, max: e.max, value: e.value }));
    assert.deepEqual(slider, { min: '1', max: '3', value: '3' });

    await page.focus('#timeline');
    await page.keyboard.press('Home');
    assert.deepEqual(await topk(), seen[0].topk, 'step 1\'s next-token table');
    assert.equal(await cached(), seen[0].cached);
    assert.equal(await page.$eval('#timeline-label', (e) => e.dataset.live), 'false');
    assert.match(await page.textContent('#timeline-label'), /^step 1 of 3/);
    await screenshot(page, 'timeline.png', { fullPage: false });
    await page.keyboard.press('ArrowRight');
    assert.deepEqual(await topk(), seen[1].topk);
    await page.keyboard.press('End');
    assert.deepEqual(await topk(), seen[2].topk);
    assert.equal(await cached(), seen[2].cached);
    assert.equal(await page.$eval('#timeline-label', (e) => e.dataset.live), 'true');
    assert.match(await page.textContent('#timeline-hint'), /keeps the last \d+ steps/);
  });
});

/** The step (from 1) where two token id lists first differ, or 0. */
const parting = (a, b) => {
  const i = a.findIndex((id, j) => id !== b[j]);
  return i >= 0 ? i + 1 : a.length === b.length ? 0 : Math.min(a.length, b.length) + 1;
};

test('each flaw, from a link: its text differs from the correct run\'s where the CLI\'s does, and why is said', { timeout: 900_000 }, async () => {
  const tokens = 3;
  const correct = cliIds(PROMPT, tokens);
  for (const flaw of ['no-append', 'rope-pos-0', 'same-row']) {
    const cli = cliIds(PROMPT, tokens, { flaw });
    const q = `?flaw=${flaw}&prompt=${encodeURIComponent(PROMPT)}&max_tokens=${tokens}&greedy=1&autostart=1`;
    await withPage(q, false, async (page) => {
      const r = await finished(page);
      assert.equal(r.error, '');
      const flawedText = await page.textContent('#flaw-output');
      assert.equal(r.text, correct.summary.text, `${flaw}: the correct run is the CLI's`);
      assert.equal(flawedText, cli.summary.text, `${flaw}: the flawed run is the CLI's --flaw ${flaw}`);
      assert.notEqual(flawedText, r.text, `${flaw} changes the text`);
      const events = await tokenEvents(page);
      const ids = (f) => events.filter((e) => e.flaw === f).map((e) => e.id);
      assert.deepEqual(ids(flaw), cli.ids);
      assert.deepEqual(ids('none'), correct.ids);
      const step = Number(await page.textContent('#flaw-diverges-at'));
      assert.equal(step, parting(correct.ids, cli.ids), `${flaw}: the CLI's texts part at the same step`);
      assert.ok(step >= 2, 'the prompt is prefilled correctly, so the first token is the same');
      const why = await page.textContent('#flaw-why');
      const want = (await page.evaluate(() => window.kvscopeDebug.flaws())).find((f) => f.name === flaw).why;
      assert.ok(why.includes(want), why);
      for (const id of ['output', 'flaw-output']) assert.equal(await page.locator(`#${id} mark.parted`).count(), 1, `#${id} marks where the texts part`);
      console.log(`# ${flaw}: parts at step ${step}: ${JSON.stringify(r.text)} → ${JSON.stringify(flawedText)}`);
      await screenshot(page, `flaw-${flaw}.png`, { fullPage: false });
    });
  }
});

test('no flaw: the link runs only the correct cache, token for token the CLI\'s', { timeout: 600_000 }, async () => {
  const want = cliIds(PROMPT, 4);
  const q = `?flaw=none&prompt=${encodeURIComponent(PROMPT)}&max_tokens=4&greedy=1&autostart=1`;
  await withPage(q, false, async (page) => {
    const r = await finished(page);
    assert.equal(r.error, '');
    assert.equal(r.text, want.summary.text);
    const events = await tokenEvents(page);
    assert.deepEqual(events.map((e) => e.id), want.ids);
    assert.ok(events.every((e) => e.flaw === 'none'), 'one run, with the correct cache');
    assert.equal(await page.isHidden('#flaw-col'), true);
    assert.equal(await page.isHidden('#flaw-view'), true);
  });
});
