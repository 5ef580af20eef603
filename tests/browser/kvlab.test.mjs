// The KV-cache lab on the page and through the JavaScript API, on the CPU backend, against the
// native CLI as the oracle: the "Compare caches" table (from a link, ?compare=…) equal to
// `kvscope kv-compare --backend cpu --json` on the same text; a bad policy named in the panel and
// in the load settings with the page still working; `createEngine({kv_policy})`, a per-request
// `kv_policy` refused by name (also as an HTTP 400 through `engine.fetch`) and `engine.kvCompare`;
// and the KV-cache view marking the evicted rows and the sinks of `sink-2-window-6`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { useSite, openSite, generate, screenshot, ROOT } from './harness.mjs';

const site = useSite();
const MODEL = 'www/models/SmolLM2-135M-Instruct.Q4_1.gguf';
// About 40 tokens: 39 positions compared, free generation from the first 32.
const TEXT = 'The lighthouse keeper climbed the narrow stairs every evening at dusk. He trimmed the wick, polished the great lens, and watched the beam sweep across the dark water below.';

/** The CLI's comparison: `kvscope kv-compare --backend cpu --json` (its last line). */
function cliCompare(policies, text = TEXT) {
  const args = ['kv-compare', '--model', MODEL, '--text', text, '--policies', policies, '--backend', 'cpu', '--json'];
  const out = execFileSync(path.join(ROOT, 'target/release/kvscope'), args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  return JSON.parse(out.trim().split('\n').at(-1));
}

/** The CLI's greedy completion with a cache policy. */
function cliGenerate(prompt, maxTokens, policy) {
  const args = ['generate', '--model', MODEL, '--prompt', prompt, '--max-tokens', String(maxTokens), '--backend', 'cpu', '--kv-policy', policy, '--json'];
  const out = execFileSync(path.join(ROOT, 'target/release/kvscope'), args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  return JSON.parse(out.trim().split('\n').at(-1)).summary;
}

/** The CLI's refusal of cache policy `policy` on `backend` (its one-line error), or null when it
 * runs it. */
function cliRefusal(policy, backend) {
  const args = ['generate', '--model', MODEL, '--prompt', 'hi', '--max-tokens', '1', '--backend', backend, '--kv-policy', policy];
  try {
    execFileSync(path.join(ROOT, 'target/release/kvscope'), args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, CI: '1' } });
    return null;
  } catch (e) {
    return String(e.stderr).trim().split('\n').at(-1).replace(/^kvscope: /, '');
  }
}

/** `got` within `rel` (relative) or `abs` of `want`. */
function close(got, want, what, { rel = 1e-3, abs = 1e-5 } = {}) {
  assert.ok(Math.abs(got - want) <= Math.max(abs, rel * Math.abs(want)), `${what}: ${got} vs the CLI's ${want}`);
}

/** A policy's figures against the CLI's: bytes, positions and agreement exact, KL and
 * perplexity within `rel` (wasm's SIMD sums and the native ones add in another order; in a Q8_0
 * or Q4_0 cache a value that the two put on either side of half a step rounds to another
 * integer, so those move a little more: 0.2% in perplexity on this text). */
function sameFigures(got, want, rel = 1e-3) {
  assert.equal(got.name, want.name);
  for (const k of ['cache_bytes', 'bytes_per_position', 'positions_held', 'top1_agreement', 'first_divergence']) assert.equal(got[k], want[k], `${want.name}: ${k}`);
  close(got.mean_kl, want.mean_kl, `${want.name}: mean KL`, { rel: 1e-2, abs: 1e-4 });
  close(got.perplexity, want.perplexity, `${want.name}: perplexity`, { rel });
}

test('?compare= runs the lab on the CPU backend: the table, chart and free texts equal the CLI\'s kv-compare', { timeout: 900_000 }, async () => {
  const want = cliCompare('f16,window-8');
  const query = `?backend=cpu&compare=f16,window-8&compare_text=${encodeURIComponent(TEXT)}`;
  const page = await openSite(site.browser, site.server.url, query);
  await page.waitForSelector('#kvlab[data-state=done], #kvlab[data-state=error]', { timeout: 600_000 });
  const got = await page.evaluate(() => ({
    panel: { ...document.getElementById('kvlab').dataset },
    error: document.getElementById('kvlab-error').hidden ? '' : document.getElementById('kvlab-error').textContent,
    rows: [...document.querySelectorAll('#kvlab-rows tr')].map((r) => ({ ...r.dataset, cells: [...r.cells].map((c) => c.textContent) })),
    texts: [...document.querySelectorAll('.kvlab-free')].map((b) => ({
      ...b.dataset,
      exact: b.querySelector('mark[data-role=exact]')?.textContent ?? null,
      policy: b.querySelector('mark[data-role=policy]')?.textContent ?? null,
    })),
    series: document.getElementById('kvlab-chart').dataset.series,
  }));
  assert.equal(got.error, '');
  assert.equal(got.panel.backend, 'cpu');
  assert.equal(Number(got.panel.positions), want.positions);
  assert.equal(Number(got.panel.freeSteps), want.free_steps);
  assert.equal(got.rows.length, 2);
  assert.equal(got.series, '2');
  got.rows.forEach((r, i) => sameFigures({
    name: r.policy,
    cache_bytes: Number(r.cacheBytes),
    bytes_per_position: Number(r.bytesPerPosition),
    positions_held: Number(r.positionsHeld),
    top1_agreement: Number(r.top1),
    first_divergence: r.firstDivergence === '' ? null : Number(r.firstDivergence),
    mean_kl: Number(r.meanKl),
    perplexity: Number(r.perplexity),
  }, want.policies[i]));
  // window-8 holds 8 positions of the f32 cache's 40: 20.0% of its bytes.
  assert.equal(got.rows[1].cells[2], `${((100 * want.policies[1].cache_bytes) / ((want.positions + 1) * want.policies[0].bytes_per_position * 2)).toFixed(1)}%`);
  // The first divergent token, in both texts, is the CLI's.
  got.texts.forEach((t, i) => {
    const p = want.policies[i];
    assert.equal(t.policy === null ? null : t.policy, p.first_divergence === null ? null : p.free.pieces[p.first_divergence]);
    if (p.first_divergence !== null) assert.equal(t.exact, want.reference.pieces[p.first_divergence]);
  });
  assert.ok(want.policies[1].first_divergence !== null, 'window-8 leaves the exact cache\'s text');
  await screenshot(page, 'kvlab-compare.png', { selector: '#kvlab' });
  assert.deepEqual(page.errors, []);
  await page.close();
});

test('a bad policy is named in the lab and in the load settings, and the page still generates', { timeout: 600_000 }, async () => {
  const page = await openSite(site.browser, site.server.url, '?backend=cpu');
  await page.click('#kvlab summary');
  await page.fill('#kvlab-text', TEXT);
  await page.fill('#kvlab-more', 'window-0');
  await page.click('#kvlab-run');
  await page.waitForSelector('#kvlab[data-state=error]');
  const err = await page.$eval('#kvlab-error', (e) => ({ text: e.textContent, name: e.dataset.name, hidden: e.hidden }));
  assert.equal(err.hidden, false);
  assert.equal(err.name, 'InvalidInput');
  assert.match(err.text, /`window-0`: a window of 0 positions holds nothing .*sink-S-window-N/);
  // Cancel ends a running comparison; the panel says so.
  await page.fill('#kvlab-more', '');
  await page.click('#kvlab-run');
  await page.waitForSelector('#kvlab[data-state=running]');
  await page.click('#kvlab-cancel');
  await page.waitForSelector('#kvlab[data-state=cancelled]', { timeout: 300_000 });
  assert.equal(await page.$eval('#kvlab-error', (e) => e.hidden), true);
  // The load settings: the model plan says why, by the engine's words; Load keeps the model.
  await page.selectOption('#kv-policy', 'window');
  await page.fill('#kv-n', '0');
  await page.waitForSelector('#model-plan[data-state=error]');
  assert.match(await page.textContent('#model-plan'), /`window-0`: a window of 0 positions/);
  await page.click('#load-model');
  await page.waitForFunction(() => !document.getElementById('error').hidden);
  assert.match(await page.textContent('#error-text'), /window-0/);
  assert.match(await page.textContent('#status'), /previous model is still loaded/);
  const r = await generate(page, 'The capital of France is', 3);
  assert.ok(r.text.length > 0, 'the loaded model still generates');
  assert.deepEqual(page.errors, []);
  await page.close();
});

test('on the GPU backend, the lab shows the engine\'s refusal of each policy the GPU does not run, as the CLI words it', { timeout: 600_000 }, async (t) => {
  const refusals = ['h2o-8', 'sink-2-window-6', 'q4_0'].map((p) => [p, cliRefusal(p, 'gpu')]).filter(([, e]) => e);
  if (refusals.length === 0) {
    t.skip('the GPU backend runs every policy tried: nothing to refuse');
    return;
  }
  const names = refusals.map(([p]) => p).join(',');
  const page = await openSite(site.browser, site.server.url, `?backend=gpu&compare=${names}&compare_backend=gpu&compare_text=${encodeURIComponent(TEXT)}`);
  await page.waitForSelector('#kvlab[data-state=done], #kvlab[data-state=error]', { timeout: 300_000 });
  const shown = await page.$eval('#kvlab-error', (e) => ({ text: e.textContent, name: e.dataset.name, hidden: e.hidden }));
  assert.equal(shown.hidden, false);
  for (const [, e] of refusals) assert.ok(shown.text.includes(e), `${shown.text}\n does not say: ${e}`);
  assert.equal(await page.$eval('#kvlab-run', (b) => b.disabled), false, 'the lab can run again');
  assert.deepEqual(page.errors, []);
  await page.close();
});

test('createEngine({kv_policy}), a per-request kv_policy and engine.kvCompare through the JavaScript API equal the CLI', { timeout: 900_000 }, async () => {
  const prompt = 'The capital of France is';
  const wantText = cliGenerate(prompt, 4, 'q8_0').text;
  const want = cliCompare('q8_0');
  const page = await site.browser.newPage();
  const base = `${site.server.url}__test/`;
  await page.route(`${base}page.html`, (route) => route.fulfill({ contentType: 'text/html', body: '<!doctype html><title>kvlab</title>' }));
  await page.goto(`${base}page.html`);
  const got = await page.evaluate(async ({ prompt, TEXT }) => {
    const { createEngine } = await import(new URL('../js/kvscope.js', location.href).href);
    const model = '../models/SmolLM2-135M-Instruct.Q4_1.gguf';
    const out = {};
    const refusal = (e) => ({ name: e.name, message: e.message, param: e.param ?? null, type: e.constructor.name });
    out.badLoad = await createEngine({ model, context: 256, backend: 'cpu', kv_policy: 'q5_0' }).then(() => null, refusal);
    const engine = await createEngine({ model, context: 256, backend: 'cpu', kv_policy: 'q8_0' });
    out.policy = engine.state().kv_policy;
    const c = await engine.completions.create({ prompt, max_tokens: 4, temperature: 0, kv_policy: 'q8_0' });
    out.text = c.choices[0].text;
    out.otherPolicy = await engine.completions.create({ prompt, max_tokens: 4, kv_policy: 'f16' }).then(() => null, refusal);
    const res = await engine.fetch('https://kvscope.invalid/v1/completions', {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'kvscope', prompt, max_tokens: 2, kv_policy: 'f32' }),
    });
    out.http = { status: res.status, body: await res.json() };
    out.comparison = await engine.kvCompare({ text: TEXT, policies: ['q8_0'] });
    out.badCompare = await engine.kvCompare({ text: TEXT, policies: ['window-0'] }).then(() => null, refusal);
    await engine.close();
    return out;
  }, { prompt, TEXT });
  assert.equal(got.badLoad.name, 'InvalidInput');
  assert.match(got.badLoad.message, /`q5_0`: unknown policy.*window-N/);
  assert.equal(got.policy, 'q8_0');
  assert.equal(got.text, wantText);
  assert.equal(got.otherPolicy.param, 'kv_policy');
  assert.match(got.otherPolicy.message, /chosen at load.*`q8_0`, not `f16`/);
  assert.equal(got.http.status, 400);
  assert.equal(got.http.body.error.param, 'kv_policy');
  assert.equal(got.comparison.positions, want.positions);
  assert.equal(got.comparison.backend, 'cpu');
  assert.deepEqual(got.comparison.refused, []);
  sameFigures(got.comparison.policies[0], want.policies[0], 1e-2);
  assert.deepEqual(got.comparison.reference.ids, want.reference.ids);
  assert.equal(got.comparison.prefix_text, want.prefix_text);
  assert.match(got.badCompare.message, /`window-0`: a window of 0/);
  await page.close();
});

test('the KV-cache view marks the sinks and the evicted rows of sink-2-window-6', { timeout: 600_000 }, async () => {
  const page = await openSite(site.browser, site.server.url, '?backend=cpu&kv_policy=sink-2-window-6');
  assert.equal(await page.inputValue('#kv-policy'), 'sink-window');
  assert.equal(await page.textContent('#kv-policy-name'), 'sink-2-window-6');
  const r = await generate(page, 'A B C D E F', 6);
  assert.equal(r.error, '');
  const view = await page.$eval('#kv-view', (v) => ({ ...v.dataset, legend: document.getElementById('kv-policy-legend').textContent }));
  const cached = Number(view.cachedTokens);
  assert.ok(cached > 8, `${cached} positions cached`);
  const range = (a, b) => Array.from({ length: b - a }, (_, i) => a + i).join(',');
  assert.equal(view.kvPolicy, 'sink-2-window-6');
  assert.equal(view.sinks, '0,1');
  assert.equal(view.held, `0,1,${range(cached - 6, cached)}`);
  assert.equal(view.evicted, range(2, cached - 6));
  assert.match(view.legend, /sink-2-window-6: the first 2 positions .* the last 6/);
  assert.match(view.legend, new RegExp(`holds 8 of ${cached} positions`));
  // An f32 cache of SmolLM2: 30 layers × 2 × 192 values × 4 bytes a position.
  assert.equal(view.bytesPerPosition, String(30 * 2 * 192 * 4));
  await screenshot(page, 'kvlab-kv-view.png', { selector: '#kv-view' });
  assert.deepEqual(page.errors, []);
  await page.close();
});
