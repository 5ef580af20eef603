// Generate, Step, Stop and Reset: runs the engine on the prompt (or the chat so far) and streams
// each token into #output, #stats and the "Inside the model" views.
import { $ } from './dom.js';
import { session, inside, runExclusive } from './session.js';
import { status, showError, showEngineError, clearError } from './feedback.js';
import { updateStats, renderTranscript } from './stats.js';

const STOP_REASONS = { eos: 'end of text', max_tokens: 'max tokens reached', context_full: 'the context is full', stopped: 'stopped' };

/** Generation options from the form. */
function options() {
  const num = (id, d) => (Number.isFinite(Number($(id).value)) && $(id).value !== '' ? Number($(id).value) : d);
  const o = { max_tokens: Math.max(1, Math.floor(num('max-tokens', 64))), report_top: 5, no_cache: $('no-cache').checked };
  const layer = inside.attentionLayer();
  if (layer !== null) o.attention_layer = layer;
  if ($('greedy').checked) o.temperature = 0;
  else Object.assign(o, { temperature: num('temperature', 0.8), top_k: Math.floor(num('top-k', 0)), top_p: num('top-p', 1), seed: Math.floor(num('seed', 0)) });
  return o;
}

/** One run of the engine that writes into #output: `body(out, engine)` runs exclusively; a
 * failure is shown (with "Reload engine" when the GPU is gone), and #output[data-done] is set
 * however it ends. */
function turn(body) {
  const { engine } = session;
  if (!engine) return Promise.resolve();
  return runExclusive(async () => {
    clearError();
    session.stopRequested = false;
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

/** Completes the prompt, or answers it as the next chat turn, until a stop condition. */
export function generate() {
  return turn(async (out, engine) => {
    const prompt = $('prompt').value;
    const chat = $('chat').checked;
    const { context } = engine.state();
    const started = performance.now();
    let generated = 0;
    status('Prefilling the prompt…');
    const sampled = !$('greedy').checked;
    const noCache = $('no-cache').checked;
    const onToken = (ev) => {
      // The previous output stays on screen until the first new token replaces it.
      if (generated === 0) out.textContent = '';
      generated += 1;
      out.append(ev.text);
      inside.token(ev, sampled);
      // The first token's time includes the prefill; the others are one decode step each.
      if (generated > 1) inside.timing(ev.pos - 1, ev.ms, noCache);
      updateStats({ cached: ev.pos + 1, context });
      status(`Generating… ${generated} tokens, ${((performance.now() - started) / 1000).toFixed(1)} s`);
      return !session.stopRequested;
    };
    let summary;
    if (chat) {
      const next = { role: 'user', content: prompt };
      summary = await engine.chat([...session.messages, next], options(), onToken);
      session.messages.push(next, { role: 'assistant', content: summary.text });
      renderTranscript();
      $('prompt').value = '';
    } else {
      summary = await engine.complete(prompt, options(), onToken);
    }
    if (generated === 0) out.textContent = '';
    const cached = engine.state().cached_tokens;
    inside.finish(cached);
    updateStats({ summary, cached, context });
    status(`Done (${STOP_REASONS[summary.stop]}).`);
    if (summary.stop === 'context_full') showError(`The context is full (${context} tokens): press Reset to start over.`, { name: 'ContextFull' });
  });
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
    const opts = { ...options(), max_tokens: 1, no_cache: false };
    const summary = before === 0 ? await engine.complete($('prompt').value, opts, onToken) : await engine.step(opts, onToken);
    const after = engine.state().cached_tokens;
    inside.finish(after);
    if (last) inside.renderStep(last, before, after, engine.peek(1)[0]);
    updateStats({ summary, cached: after, context });
    status(before === 0 ? `Prefilled the prompt and took the first step: ${after} rows cached.` : `One step: ${before} → ${after} cached rows.`);
  });
}

/** Ends the running generation after the current step or prefill chunk. */
export function stop() {
  session.stopRequested = true;
  if (session.engine) session.engine.stop();
  status('Stopping…');
}

/** Empties the KV cache and the conversation. */
export function reset() {
  const { engine } = session;
  if (!engine || session.busy) return;
  engine.reset();
  session.messages = [];
  renderTranscript();
  $('output').textContent = '';
  delete $('output').dataset.done;
  inside.reset();
  updateStats({ cached: 0 });
  status('The KV cache is empty.');
}
