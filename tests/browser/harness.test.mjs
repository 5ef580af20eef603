// The harness itself: every page a test opens is watched, and an uncaught error or an unhandled
// rejection there is collected for the test (which fails unless it expects them).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { useSite, openSite, expectPageErrors } from './harness.mjs';

const site = useSite();

test('uncaught errors and unhandled rejections in a page are seen (and here expected)', { timeout: 120_000 }, async () => {
  const context = await site.browser.newContext();
  const page = await openSite(context, site.server.url, '', { wait: false });
  expectPageErrors(/thrown on purpose/, /rejected on purpose/);
  await page.evaluate(() => {
    setTimeout(() => { throw new Error('thrown on purpose'); });
    Promise.reject(new Error('rejected on purpose'));
  });
  await page.waitForFunction(() => true, null, { timeout: 1000 }).catch(() => {});
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(page.errors.length, 2, JSON.stringify(page.errors));
  await context.close();
});
