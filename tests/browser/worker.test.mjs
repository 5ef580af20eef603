// The engine worker: the backend the page chooses (and ?backend= overriding it), a page that
// keeps drawing frames during a long prefill, Stop on the CPU backend, and the OpenAI-style API
// (kvscope.js) against the CLI's greedy text.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { useSite, openSite, finished, generate, cliGreedy, screenshot } from './harness.mjs';

const site = useSite();

const backendOf = (page) => page.$eval('#backend', (e) => ({ ...e.dataset, text: e.textContent }));

test('on SwiftShader the page chooses the CPU and says why; ?backend=gpu gets the GPU', { timeout: 600_000 }, async () => {
  const page = await openSite(site.browser, site.server.url);
  const b = await backendOf(page);
  assert.equal(b.backend, 'cpu');
  assert.equal(b.reason, 'software');
  assert.match(b.text, /the only WebGPU adapter is software \(.*swiftshader.*\), slower than the CPU path here/i);
  assert.match(await page.textContent('#status'), /^Ready: .* on cpu$/);
  assert.match(await page.textContent('#model-info'), /MB of wasm memory/);
  assert.match(await page.textContent('#kv-bytes'), /in wasm memory \(the CPU backend\), not GPU memory/);
  await page.close();

  const gpu = await openSite(site.browser, site.server.url, '?backend=gpu');
  const g = await backendOf(gpu);
  assert.equal(g.backend, 'gpu');
  assert.equal(g.reason, 'requested');
  assert.match(g.text, /chosen by \?backend=gpu/);
  assert.match(await gpu.textContent('#status'), /^Ready: .* on gpu: /);
  assert.match(await gpu.textContent('#model-info'), /MB of GPU memory/);
  assert.match(await gpu.textContent('#kv-bytes'), /allocated in GPU memory/);
  await gpu.close();
});

test('the page keeps drawing frames while the worker prefills a long prompt, and Stop ends it', { timeout: 600_000 }, async () => {
  const page = await openSite(site.browser, site.server.url, '?backend=cpu');
  assert.equal((await backendOf(page)).reason, 'requested');
  // Frames drawn while the engine runs, and the longest gap between two of them.
  await page.evaluate(() => {
    const f = (window.__frames = { count: 0, maxGap: 0, last: performance.now(), on: true });
    const tick = (t) => {
      f.maxGap = Math.max(f.maxGap, t - f.last);
      f.last = t;
      f.count += 1;
      if (f.on) requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
  });
  const t0 = Date.now();
  const r = await generate(page, 'The quick brown fox jumps over the lazy dog. '.repeat(15), 1);
  const ms = Date.now() - t0;
  const frames = await page.evaluate(() => { window.__frames.on = false; return window.__frames; });
  assert.equal(r.error, '');
  console.log(`# prefill of ${r.stats.promptTokens} tokens: ${ms} ms, ${frames.count} frames, longest gap ${frames.maxGap.toFixed(0)} ms`);
  // A blocked page thread would show one gap as long as the prefill.
  assert.ok(ms > 1000, `the prefill took ${ms} ms: too short to tell a blocked page from a free one`);
  assert.ok(frames.maxGap < 250, `a ${frames.maxGap} ms gap between frames`);
  assert.ok(frames.count > ms / 100, `${frames.count} frames in ${ms} ms`);

  // Stop mid-generation on the CPU backend.
  await page.fill('#prompt', 'Once upon a time');
  await page.fill('#max-tokens', '400');
  await page.click('#generate');
  await page.waitForFunction(() => document.getElementById('output').textContent.length > 0, null, { timeout: 120_000 });
  await page.click('#stop');
  const stopped = await finished(page);
  assert.match(stopped.status, /stopped/);
  assert.ok(Number(stopped.stats.generatedTokens) < 40, `generated ${stopped.stats.generatedTokens}`);
  assert.equal((await generate(page, 'The capital of France is', 2)).stats.generatedTokens, '2');
  await page.close();
});

test('the OpenAI-style API streams the CLI\'s greedy text; the whole answer matches with usage', { timeout: 600_000 }, async () => {
  const page = await openSite(site.browser, site.server.url, 'example/', { wait: false });
  // The example page itself: loads through the API and says so.
  await page.waitForFunction(() => /^Ready/.test(document.getElementById('status').textContent), null, { timeout: 180_000 });
  const question = 'hi';
  const prompt = 'The capital of France is';
  const chat = cliGreedy(question, 8, { chat: true });
  const plain = cliGreedy(prompt, 8);
  const got = await page.evaluate(async ({ question, prompt }) => {
    const { createEngine } = await import(new URL('../js/kvscope.js', location.href).href);
    const engine = await createEngine({ model: '../models/SmolLM2-135M-Instruct.Q4_1.gguf', context: 512, backend: 'cpu' });
    const messages = [{ role: 'user', content: question }];
    const chunks = [];
    for await (const c of await engine.chat.completions.create({ messages, stream: true, max_tokens: 8, temperature: 0 })) chunks.push(c);
    const whole = await engine.chat.completions.create({ messages, max_tokens: 8, temperature: 0 });
    const completion = await engine.completions.create({ prompt, max_tokens: 8, temperature: 0 });
    // Leaving the loop stops the engine; the next request still runs.
    let seen = 0;
    for await (const c of await engine.chat.completions.create({ messages, stream: true, max_tokens: 200, temperature: 0 })) {
      if (c.choices[0].delta.content && ++seen === 2) break;
    }
    const afterBreak = engine.state().cached_tokens;
    // An aborted request rejects with AbortError.
    const abort = new AbortController();
    let aborted = '';
    try {
      for await (const c of await engine.chat.completions.create({ messages, stream: true, max_tokens: 200, temperature: 0, signal: abort.signal })) {
        if (c.choices[0].delta.content) abort.abort();
      }
    } catch (e) {
      aborted = e.name;
    }
    const bad = await engine.chat.completions.create({ messages: [] }).then(() => '', (e) => e.message);
    const state = engine.state();
    await engine.close();
    return { chunks, whole, completion, afterBreak, aborted, bad, state };
  }, { question, prompt });

  const text = got.chunks.map((c) => c.choices[0]?.delta.content || '').join('');
  assert.equal(text, chat.text);
  for (const c of got.chunks) {
    assert.equal(c.object, 'chat.completion.chunk');
    assert.equal(c.id, got.chunks[0].id);
    assert.match(c.id, /^chatcmpl-/);
    assert.equal(typeof c.created, 'number');
  }
  assert.equal(got.chunks[0].choices[0].delta.role, 'assistant');
  assert.equal(got.chunks.at(-1).choices[0].finish_reason, chat.stop === 'eos' ? 'stop' : 'length');
  assert.ok(got.chunks.slice(0, -1).every((c) => c.choices[0].finish_reason === null));

  assert.equal(got.whole.object, 'chat.completion');
  assert.deepEqual(got.whole.choices[0].message, { role: 'assistant', content: chat.text, refusal: null });
  assert.equal(got.whole.choices[0].finish_reason, chat.stop === 'eos' ? 'stop' : 'length');
  assert.deepEqual(got.whole.usage, { prompt_tokens: chat.prompt_tokens, completion_tokens: chat.generated_tokens, total_tokens: chat.prompt_tokens + chat.generated_tokens });

  assert.equal(got.completion.object, 'text_completion');
  assert.equal(got.completion.choices[0].text, plain.text);
  assert.deepEqual(got.completion.usage, { prompt_tokens: plain.prompt_tokens, completion_tokens: plain.generated_tokens, total_tokens: plain.prompt_tokens + plain.generated_tokens });

  assert.ok(got.afterBreak < chat.prompt_tokens + 20, `${got.afterBreak} cached after a break at the second token`);
  assert.equal(got.aborted, 'AbortError');
  assert.match(got.bad, /messages must be a non-empty array/);
  assert.equal(got.state.backend, 'cpu');
  await screenshot(page, 'api-example.png');
  assert.deepEqual(page.errors, []);
  await page.close();
});
