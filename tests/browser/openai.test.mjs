// OpenAI's own JavaScript client (the `openai` npm package) in the page, calling kvscope through
// `engine.fetch`: streamed and whole answers equal to the CLI's, `stop`, `logprobs` equal to the
// CLI's next-token table, a JSON schema whose sampled outputs all validate (Ajv, 20 seeds at
// temperature 1), a tool call read from a Qwen 2.5 template's output, and bad requests refused
// by name as HTTP 400s with the engine answering after.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { Ajv } from 'ajv';
import { useSite, screenshot, ROOT } from './harness.mjs';

const site = useSite();
const QWEN_TEMPLATE = fs.readFileSync(path.join(ROOT, 'tests/data/qwen2.5-chat-template.jinja'), 'utf8');

/** The CLI's JSON lines for `args` (CPU backend): token events and the summary. */
function cli(args) {
  const out = execFileSync(path.join(ROOT, 'target/release/kvscope'), ['generate', '--backend', 'cpu', '--json', ...args], { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  const lines = out.trim().split('\n').map((l) => JSON.parse(l));
  return { events: lines.filter((l) => 'id' in l), summary: lines.at(-1).summary };
}

/** A page of the site's origin (under /__test/) that can import the `openai` package from
 * node_modules. */
async function testPage() {
  const page = await site.browser.newPage();
  const base = `${site.server.url}__test/`;
  await page.route(`${base}**`, (route) => {
    const rel = new URL(route.request().url()).pathname.split('/__test/')[1];
    if (rel === 'page.html') return route.fulfill({ contentType: 'text/html', body: '<!doctype html><title>openai</title>' });
    const file = path.join(ROOT, 'node_modules', rel);
    if (!rel.startsWith('openai/') || !fs.existsSync(file)) return route.fulfill({ status: 404, body: 'not found' });
    return route.fulfill({ contentType: 'text/javascript', body: fs.readFileSync(file) });
  });
  await page.goto(`${base}page.html`);
  return page;
}

const QUESTION = 'What is the capital of France?';
const SCHEMA = {
  type: 'object',
  properties: { name: { type: 'string', maxLength: 12 }, age: { type: 'integer', minimum: 0, maximum: 120 } },
  required: ['name', 'age'],
  additionalProperties: false,
};

test('OpenAI\'s client streams and completes through engine.fetch as the CLI does: stop, logprobs, JSON schema, a tool call, refusals by name', { timeout: 900_000 }, async () => {
  const chat = cli(['--chat', '--prompt', QUESTION, '--max-tokens', '6', '--logprobs', '3']);
  const stopped = cli(['--prompt', 'The capital of France is', '--max-tokens', '12', '--stop', '\n\nThe']);
  const page = await testPage();
  const got = await page.evaluate(async ({ QUESTION, SCHEMA, QWEN_TEMPLATE }) => {
    /** The GGUF with `template` as its chat template, padded with a Jinja comment so that the
     * tensor data keeps its 32-byte alignment (as tests/common's `with_chat_template`). */
    const withChatTemplate = (bytes, template) => {
      const key = new TextEncoder().encode('tokenizer.chat_template');
      let at = -1;
      for (let i = 0; at < 0 && i < 1 << 24; i++) if (bytes[i] === key[0] && key.every((k, j) => bytes[i + j] === k)) at = i + key.length;
      const view = new DataView(bytes.buffer, bytes.byteOffset);
      if (at < 0 || view.getUint32(at, true) !== 8) throw new Error('no string tokenizer.chat_template');
      const len = Number(view.getBigUint64(at + 4, true));
      let text = `${template}{#`;
      while (Math.abs(new TextEncoder().encode(text).length + 2 - len) % 32 !== 0) text += ' ';
      const t = new TextEncoder().encode(`${text}#}`);
      const out = new Uint8Array(bytes.length - len + t.length);
      out.set(bytes.subarray(0, at + 4));
      new DataView(out.buffer).setBigUint64(at + 4, BigInt(t.length), true);
      out.set(t, at + 12);
      out.set(bytes.subarray(at + 12 + len), at + 12 + t.length);
      return out;
    };
    const { createEngine } = await import(new URL('../js/kvscope.js', location.href).href);
    const { default: OpenAI } = await import(new URL('openai/index.mjs', location.href).href);
    const engine = await createEngine({ model: '../models/SmolLM2-135M-Instruct.Q4_1.gguf', context: 512, backend: 'cpu' });
    const client = new OpenAI({ baseURL: 'https://kvscope.invalid/v1', apiKey: 'none', fetch: engine.fetch, dangerouslyAllowBrowser: true, maxRetries: 0 });
    const messages = [{ role: 'user', content: QUESTION }];
    const out = {};
    out.whole = await client.chat.completions.create({ model: 'kvscope', messages, max_tokens: 6, temperature: 0, logprobs: true, top_logprobs: 3 });
    out.chunks = [];
    const stream = await client.chat.completions.create({ model: 'kvscope', messages, max_tokens: 6, temperature: 0, stream: true, stream_options: { include_usage: true } });
    for await (const c of stream) out.chunks.push(c);
    out.stopped = await client.completions.create({ model: 'kvscope', prompt: 'The capital of France is', max_tokens: 12, temperature: 0, stop: ['\n\nThe'] });
    out.models = await client.models.list().then((p) => p.data.map((m) => m.id));

    const t0 = performance.now();
    out.json = [];
    for (let seed = 0; seed < 20; seed++) {
      const r = await client.chat.completions.create({
        model: 'kvscope', messages: [{ role: 'user', content: 'Describe a person as JSON.' }], temperature: 1, seed, max_tokens: 48,
        response_format: { type: 'json_schema', json_schema: { name: 'person', schema: SCHEMA, strict: true } },
      });
      out.json.push({ text: r.choices[0].message.content, finish: r.choices[0].finish_reason });
    }
    out.jsonMs = performance.now() - t0;

    const refused = async (body) => {
      try {
        await client.chat.completions.create({ model: 'kvscope', messages, max_tokens: 2, ...body });
        return null;
      } catch (e) {
        return { status: e.status, param: e.param ?? e.error?.param, message: e.message, name: e.constructor.name };
      }
    };
    out.bad = {
      unknown: await refused({ colour: 'blue' }),
      n: await refused({ n: 2 }),
      top_logprobs: await refused({ logprobs: true, top_logprobs: 21 }),
      stop: await refused({ stop: ['a', 'b', 'c', 'd', 'e'] }),
      logit_bias: await refused({ logit_bias: { 999999: 5 } }),
      schema: await refused({ response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'nonsense' } } } }),
      tool: await refused({ messages: [...messages, { role: 'tool', tool_call_id: 'call_9', content: '22' }] }),
      notools: await refused({ tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object' } } }] }),
    };
    out.direct = await engine.chat.completions.create({ messages, max_tokens: 1, colour: 'blue' }).then(() => null, (e) => ({ name: e.name, message: e.message }));
    out.after = await client.chat.completions.create({ model: 'kvscope', messages, max_tokens: 6, temperature: 0 });
    await engine.close();

    // Qwen 2.5's template on the same weights: the call forced by tool_choice, parsed.
    const qwen = await createEngine({
      model: withChatTemplate(new Uint8Array(await (await fetch('../models/SmolLM2-135M-Instruct.Q4_1.gguf')).arrayBuffer()), QWEN_TEMPLATE), context: 512, backend: 'cpu',
    });
    const tools = [{ type: 'function', function: { name: 'get_weather', description: 'The weather in a city', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } } }];
    const qclient = new OpenAI({ baseURL: 'https://kvscope.invalid/v1', apiKey: 'none', fetch: qwen.fetch, dangerouslyAllowBrowser: true, maxRetries: 0 });
    out.tool = await qclient.chat.completions.create({
      model: 'kvscope', messages: [{ role: 'user', content: 'What is the weather in Paris?' }], tools, tool_choice: 'required', temperature: 0, max_tokens: 32,
    });
    const call = out.tool.choices[0].message.tool_calls?.[0];
    out.toolAnswer = call && await qclient.chat.completions.create({
      model: 'kvscope', temperature: 0, max_tokens: 4, tools,
      messages: [{ role: 'user', content: 'What is the weather in Paris?' }, out.tool.choices[0].message, { role: 'tool', tool_call_id: call.id, content: '{"temperature": 21}' }],
    });
    await qwen.close();
    return out;
  }, { QUESTION, SCHEMA, QWEN_TEMPLATE });

  // Whole and streamed: the CLI's greedy text; logprobs equal to its next-token table (the
  // native and the wasm CPU backends sum in different orders: their logits differ by ~1e-3).
  const msg = got.whole.choices[0].message;
  assert.equal(msg.content, chat.summary.text);
  assert.equal(got.whole.choices[0].finish_reason, chat.summary.stop === 'eos' ? 'stop' : 'length');
  const entries = got.whole.choices[0].logprobs.content;
  assert.equal(entries.length, chat.events.length);
  entries.forEach((e, i) => {
    const ev = chat.events[i];
    assert.equal(e.token, ev.text);
    assert.ok(Math.abs(e.logprob - ev.logprob) < 5e-3, `token ${i}: ${e.logprob} vs ${ev.logprob}`);
    assert.equal(e.top_logprobs.length, 3);
    e.top_logprobs.forEach((t, j) => {
      assert.ok(Math.abs(Math.exp(t.logprob) - ev.top[j].p) < 5e-3, `token ${i} alternative ${j}: e^${t.logprob} vs the table's ${ev.top[j].p}`);
    });
    assert.equal(e.top_logprobs[0].logprob, e.logprob, 'greedy picks the most probable');
  });
  const streamed = got.chunks.map((c) => c.choices[0]?.delta.content || '').join('');
  assert.equal(streamed, chat.summary.text);
  assert.deepEqual(got.chunks.at(-1).usage, got.whole.usage);
  assert.equal(got.stopped.choices[0].text, stopped.summary.text);
  assert.equal(stopped.summary.stop, 'stop_string');
  assert.equal(got.stopped.choices[0].finish_reason, 'stop');
  assert.equal(got.models.length, 1);

  // Every sampled output parses and keeps to the schema.
  const validate = new Ajv().compile(SCHEMA);
  for (const [seed, r] of got.json.entries()) {
    const v = JSON.parse(r.text);
    assert.ok(validate(v), `seed ${seed}: ${r.text}: ${JSON.stringify(validate.errors)}`);
    assert.equal(r.finish, 'stop');
  }
  assert.ok(new Set(got.json.map((r) => r.text)).size > 1, 'temperature 1 varies the outputs');
  console.log(`# 20 JSON-schema answers in ${(got.jsonMs / 1000).toFixed(1)} s: ${got.json.slice(0, 3).map((r) => r.text).join(' ')}`);

  // Refusals: HTTP 400s naming the field, from OpenAI's client; the engine answers after.
  const want = { unknown: 'colour', n: 'n', top_logprobs: 'top_logprobs', stop: 'stop', logit_bias: 'logit_bias[999999]', schema: 'response_format', tool: 'messages[1].tool_call_id', notools: 'tools' };
  for (const [k, param] of Object.entries(want)) {
    const e = got.bad[k];
    assert.ok(e, `${k} was accepted`);
    assert.equal(e.status, 400, `${k}: ${JSON.stringify(e)}`);
    assert.equal(e.name, 'BadRequestError', k);
    assert.equal(e.param, param, `${k}: ${e.message}`);
    assert.ok(e.message.includes(param.replace(/\[.*/, '')), `${k}: ${e.message}`);
  }
  assert.deepEqual(got.direct, { name: 'TypeError', message: got.direct.message });
  assert.match(got.direct.message, /unknown field `colour`/);
  assert.equal(got.after.choices[0].message.content, chat.summary.text);

  // The forced call, parsed into tool_calls; its answer accepted as the next turn.
  const tmsg = got.tool.choices[0].message;
  assert.equal(got.tool.choices[0].finish_reason, 'tool_calls');
  assert.equal(tmsg.content, null);
  assert.equal(tmsg.tool_calls.length, 1);
  assert.equal(tmsg.tool_calls[0].type, 'function');
  assert.match(tmsg.tool_calls[0].id, /^call_/);
  assert.equal(tmsg.tool_calls[0].function.name, 'get_weather');
  assert.equal(typeof JSON.parse(tmsg.tool_calls[0].function.arguments).city, 'string');
  assert.equal(got.toolAnswer.object, 'chat.completion');
  await screenshot(page, 'openai-client.png');
  await page.close();
});
