// The model picker: the build's manifest against the files on disk, what the picker says a model
// needs against `kvscope inspect --json`, Chat on for a model with a chat template and off (with
// the reason) for one without, loading the default model from the picker, and the KV cache view's
// ring layout against a simulation of the ring's writes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import { useSite, openSite, ready, finished, generate, screenshot, ROOT, DIST, cliGreedy } from './harness.mjs';

const site = useSite();
const KVSCOPE = path.join(ROOT, 'target/release/kvscope');
const MODELS = path.join(ROOT, 'www/models');
const DEFAULT = 'SmolLM2-135M-Instruct.Q4_1.gguf';

/** `kvscope inspect --json` of a model file, or null when the CLI cannot read it. */
function cliInspect(file, context) {
  const r = spawnSync(KVSCOPE, ['inspect', file, '--json', '--context', String(context)], { cwd: ROOT, encoding: 'utf8', maxBuffer: 1 << 30 });
  return r.status === 0 ? JSON.parse(r.stdout) : null;
}

/** The tensor data's offset in a GGUF file, as the engine's own reader finds it
 * (`kvscope inspect --json`); the build's manifest has it from post-build.py's reader. */
function ggufDataOffset(file) {
  return JSON.parse(execFileSync(KVSCOPE, ['inspect', file, '--json'], { cwd: ROOT, encoding: 'utf8', maxBuffer: 1 << 30 })).data_offset;
}

const sha256 = (file) => crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
const plan = (page) => page.$eval('#model-plan', (e) => ({ ...e.dataset, text: e.textContent }));

/** Chooses `file` in the picker and waits for its plan (read from the header) or its error. */
async function choose(page, file) {
  const value = await page.$eval('#model-select', (s, f) => [...s.options].find((o) => o.value.endsWith(`/models/${f}`))?.value, file);
  assert.ok(value, `${file} is in the picker`);
  await page.selectOption('#model-select', value);
  await page.waitForFunction((f) => {
    const p = document.getElementById('model-plan').dataset;
    return p.file === f && (p.state === 'ready' || p.state === 'error');
  }, file, { timeout: 120_000 });
  return plan(page);
}

/** Waits until a load from `source` ("disk", "network", "storage") has finished. */
async function loadedFrom(page, sources) {
  await page.waitForFunction((s) => s.includes(document.getElementById('model-info').dataset.loadSource) &&
    document.getElementById('loader').hidden && (/^Ready/.test(document.getElementById('status').textContent) || !document.getElementById('error').hidden),
  sources, { timeout: 180_000 });
}

test('the manifest lists the shipped models with their sizes and hashes, and the picker lists them', { timeout: 300_000 }, async () => {
  const onDisk = fs.readdirSync(MODELS).filter((f) => f.endsWith('.gguf')).sort();
  const manifest = await (await fetch(`${site.server.url}models/manifest.json`)).json();
  assert.deepEqual(manifest.models.map((m) => m.file), onDisk);
  for (const m of manifest.models) {
    const file = path.join(MODELS, m.file);
    assert.equal(m.bytes, fs.statSync(file).size, m.file);
    assert.equal(m.sha256, sha256(file), m.file);
    // header_bytes is where the tensor data starts: post-build.py's reader and the engine's agree.
    assert.equal(m.header_bytes, ggufDataOffset(file), m.file);
  }
  // The manifest is part of the app shell (it is needed offline); the model files are not.
  const sw = fs.readFileSync(path.join(DIST, 'sw.js'), 'utf8');
  assert.match(sw, /"models\/manifest\.json"/);
  assert.doesNotMatch(sw, /\.gguf"/);

  const page = await openSite(site.browser, site.server.url, '', { wait: false });
  try {
    await page.waitForSelector('#model-picker[data-count]');
    const options = await page.$$eval('#model-select optgroup[label="Shipped with this site"] option', (os) => os.map((o) => ({ value: o.value, text: o.textContent })));
    assert.deepEqual(options.map((o) => o.value.split('/').pop()), onDisk);
    for (const [i, m] of manifest.models.entries()) assert.match(options[i].text, new RegExp(`${(m.bytes / 1048576).toFixed(1)} MB`));
    // The default model is chosen.
    assert.match(await page.$eval('#model-select', (s) => s.value), new RegExp(`/models/${DEFAULT.replace(/\./g, '\\.')}$`));
  } finally {
    await page.close();
  }
});

test('the picker shows what each shipped model needs, as `kvscope inspect --json` says, before loading it', { timeout: 600_000 }, async () => {
  const page = await openSite(site.browser, site.server.url);
  try {
    assert.equal(await page.isHidden('#error'), true);
    const files = await page.$$eval('#model-select option', (os) => os.map((o) => o.value.split('/').pop()));
    for (const context of [2048, 1024]) {
      await page.selectOption('#context', String(context));
      for (const file of files) {
        const p = await choose(page, file);
        const cli = cliInspect(path.join(MODELS, file), context);
        if (!cli) {
          // The CLI cannot read it either: the page says so, with the error's kind.
          assert.equal(p.state, 'error', `${file}: ${p.text}`);
          assert.ok(p.name, p.text);
          continue;
        }
        assert.equal(p.state, 'ready', `${file}: ${p.text}`);
        assert.equal(Number(p.context), context);
        assert.equal(Number(p.weightsBytes), cli.model.weights_bytes, file);
        assert.equal(Number(p.kvCacheBytes), cli.model.kv_cache_bytes, file);
        assert.equal(Number(p.totalBytes), cli.model.total_bytes, file);
        assert.match(p.text, new RegExp(`Needs ${(cli.model.total_bytes / 1048576).toFixed(1)} MB`));
        const c = cli.model;
        assert.deepEqual([p.arch, Number(p.layers), Number(p.heads), Number(p.kvHeads), Number(p.vocab), Number(p.slidingWindow)],
          [c.arch, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size, c.sliding_window], file);
        // The rings the page describes add up to the CLI's cache bytes: Σ rows × 2 (K, V) × kv_dim × 4.
        const rings = Number(p.ringLayers);
        const rows = rings * Number(p.ringRows || 0) + (c.n_layers - rings) * context;
        assert.equal(rows * 2 * c.n_kv_heads * c.head_dim * 4, cli.model.kv_cache_bytes, file);
        if (c.sliding_window === 0) assert.equal(rings, 0, file);
        else if (context > c.sliding_window + 32) assert.ok(rings > 0 && rings < c.n_layers, file);
        assert.equal(p.chatTemplate, String('tokenizer.chat_template' in cli.metadata), file);
      }
    }
    await screenshot(page, 'picker-plan.png', { selector: '#model' });
  } finally {
    await page.close();
  }
});

test('Chat is on for the default model and off, with the reason, for a model without a chat template; the picker loads the default again', { timeout: 900_000 }, async () => {
  // The default model with its `tokenizer.chat_template` key renamed (same length, so every
  // offset holds): a model without a template, otherwise the same bytes.
  const bytes = fs.readFileSync(path.join(MODELS, DEFAULT));
  const key = Buffer.from('tokenizer.chat_template');
  const at = bytes.indexOf(key);
  assert.ok(at > 0 && bytes.readBigUInt64LE(at - 8) === BigInt(key.length));
  Buffer.from('test.chat_template_gone').copy(bytes, at);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvscope-'));
  const stripped = path.join(dir, 'no-template.gguf');
  fs.writeFileSync(stripped, bytes);
  // The CLI agrees: no template, so --chat fails; Complete works.
  assert.equal('tokenizer.chat_template' in cliInspect(stripped, 256).metadata, false);
  const chatRun = spawnSync(KVSCOPE, ['generate', '--model', stripped, '--chat', '--prompt', 'hi', '--max-tokens', '1'], { cwd: ROOT, encoding: 'utf8' });
  assert.notEqual(chatRun.status, 0);
  assert.match(chatRun.stderr, /chat_template/);
  const prompt = 'The capital of France is';
  const want = JSON.parse(execFileSync(KVSCOPE, ['generate', '--model', stripped, '--prompt', prompt, '--max-tokens', '4', '--json'], { cwd: ROOT, encoding: 'utf8' }).trim().split('\n').at(-1)).summary;
  const wantChat = cliGreedy('What is a KV cache?', 4, { chat: true });

  const page = await openSite(site.browser, site.server.url);
  try {
    assert.equal(await page.isHidden('#error'), true);
    assert.equal(await page.isDisabled('#chat'), false);
    assert.equal(await page.isHidden('#chat-reason'), true);
    await page.check('#chat');

    await page.setInputFiles('#model-file', stripped);
    await loadedFrom(page, ['disk']);
    assert.equal(await page.isHidden('#error'), true, await page.textContent('#error-text'));
    assert.equal(await page.isDisabled('#chat'), true);
    assert.equal(await page.isChecked('#chat'), false);
    assert.equal(await page.isVisible('#chat-reason'), true);
    assert.match(await page.textContent('#chat-reason'), /no chat template: use Complete/);
    await screenshot(page, 'picker-no-template.png', { selector: '#run' });
    const r = await generate(page, prompt, 4);
    assert.equal(r.error, '');
    assert.equal(r.text, want.text);

    // The picker: choose the default model and load it; Chat comes back as the user left it.
    const value = await page.$eval('#model-select', (s, f) => [...s.options].find((o) => o.value.endsWith(`/models/${f}`)).value, DEFAULT);
    await page.selectOption('#model-select', value);
    await page.click('#load-model');
    await loadedFrom(page, ['storage', 'network']);
    assert.equal(await page.isHidden('#error'), true, await page.textContent('#error-text'));
    assert.match(await page.textContent('#status'), /^Ready/);
    assert.equal(await page.isDisabled('#chat'), false);
    assert.equal(await page.isChecked('#chat'), true);
    assert.equal(await page.isHidden('#chat-reason'), true);
    const c = await generate(page, 'What is a KV cache?', 4);
    assert.equal(c.error, '');
    assert.equal(c.text, wantChat.text);
  } finally {
    await page.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('the KV cache view: a ring layer holds position p in row p mod rows; the default model has no ring', { timeout: 600_000 }, async () => {
  const page = await openSite(site.browser, site.server.url);
  try {
    const cli = cliInspect(path.join(MODELS, DEFAULT), 2048);
    assert.equal(cli.model.sliding_window, 0);
    const r = await generate(page, 'The capital of France is', 4);
    assert.equal(r.error, '');
    const kv = await page.$eval('#kv-view', (e) => ({ ...e.dataset }));
    assert.equal(kv.ringLayers, '0');
    assert.equal(await page.isHidden('#kv-ring'), true);
    // Every layer full: used bytes are cached positions × bytes per position, as before rings.
    assert.equal(Number(kv.bytesUsed), Number(kv.cachedTokens) * (cli.model.kv_cache_bytes / 2048));

    // The view's pure function on synthetic states, against a simulation of the writes.
    const W = 4;
    const st = { n_layers: 3, context: 64, sliding_window: W, layer_rows: [W + 2, W + 2, 64] };
    for (const cached of [0, 1, 5, 6, 7, 10, 13, 64]) {
      const got = await page.evaluate(async ({ st, cached }) => {
        const src = document.querySelector('script[type=module][src$="app.js"]').src;
        const { cacheLayout } = await import(new URL('viz.js', src).href);
        return cacheLayout(st, cached).map((l) => ({ ...l, positions: Array.from(l.positions) }));
      }, { st, cached });
      const want = st.layer_rows.map((rows) => {
        const positions = Array(rows).fill(-1);
        for (let p = 0; p < cached; p++) positions[p % rows] = p;
        const ring = rows < st.context;
        return {
          rows,
          ring,
          positions,
          newest: cached ? positions.indexOf(cached - 1) : -1,
          firstAttended: ring ? Math.max(0, cached - W) : 0,
          overwritten: cached - positions.filter((p) => p >= 0).length,
        };
      });
      assert.deepEqual(got, want, `cached ${cached}`);
    }
    await screenshot(page, 'picker-kv-view.png', { selector: '#kv-view' });
  } finally {
    await page.close();
  }
});
