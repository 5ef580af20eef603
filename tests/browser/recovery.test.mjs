// A lost GPU device is recovered without losing the conversation, and Stop works during a long
// prefill; neither breaks the Content-Security-Policy.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { useSite, openGuarded, ready, finished, generate, screenshot } from './harness.mjs';

const site = useSite();

test('a lost GPU device shows a message and a reload button; the conversation is kept', { timeout: 600_000 }, async () => {
  const { context, page } = await openGuarded(site.browser, site.server.url, '?backend=gpu');
  try {
    await page.check('#chat');
    assert.equal((await generate(page, 'hi', 2)).error, '');
    await page.evaluate(() => window.kvscopeDebug.loseDevice());
    await page.fill('#prompt', 'Tell me more.');
    await page.click('#generate');
    await page.waitForSelector('#error:not([hidden])', { timeout: 120_000 });
    assert.match(await page.textContent('#error-text'), /device/i);
    // "Reload engine" is offered because of the error's kind (its JS name), not its words.
    const kind = await page.$eval('#error', (e) => e.dataset.name);
    assert.ok(['DeviceLost', 'Gpu'].includes(kind), `the error's name is ${kind}`);
    assert.equal(await page.isVisible('#reload'), true);
    assert.equal(await page.locator('#transcript .turn').count(), 2, 'the first turn is still on screen');
    assert.equal(await page.inputValue('#prompt'), 'Tell me more.', 'the unsent prompt is kept');
    await screenshot(page, 'recovery-device-lost.png');

    await page.click('#reload');
    await page.waitForSelector('#error', { state: 'hidden', timeout: 60_000 });
    await ready(page);
    assert.equal(await page.isHidden('#error'), true);
    assert.equal(await page.locator('#transcript .turn').count(), 2);
    await page.click('#generate');
    const r = await finished(page);
    assert.equal(r.error, '');
    assert.equal(await page.locator('#transcript .turn').count(), 4);
    assert.deepEqual(await page.evaluate(() => window.__csp), [], 'no CSP violation on the way');
  } finally {
    await context.close();
  }
});

test('Stop during a long prefill takes effect within a chunk', { timeout: 600_000 }, async () => {
  const { context, page } = await openGuarded(site.browser, site.server.url);
  try {
    await page.fill('#prompt', 'The quick brown fox jumps over the lazy dog. '.repeat(40));
    await page.fill('#max-tokens', '50');
    await page.click('#generate');
    await page.waitForTimeout(1500);
    const t0 = Date.now();
    await page.click('#stop');
    const r = await finished(page);
    const ms = Date.now() - t0;
    assert.match(r.status, /stopped/);
    assert.equal(r.error, '');
    assert.ok(ms < 60_000, `stopped after ${ms} ms`);
    await page.uncheck('#chat');
    const again = await generate(page, 'The capital of France is', 2);
    assert.equal(again.error, '');
    assert.equal(again.stats.generatedTokens, '2');
  } finally {
    await context.close();
  }
});
