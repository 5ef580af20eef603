// Generation options for the engine, built and checked in one place for the page's form and the
// JavaScript API: every number in its range, or a RangeError that names the field. What is
// absent takes the caller's default, else the engine's own (`GenerateOptions::default`).

/** [lowest, highest, whole number] of each numeric field. */
const RANGES = {
  max_tokens: [1, 2 ** 30, true],
  temperature: [0, 2, false],
  top_p: [0, 1, false],
  top_k: [0, 2 ** 31, true],
  seed: [0, Number.MAX_SAFE_INTEGER, true],
  report_top: [0, 1000, true],
};

/** Options the engine checks itself (`GenerateOptions::check`, refusing by name), passed on as
 * they are. */
const PASSED = ['no_cache', 'flaw', 'gpu_argmax', 'attention_layer', 'attention_all_layers', 'attention_prompt', 'stop', 'logprobs',
  'top_logprobs', 'frequency_penalty', 'presence_penalty', 'repetition_penalty', 'repeat_last_n', 'logit_bias', 'response_format'];

/** Engine options from `fields` (numbers by RANGES' names; PASSED as they are), with `defaults`
 * for what is absent. A number outside its range throws a RangeError naming it. */
export function engineOptions(fields, defaults = {}) {
  const o = {};
  for (const [name, [lo, hi, whole]] of Object.entries(RANGES)) {
    const v = fields[name] ?? defaults[name];
    if (v === undefined || v === null) continue;
    if (typeof v !== 'number' || !Number.isFinite(v) || v < lo || v > hi) {
      throw Object.assign(new RangeError(`${name} must be a number from ${lo} to ${hi}, not ${JSON.stringify(v)}`), { param: name });
    }
    o[name] = whole ? Math.floor(v) : v;
  }
  for (const name of PASSED) {
    if (fields[name] !== undefined && fields[name] !== null) o[name] = fields[name];
  }
  return o;
}
