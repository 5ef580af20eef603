// The built site in a real browser: the wasm engine finds the WebGPU adapter, loads the default
// model, and its greedy tokens are the native CLI's.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { serve, launch, ROOT, ARTIFACTS } from './harness.mjs';

const PROMPT = 'The capital of France is';
const TOKENS = 6;

test('the page runs the engine on WebGPU and matches the CLI', { timeout: 600_000 }, async () => {
  const cli = execFileSync(path.join(ROOT, 'target/release/kvscope'),
    ['generate', '--prompt', PROMPT, '--max-tokens', String(TOKENS), '--backend', 'cpu', '--json'], { cwd: ROOT, encoding: 'utf8' });
  const expected = JSON.parse(cli.trim().split('\n').at(-1)).summary.text;

  const server = await serve();
  const browser = await launch();
  try {
    const page = await browser.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(server.url);
    await page.waitForFunction(() => /^GPU: /.test(document.getElementById('status').textContent), null, { timeout: 120_000 });
    await page.fill('#prompt', PROMPT);
    await page.fill('#max-tokens', String(TOKENS));
    await page.click('#generate');
    await page.waitForFunction(() => ['Done', 'Failed'].includes(document.getElementById('status').textContent), null, { timeout: 540_000 });
    const error = await page.$eval('#error', (e) => (e.hidden ? '' : e.textContent));
    assert.equal(error, '', 'the page reported an error');
    assert.equal(await page.textContent('#output'), expected);
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: path.join(ARTIFACTS, 'smoke.png'), fullPage: true });
    console.log('page:', await page.textContent('#status'), '|', await page.textContent('#stats'));
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
    server.close();
  }
});
