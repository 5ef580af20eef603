// Hostile text never becomes markup, and the Content-Security-Policy holds.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { useSite, openGuarded, finished, screenshot, ROOT } from './harness.mjs';

const XSS = '<img src=x onerror=alert(1)>';
const site = useSite();

test('markup in a prompt, a reply and a model name stays text; the CSP is in force', { timeout: 600_000 }, async () => {
  const { context, page } = await openGuarded(site.browser, site.server.url);
  try {
    const csp = await page.$eval('meta[http-equiv="Content-Security-Policy"]', (m) => m.content);
    assert.match(csp, /default-src 'self'/);
    // No inline script at all (the engine worker starts the wasm module), so none is allowed.
    assert.match(csp, /script-src 'self' 'wasm-unsafe-eval';/);
    assert.match(csp, /worker-src 'self'/);

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
