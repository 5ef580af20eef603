// A flawed KV cache next to the correct one ("analysing a flawed KV cache implementation"): the
// #flaw select (the engine's teaching flaws, from flaws()), the flawed run streamed into
// #flaw-output, and where and why its text parts from the correct run's (#flaw-diverges-at).
import { $, el, visible } from './dom.js';
import { params } from './settings.js';

/** why-text of each flaw by name. */
const WHY = new Map();

/** Fills #flaw from the engine's flaws and applies ?flaw=NAME. */
export function setupFlaws(flaws) {
  const select = $('flaw');
  for (const f of flaws) {
    WHY.set(f.name, f.why);
    select.append(new Option(f.name, f.name));
  }
  const hint = () => {
    const why = WHY.get(select.value);
    $('flaw-hint').textContent = why ? 'Generate runs it, then the correct cache, side by side.' : 'or pick a flaw, to run it next to the correct cache';
    $('flaw').title = why || '';
  };
  select.addEventListener('change', hint);
  hint();
  const wanted = params.get('flaw');
  if (!wanted || wanted === 'none') return;
  if (WHY.has(wanted)) {
    select.value = wanted;
    hint();
  } else {
    $('flaw-hint').textContent = `The URL asks for an unknown flaw "${wanted}" (there are none, ${[...WHY.keys()].join(', ')}); the cache stays correct.`;
  }
}

/** The chosen flaw's name, or "none". */
export const chosenFlaw = () => $('flaw').value;

/** Shows the flawed column beside #output for a comparison with `flaw`, or hides it ("none"). */
export function prepareComparison(flaw) {
  const on = flaw !== 'none';
  $('flaw-col').hidden = !on;
  $('outputs').classList.toggle('compare', on);
  $('output-label').hidden = !on;
  $('flaw-view').hidden = true;
  $('flaw-name').textContent = on ? flaw : '';
  $('flaw-output').textContent = '';
  $('flaw-view').dataset.flaw = flaw;
  delete $('flaw-view').dataset.step;
  $('flaw-diverges-at').textContent = '';
}

/** The tokens of one run as the comparison needs them. */
export function stepOf(ev) {
  return { id: ev.id, token: ev.token, text: ev.text, pos: ev.pos };
}

/**
 * Runs `turn(onToken)` (the engine's flawed run of this prompt) and streams its text into
 * #flaw-output; `each(count)` is called per token. Resolves to {steps, summary}.
 */
export async function runFlawed(turn, each) {
  const out = $('flaw-output');
  const steps = [];
  const summary = await turn((ev) => {
    steps.push(stepOf(ev));
    out.append(ev.text);
    out.scrollTop = out.scrollHeight;
    return each(steps.length);
  });
  return { steps, summary };
}

/** The first step (from 1) where the two runs' tokens differ, or 0 if they never do. */
export function divergence(correct, flawed) {
  const n = Math.min(correct.length, flawed.length);
  for (let i = 0; i < n; i++) if (correct[i].id !== flawed[i].id) return i + 1;
  return correct.length === flawed.length ? 0 : n + 1;
}

/** Rewrites `out` (the text of `steps`) with what came from step `at` on marked. */
function markFrom(out, steps, at) {
  const rest = steps.slice(at - 1).map((s) => s.text).join('');
  const mark = rest ? [el('mark', { class: 'parted', title: `step ${at} on`, text: rest })] : [];
  out.replaceChildren(steps.slice(0, at - 1).map((s) => s.text).join(''), ...mark);
}

/** Where and why the flawed run parted from the correct one, and both token by token. */
export function showComparison(flaw, correct, flawed) {
  const at = divergence(correct, flawed);
  const view = $('flaw-view');
  view.dataset.step = at ? String(at) : '';
  $('flaw-diverges-at').textContent = at ? String(at) : 'none';
  const tok = (s) => (s ? `${visible(s.token)} (id ${s.id})` : 'nothing: the run had ended');
  $('flaw-where').textContent = at
    ? ` (position ${(correct[at - 1] || flawed[at - 1]).pos}): correct ${tok(correct[at - 1])}, flawed ${tok(flawed[at - 1])}.`
    : ` within these ${correct.length} steps: the same tokens.`;
  if (at) {
    markFrom($('output'), correct, at);
    markFrom($('flaw-output'), flawed, at);
    $('flaw-where').textContent += ' Both texts are marked from there on.';
  }
  $('flaw-why').textContent = `Why: ${WHY.get(flaw)} (The prompt is prefilled correctly; the flaw acts on the generated tokens fed back.)`;
  const rows = [];
  for (let i = 0; i < Math.max(correct.length, flawed.length); i++) {
    const c = correct[i];
    const f = flawed[i];
    const differs = !c || !f || c.id !== f.id;
    rows.push(el('tr', { class: differs ? 'differs' : null },
      el('td', { text: String(i + 1) }),
      el('td', { text: String((c || f).pos) }),
      el('td', { class: 'tok', text: c ? visible(c.token) : '—' }),
      el('td', { class: 'tok', text: f ? visible(f.token) : '—' }),
      el('td', { text: i + 1 === at ? '≠ parts here' : differs ? '≠' : '=' })));
  }
  $('flaw-steps').replaceChildren(...rows);
  view.hidden = false;
}
