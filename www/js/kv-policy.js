// KV-cache policies on the page (the engine's `core::kv_policy`): the picker in the load settings
// (#kv-policy with #kv-sinks and #kv-n), the policy's name for the engine, and which positions a
// policy holds, for the KV-cache view. The engine parses and checks every name; a bad one is
// refused with its message, which the page shows as it is.
//
// Names: f32, f16, q8_0, q4_0 (every position, stored as that type); window-N (the last N);
// sink-S-window-N (the first S and the last N); h2o-N (N/2 recent, the rest most attended).
import { $ } from './dom.js';

/** The picker's kinds that take numbers: which inputs each shows. */
const NUMBERS = { window: ['n'], 'sink-window': ['sinks', 'n'], h2o: ['n'] };

/** A policy name's parts: {kind, sinks, n} (kind: f32, f16, q8_0, q4_0, window, sink-window,
 * h2o; null for a name of no known form). Numbers stay text: the engine checks them. */
export function parsePolicy(name) {
  const s = String(name).trim();
  let m;
  if (['f32', 'f16', 'q8_0', 'q4_0'].includes(s)) return { kind: s };
  if ((m = /^window-(.*)$/.exec(s))) return { kind: 'window', n: m[1] };
  if ((m = /^sink-(.*)-window-(.*)$/.exec(s))) return { kind: 'sink-window', sinks: m[1], n: m[2] };
  if ((m = /^h2o-(.*)$/.exec(s))) return { kind: 'h2o', n: m[1] };
  return { kind: null };
}

/** The most positions policy `name` holds at once (Infinity: every one). */
export function policyBudget(name) {
  const p = parsePolicy(name || 'f32');
  if (p.kind === 'window' || p.kind === 'h2o') return Number(p.n);
  if (p.kind === 'sink-window') return Number(p.sinks) + Number(p.n);
  return Infinity;
}

/** The name the picker's controls make (its custom option keeps a name of no known form as it
 * came, for the engine to refuse). */
export function pickedPolicy() {
  const kind = $('kv-policy').value;
  const n = $('kv-n').value.trim();
  const sinks = $('kv-sinks').value.trim();
  if (kind === 'custom') return $('kv-policy').selectedOptions[0].dataset.name;
  if (kind === 'window') return `window-${n}`;
  if (kind === 'sink-window') return `sink-${sinks}-window-${n}`;
  if (kind === 'h2o') return `h2o-${n}`;
  return kind;
}

/** Shows the number inputs the chosen kind takes, and the name in #kv-policy-name. */
function showInputs() {
  const wants = NUMBERS[$('kv-policy').value] || [];
  $('kv-sinks-label').hidden = !wants.includes('sinks');
  $('kv-n-label').hidden = !wants.includes('n');
  $('kv-policy-name').textContent = pickedPolicy();
}

/** Sets the picker to `name`. */
export function choosePolicy(name) {
  const p = parsePolicy(name);
  const select = $('kv-policy');
  select.querySelector('option[value=custom]')?.remove();
  if (p.kind === null) {
    const o = new Option(name, 'custom');
    o.dataset.name = name;
    select.append(o);
    select.value = 'custom';
  } else {
    select.value = p.kind;
    if (p.n !== undefined) $('kv-n').value = p.n;
    if (p.sinks !== undefined) $('kv-sinks').value = p.sinks;
  }
  showInputs();
}

/** Wires the picker; `onChange` runs after every change (the model plan reads it again). */
export function setupPolicyPicker(initial, onChange) {
  choosePolicy(initial);
  for (const id of ['kv-policy', 'kv-n', 'kv-sinks']) {
    $(id).addEventListener('input', () => {
      showInputs();
      onChange();
    });
  }
}

/**
 * The positions layer `l` holds after `cached` positions, ascending, or null for every one:
 * the engine's own list (`st.kv_held`, read after each run) where it is of this many positions,
 * else the policy's rule — window-N the last N, sink-S-window-N the first S and the last N;
 * H2O's choice depends on the attention, so between runs it is the engine's last list and the
 * positions fed since.
 */
export function heldPositions(st, l, cached) {
  const p = parsePolicy(st.kv_policy || 'f32');
  if (!NUMBERS[p.kind]) return null;
  if (st.kv_held && st.cached_tokens === cached) return st.kv_held[l];
  const n = Number(p.n);
  const range = (a, b) => Array.from({ length: Math.max(0, b - a) }, (_, i) => a + i);
  if (p.kind === 'window') return range(Math.max(0, cached - n), cached);
  if (p.kind === 'sink-window') {
    const sinks = Number(p.sinks);
    return cached <= sinks + n ? range(0, cached) : [...range(0, sinks), ...range(cached - n, cached)];
  }
  const known = st.kv_held ? st.kv_held[l].filter((q) => q < cached) : [];
  return [...known, ...range(st.kv_held ? st.cached_tokens : 0, cached)];
}

/** One line for learners on what `st`'s policy keeps and what a position costs. */
export function describePolicy(st, fmtBytes) {
  const p = parsePolicy(st.kv_policy || 'f32');
  const per = st.kv_bytes_per_position;
  const f32 = st.n_layers * 2 * st.n_kv_heads * st.head_dim * 4;
  const share = `${fmtBytes(per)} a position (K and V, every layer: ${((100 * per) / f32).toFixed(1)}% of f32's ${fmtBytes(f32)})`;
  switch (p.kind) {
    case 'f32': return `Cache policy f32: every position, exact; ${share}.`;
    case 'f16': return `Cache policy f16: every position, each value rounded to a 2-byte half float; ${share}.`;
    case 'q8_0': return `Cache policy q8_0: every position in ggml's Q8_0 blocks (32 one-byte values and one f16 scale: 34 bytes per 32 values); ${share}.`;
    case 'q4_0': return `Cache policy q4_0: every position in ggml's Q4_0 blocks (32 four-bit values and one f16 scale: 18 bytes per 32 values); ${share}.`;
    case 'window': return `Cache policy ${st.kv_policy}: the last ${p.n} positions only; older rows are evicted (pale red below); ${share}.`;
    case 'sink-window': return `Cache policy ${st.kv_policy}: the first ${p.sinks} positions (attention sinks, purple) and the last ${p.n}; the rows between are evicted (pale red); keys turned at their place in the cache (StreamingLLM); ${share}.`;
    case 'h2o': return `Cache policy ${st.kv_policy}: ${p.n} positions, the ${Math.floor(p.n / 2)} newest and the most attended of the rest (H2O); the others are evicted (pale red; the engine's choice is read after each run); ${share}.`;
    default: return `Cache policy ${st.kv_policy}; ${share}.`;
  }
}
