// Hostile text never becomes markup, the Content-Security-Policy holds, a lost GPU device is
// recovered without losing the conversation, and Stop works during a long prefill.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { useSite, openSite, ready, finished, screenshot, ROOT } from './harness.mjs';

const XSS = '<img src=x onerror=alert(1)>';
const site = useSite();

/** A page that records dialogs and CSP violations. */
async function guarded(query = '') {
  const context = await site.browser.newContext();
  await context.addInitScript(() => {
    window.__csp = [];
    document.addEventListener('securitypolicyviolation', (e) => window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`));
  });
  const page = await openSite(context, site.server.url, query);
  page.dialogs = [];
  page.on('dialog', (d) => { page.dialogs.push(d.message()); d.dismiss(); });
  return { context, page };
}

test('markup in a prompt, a reply and a model name stays text; the CSP is in force', { timeout: 600_000 }, async () => {
  const { context, page } = await guarded();
  try {
    const csp = await page.$eval('meta[http-equiv="Content-Security-Policy"]', (m) => m.content);
    assert.match(csp, /default-src 'self'/);
    assert.match(csp, /script-src 'self' 'wasm-unsafe-eval' 'sha256-/);

    await page.check('#chat');
    await page.fill('#prompt', `Repeat this exactly: ${XSS}`);
    await page.fill('#max-tokens', '3');
    await page.click('#generate');
    const r = await finished(page);
    assert.equal(r.error, '');
    assert.equal(await page.locator('#transcript img, #output img, #topk img').count(), 0);
    assert.ok((await page.textContent('#transcript')).includes(XSS), 'the prompt is shown as text');

    // A model whose name is markup (same length as the real name, so every offset stays valid).
    const bytes = fs.readFileSync(path.join(ROOT, 'www/models/SmolLM2-135M-Instruct.Q4_1.gguf'));
    const name = Buffer.from('Smollm2 135M 8k Lc100K Mix1 Ep2');
    const at = bytes.indexOf(name);
    assert.ok(at > 0);
    const evil = Buffer.from(XSS.padEnd(name.length, ' '));
    evil.copy(bytes, at);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvscope-'));
    const file = path.join(dir, `${XSS}.gguf`);
    fs.writeFileSync(file, bytes);
    await page.setInputFiles('#model-file', file);
    await page.waitForFunction((x) => document.getElementById('status').textContent.startsWith(`Ready: ${x}`), XSS, { timeout: 180_000 });
    const infoText = await page.textContent('#model-info');
    assert.ok(infoText.includes(XSS), infoText);
    assert.equal(await page.locator('img').count(), 0);
    assert.deepEqual(page.dialogs, []);
    assert.deepEqual(await page.evaluate(() => window.__csp), [], 'no CSP violation in normal use');
    await screenshot(page, 'security-markup.png');
  } finally {
    await context.close();
  }
});

test('a lost GPU device shows a message and a reload button; the conversation is kept', { timeout: 600_000 }, async () => {
  const { context, page } = await guarded();
  try {
    await page.check('#chat');
    await page.fill('#max-tokens', '2');
    await page.fill('#prompt', 'hi');
    await page.click('#generate');
    assert.equal((await finished(page)).error, '');
    await page.evaluate(() => window.kvscopeDebug.loseDevice());
    await page.fill('#prompt', 'Tell me more.');
    await page.click('#generate');
    await page.waitForSelector('#error:not([hidden])', { timeout: 120_000 });
    assert.match(await page.textContent('#error-text'), /device/i);
    assert.equal(await page.isVisible('#reload'), true);
    assert.equal(await page.locator('#transcript .turn').count(), 2, 'the first turn is still on screen');
    assert.equal(await page.inputValue('#prompt'), 'Tell me more.', 'the unsent prompt is kept');
    await screenshot(page, 'security-device-lost.png');

    await page.click('#reload');
    await ready(page);
    assert.equal(await page.isHidden('#error'), true);
    assert.equal(await page.locator('#transcript .turn').count(), 2);
    await page.click('#generate');
    const r = await finished(page);
    assert.equal(r.error, '');
    assert.equal(await page.locator('#transcript .turn').count(), 4);
  } finally {
    await context.close();
  }
});

test('Stop during a long prefill takes effect within a chunk', { timeout: 600_000 }, async () => {
  const { context, page } = await guarded();
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
    await page.fill('#prompt', 'The capital of France is');
    await page.fill('#max-tokens', '2');
    await page.click('#generate');
    const again = await finished(page);
    assert.equal(again.error, '');
    assert.equal(again.stats.generatedTokens, '2');
  } finally {
    await context.close();
  }
});
