// OpenAI's request fields and response shapes for kvscope's JavaScript API (kvscope.js): which
// fields a request may carry (any other is refused by name), the engine options they become, and
// the objects answered — whole, or streamed as chunks — with logprobs and tool calls in OpenAI's
// shapes.
//
// Glossary: request, the object an app passes to `create()`; shape, what turns the engine's
// token events and summary into a request's answer (`event(ev)` → a chunk or null, `last(summary)`
// → the last chunks, `whole(summary)` → the answer); logprob entry, one token's `{token, logprob,
// bytes, top_logprobs}`.
import { engineOptions } from './options.js';

/** The engine's stop reasons as OpenAI's finish reasons. */
export const FINISH = { eos: 'stop', stopped: 'stop', stop_string: 'stop', grammar_end: 'stop', max_tokens: 'length', context_full: 'length' };

const isString = (v) => typeof v === 'string';
const isObject = (v) => typeof v === 'object' && !Array.isArray(v);
/** Each field a request may carry, and the test its value must pass (null counts as absent). */
const COMMON = {
  model: ['a string', isString],
  stream: ['a boolean', (v) => typeof v === 'boolean'],
  stream_options: ['an object', isObject],
  max_tokens: ['a number', Number.isFinite],
  temperature: ['a number', Number.isFinite],
  top_p: ['a number', Number.isFinite],
  top_k: ['a number', Number.isFinite],
  seed: ['a number', Number.isFinite],
  n: ['a number', Number.isFinite],
  stop: ['a string or an array of strings', (v) => isString(v) || (Array.isArray(v) && v.every(isString))],
  frequency_penalty: ['a number', Number.isFinite],
  presence_penalty: ['a number', Number.isFinite],
  repetition_penalty: ['a number', Number.isFinite],
  repeat_last_n: ['a number', Number.isFinite],
  logit_bias: ['an object of token id → bias', (v) => isObject(v) && Object.values(v).every(Number.isFinite)],
  user: ['a string', isString],
  signal: ['an AbortSignal', (v) => typeof v.aborted === 'boolean'],
  kv_policy: ['a string', isString],
};
const FIELDS = {
  chat: {
    ...COMMON,
    messages: ['an array of messages', Array.isArray],
    max_completion_tokens: ['a number', Number.isFinite],
    logprobs: ['a boolean', (v) => typeof v === 'boolean'],
    top_logprobs: ['a number', Number.isFinite],
    response_format: ['an object {type: "text" | "json_object" | "json_schema", …}', isObject],
    tools: ['an array of {type: "function", function}', Array.isArray],
    tool_choice: ['"none", "auto", "required" or {type: "function", function: {name}}', (v) => isString(v) || isObject(v)],
    parallel_tool_calls: ['a boolean', (v) => typeof v === 'boolean'],
  },
  completion: { ...COMMON, prompt: ['a string', isString], logprobs: ['a number (0 to 5)', Number.isFinite] },
};
/** OpenAI's fields that kvscope does not honour, and why; refused by name when given. */
const REFUSED = {
  audio: 'audio output', modalities: 'output other than text', prediction: 'predicted outputs',
  reasoning_effort: 'reasoning models', verbosity: 'reasoning models', service_tier: 'service tiers',
  store: 'stored completions', metadata: 'stored completions', web_search_options: 'web search',
  functions: 'the deprecated `functions` (use `tools`)', function_call: 'the deprecated `function_call` (use `tool_choice`)',
  echo: 'echoing the prompt', suffix: 'insertion', best_of: 'best-of sampling',
  prompt_cache_key: 'a prompt cache', safety_identifier: 'safety identifiers',
};

/** A TypeError or RangeError that names the request field `param` (kept as `e.param`). */
export function fieldError(Kind, param, message) {
  return Object.assign(new Kind(message), { param });
}

/** Refuses, by name, any field a `kind` ('chat' or 'completion') request may not carry or whose
 * value has the wrong type, and `n` above 1. */
export function checkRequest(req, kind) {
  if (!isObject(req) || req === null) throw new TypeError('the request must be an object');
  const fields = FIELDS[kind];
  for (const [name, v] of Object.entries(req)) {
    if (v === undefined || v === null) continue;
    if (REFUSED[name] && v !== false) throw fieldError(TypeError, name, `${name}: kvscope does not support ${REFUSED[name]}`);
    if (!fields[name]) throw fieldError(TypeError, name, `unknown field \`${name}\` (a ${kind} request takes ${Object.keys(fields).join(', ')})`);
    const [what, ok] = fields[name];
    if (!ok(v)) throw fieldError(TypeError, name, `${name} must be ${what}, not ${JSON.stringify(v)}`);
  }
  if ((req.n ?? 1) !== 1) throw fieldError(RangeError, 'n', `n must be 1: kvscope makes one choice per request, not ${req.n}`);
}

/** Refuses a request's `kv_policy` unless it names the policy the engine was loaded with
 * (`loaded`, engine.state().kv_policy): the cache is allocated at load, so its policy cannot
 * change per request. */
export function checkPolicy(req, loaded) {
  const asked = req.kv_policy;
  if (asked === undefined || asked === null || asked.trim() === loaded) return;
  throw fieldError(TypeError, 'kv_policy',
    `kv_policy: the cache policy is chosen at load (createEngine({kv_policy})); this engine's is \`${loaded}\`, not \`${asked}\``);
}

/** Engine options from a request (`options.js` checks the sampler's ranges, the engine the
 * rest). `temperature` 0 is greedy (argmax); absent it is 1, as in OpenAI's API. `max_tokens`
 * (or `max_completion_tokens`) absent: until the end of text or a full context. A completion's
 * `logprobs: N` asks for N alternatives. */
export function requestOptions(req, kind, context) {
  const fields = { ...req, max_tokens: req.max_tokens ?? req.max_completion_tokens };
  if (kind === 'completion' && req.logprobs != null) Object.assign(fields, { logprobs: true, top_logprobs: req.logprobs });
  const seed = crypto.getRandomValues(new Uint32Array(1))[0];
  return engineOptions(fields, { max_tokens: context, temperature: 1, top_p: 1, top_k: 0, report_top: 0, seed });
}

/** The engine's refusal of a field, as the JS API's: a RangeError naming it. */
export function requestError(e) {
  if (e && e.name === 'InvalidInput' && e.param) return fieldError(RangeError, e.param, e.message);
  return e;
}

/** Messages as the engine takes them: OpenAI's text parts joined, a null content empty. */
export function chatMessages(messages) {
  if (!Array.isArray(messages) || messages.length === 0) throw fieldError(TypeError, 'messages', 'messages must be a non-empty array of {role, content}');
  return messages.map((m, i) => {
    if (!m || typeof m.role !== 'string') throw fieldError(TypeError, `messages[${i}].role`, `messages[${i}].role must be a string`);
    // OpenAI's content parts [{type: 'text', text}] are joined; other parts have no meaning here.
    const content = Array.isArray(m.content) ? m.content.map((p) => (p && p.type === 'text' ? p.text : '')).join('') : (m.content ?? '');
    if (typeof content !== 'string') throw fieldError(TypeError, `messages[${i}].content`, `messages[${i}].content must be a string or text parts`);
    const { tool_calls: calls, tool_call_id: callId, name } = m;
    return { role: m.role, content, ...(calls ? { tool_calls: calls } : {}), ...(callId ? { tool_call_id: callId } : {}), ...(name ? { name } : {}) };
  });
}

export const randomHex = (n) => Array.from(crypto.getRandomValues(new Uint8Array(n)), (b) => b.toString(16).padStart(2, '0')).join('');

/** The logprob entries of a run's tokens, collected until a chunk takes them. */
class Logprobs {
  constructor(on) {
    this.all = on ? [] : null;
    this.pending = [];
  }

  push(ev) {
    if (!this.all || ev.logprob === undefined) return;
    const entry = (text, logprob, bytes) => ({ token: text, logprob, bytes: Array.from(bytes) });
    const e = { ...entry(ev.token, ev.logprob, ev.bytes), top_logprobs: ev.top_logprobs.map((t) => entry(t.text, t.logprob, t.bytes)) };
    this.all.push(e);
    this.pending.push(e);
  }

  /** At the end: the end-of-text token is no part of the text. */
  end(summary) {
    if (this.all && summary.stop === 'eos' && this.all.length) {
      this.all.pop();
      this.pending.pop();
    }
  }

  /** The entries not yet sent, for a chunk (null when logprobs are off). */
  take() {
    return this.all ? { content: this.pending.splice(0), refusal: null } : null;
  }
}

/** The reply's tool calls with ids (once per summary), or none. */
function toolCalls(s) {
  s.calls ??= (s.tool_calls || []).map((c) => ({ id: `call_${randomHex(12)}`, type: 'function', function: { name: c.name, arguments: c.arguments } }));
  return s.calls;
}

const finish = (s) => (toolCalls(s).length ? 'tool_calls' : FINISH[s.stop]);

const chatUsage = (s) => {
  const prompt = s.prompt_tokens + s.reused_tokens;
  return { prompt_tokens: prompt, completion_tokens: s.generated_tokens, total_tokens: prompt + s.generated_tokens };
};

/** A chat completion's shape: `chat.completion`, or `chat.completion.chunk`s. */
export function chatShape(req, base) {
  const lp = new Logprobs(req.logprobs);
  let first = true;
  const chunk = (delta, finishReason = null, logprobs = null) => {
    const d = first ? { role: 'assistant', ...delta } : delta;
    first = false;
    return { ...base, object: 'chat.completion.chunk', choices: [{ index: 0, delta: d, logprobs, finish_reason: finishReason }] };
  };
  return {
    event(ev) {
      lp.push(ev);
      return ev.text ? chunk({ content: ev.text }, null, lp.take()) : null;
    },
    last(s) {
      lp.end(s);
      const calls = toolCalls(s);
      const out = [];
      if (calls.length) out.push(chunk({ tool_calls: calls.map((c, index) => ({ index, ...c })) }, null, lp.take()));
      else if (s.tail) out.push(chunk({ content: s.tail }, null, lp.take()));
      const rest = lp.take();
      out.push(chunk(first ? { content: '' } : {}, finish(s), rest && rest.content.length ? rest : null));
      if (req.stream_options?.include_usage) out.push({ ...base, object: 'chat.completion.chunk', choices: [], usage: chatUsage(s) });
      return out;
    },
    whole(s) {
      lp.end(s);
      const calls = toolCalls(s);
      const message = { role: 'assistant', content: 'content' in s ? s.content : s.text, refusal: null, ...(calls.length ? { tool_calls: calls } : {}) };
      return { ...base, object: 'chat.completion', choices: [{ index: 0, message, finish_reason: finish(s), logprobs: lp.all && { content: lp.all, refusal: null } }], usage: chatUsage(s) };
    },
  };
}

/** A legacy completion's logprobs: `{tokens, token_logprobs, top_logprobs: [{token: logprob}],
 * text_offset}`, offsets counted in the completion's text from `offset.at` (advanced). */
function legacyLogprobs(entries, offset = { at: 0 }) {
  if (!entries) return null;
  const text_offset = entries.map((e) => (offset.at += e.token.length) - e.token.length);
  return {
    tokens: entries.map((e) => e.token),
    token_logprobs: entries.map((e) => e.logprob),
    top_logprobs: entries.map((e) => Object.fromEntries(e.top_logprobs.map((t) => [t.token, t.logprob]))),
    text_offset,
  };
}

/** A legacy completion's shape: `text_completion`, whole or streamed. */
export function completionShape(req, base) {
  const lp = new Logprobs(req.logprobs != null);
  const usage = (s) => ({ prompt_tokens: s.prompt_tokens, completion_tokens: s.generated_tokens, total_tokens: s.prompt_tokens + s.generated_tokens });
  const choice = (text, finishReason, logprobs) => ({ ...base, choices: [{ index: 0, text, finish_reason: finishReason, logprobs }] });
  const offset = { at: 0 };
  const legacy = () => legacyLogprobs(lp.take()?.content, offset);
  return {
    event(ev) {
      lp.push(ev);
      return ev.text ? choice(ev.text, null, legacy()) : null;
    },
    last(s) {
      lp.end(s);
      return [{ ...choice(s.tail, FINISH[s.stop], legacy()), ...(req.stream_options?.include_usage ? { usage: usage(s) } : {}) }];
    },
    whole(s) {
      lp.end(s);
      return { ...choice(s.text, FINISH[s.stop], legacyLogprobs(lp.all)), usage: usage(s) };
    },
  };
}
