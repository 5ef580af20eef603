// Generate, Step, Stop and Reset: runs the engine on the prompt (or the chat so far) and streams
// each token into #output, #stats and the "Inside the model" views.
import { $ } from './dom.js';
import { state, set, inside, exclusive } from './state.js';
import { engineOptions } from './options.js';
import { status, showError, showEngineError, clearError } from './feedback.js';
import { updateStats } from './stats.js';
import { chosenFlaw, prepareComparison, runFlawed, showComparison, stepOf } from './flaw.js';

const STOP_REASONS = { eos: 'end of text', max_tokens: 'max tokens reached', context_full: 'the context is full', stopped: 'stopped', stop_string: 'a stop string', grammar_end: 'the grammar\'s end' };

/** Generation options from the form (`options.js` checks them), without the attention
 * read-backs. */
function options() {
  const num = (id) => ($(id).value === '' ? undefined : Number($(id).value));
  const fields = { max_tokens: num('max-tokens'), no_cache: $('no-cache').checked };
  if ($('greedy').checked) fields.temperature = 0;
  else Object.assign(fields, { temperature: num('temperature'), top_k: num('top-k'), top_p: num('top-p'), seed: num('seed') });
  return engineOptions(fields, state.defaults);
}

/** The options of a run that feeds the "Inside the model" views: the form's, and the attention
 * that the open views show. */
function viewedOptions() {
  return { ...options(), ...inside.attentionOptions() };
}

/** One run of the engine that writes into #output: `body(out, engine)` runs exclusively; a
 * failure is shown (with "Reload engine" when the GPU is gone), and #output[data-done] is set
 * however it ends. */
function turn(body) {
  const { engine } = state;
  if (!engine) return Promise.resolve();
  return exclusive('running', async () => {
    clearError();
    set({ stopRequested: false });
    const out = $('output');
    delete out.dataset.done;
    try {
      await body(out, engine);
    } catch (e) {
      showEngineError(e);
      status('Failed.');
    } finally {
      out.dataset.done = 'true';
    }
  });
}

/** Completes the prompt, or answers it as the next chat turn, until a stop condition. With a
 * flaw chosen, the same turn runs first with the flawed cache, then correctly (which leaves the
 * cache correct for the next turn), and the two are compared. */
export function generate() {
  return turn(async (out, engine) => {
    const prompt = $('prompt').value;
    // Chat needs the model's template (the checkbox is off and disabled without one).
    const chat = $('chat').checked && state.chatTemplate;
    const next = { role: 'user', content: prompt };
    const run = (options, onToken) => (chat ? engine.chat({ request: [...state.messages, next], options }, onToken) : engine.complete({ prompt, options }, onToken));
    const { context } = engine.state();
    const flaw = chosenFlaw();
    const of = flaw === 'none' ? '' : ' (2 of 2, the correct cache)';
    prepareComparison(flaw);
    let started = performance.now();
    const progress = (what, n) => status(`${what}… ${n} tokens, ${((performance.now() - started) / 1000).toFixed(1)} s`);
    let flawed = null;
    if (flaw !== 'none') {
      // Side by side with the flawed text, the previous output would mislead: it goes at once.
      out.textContent = '';
      status(`Prefilling the prompt (1 of 2, the flaw ${flaw})…`);
      flawed = await runFlawed((onToken) => run({ ...options(), report_top: 0, flaw }, onToken), (n) => {
        progress(`Generating with the flaw ${flaw} (1 of 2)`, n);
        return !state.stopRequested;
      });
      if (state.stopRequested) {
        status('Stopped.');
        return;
      }
      started = performance.now();
    }
    const steps = [];
    status(`Prefilling the prompt${of}…`);
    const sampled = !$('greedy').checked;
    const noCache = $('no-cache').checked;
    const onToken = (ev) => {
      // The previous output stays on screen until the first new token replaces it.
      if (steps.length === 0) out.textContent = '';
      steps.push(stepOf(ev));
      out.append(ev.text);
      out.scrollTop = out.scrollHeight;
      inside.token(ev, sampled);
      // The first token's time includes the prefill; the others are one decode step each.
      if (steps.length > 1) inside.timing(ev.pos - 1, ev.ms, noCache);
      updateStats({ cached: ev.pos + 1, context });
      progress(`Generating${of}`, steps.length);
      return !state.stopRequested;
    };
    const summary = await run(viewedOptions(), onToken);
    if (chat) {
      set({ messages: [...state.messages, next, { role: 'assistant', content: summary.text }] });
      $('prompt').value = '';
    }
    if (steps.length === 0) out.textContent = '';
    const cached = engine.state().cached_tokens;
    inside.finish(cached, engine.state());
    updateStats({ summary, cached, context });
    if (flawed) showComparison(flaw, steps, flawed.steps);
    status(`Done (${STOP_REASONS[summary.stop]}).${pastContext(summary)}`);
    if (summary.stop === 'context_full') showError(`The context is full (${context} tokens): press Reset to start over.`, { name: 'ContextFull' });
  });
}

/** What let the text run past the context it was loaded with (an evicting cache policy, on the
 * CPU backend), for the status line; also #stats' data-past-context (the policy's name). */
function pastContext(summary) {
  const pc = summary.past_context;
  $('stats').dataset.pastContext = pc ? pc.policy : '';
  if (!pc) return '';
  return ` The text passed the context of ${pc.context} tokens at position ${pc.context}: cache policy ${pc.policy} keeps ${pc.held} positions and evicts the rest.`;
}

/** Exactly one decode step (with an empty cache, the prompt is prefilled and the first token
 * picked instead). */
export function stepOnce() {
  return turn(async (out, engine) => {
    const { cached_tokens: before, context } = engine.state();
    const sampled = !$('greedy').checked;
    let last = null;
    const onToken = (ev) => {
      last = ev;
      out.append(ev.text);
      inside.token(ev, sampled);
      return true;
    };
    const opts = { ...viewedOptions(), max_tokens: 1, no_cache: false };
    const summary = before === 0 ? await engine.complete({ prompt: $('prompt').value, options: opts }, onToken) : await engine.step({ options: opts }, onToken);
    const after = engine.state().cached_tokens;
    inside.finish(after, engine.state());
    if (last) inside.renderStep(last, before, after, (await engine.peek({ k: 1 }))[0]);
    updateStats({ summary, cached: after, context });
    status(before === 0 ? `Prefilled the prompt and took the first step: ${after} rows cached.` : `One step: ${before} → ${after} cached rows.`);
  });
}

/** Ends the running generation after the current step or prefill chunk. */
export function stop() {
  set({ stopRequested: true });
  if (state.engine) state.engine.stop();
  status('Stopping…');
}

/** Empties the KV cache and the conversation. */
export async function reset() {
  const { engine } = state;
  if (!engine || state.phase !== 'idle') return;
  await exclusive('running', () => engine.reset());
  set({ messages: [] });
  $('output').textContent = '';
  delete $('output').dataset.done;
  prepareComparison('none');
  inside.reset();
  updateStats({ cached: 0 });
  status('The KV cache is empty.');
}
