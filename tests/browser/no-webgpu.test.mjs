// Without WebGPU the page says what is missing and what to do, instead of staying blank.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { serve, launch, screenshot } from './harness.mjs';

test('a browser without WebGPU gets the capability message', { timeout: 120_000 }, async () => {
  const server = await serve();
  const browser = await launch({ webgpu: false });
  try {
    const page = await browser.newPage();
    await page.goto(server.url);
    await page.waitForSelector('#error:not([hidden])', { timeout: 60_000 });
    const msg = await page.textContent('#error-text');
    assert.match(msg, /WebGPU/);
    assert.match(msg, /Chrome|Edge|settings/);
    assert.equal(await page.isDisabled('#generate'), true);
    await screenshot(page, 'page-no-webgpu.png');
  } finally {
    await browser.close();
    server.close();
  }
});
