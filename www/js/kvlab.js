// The "Compare caches" panel: the KV-cache lab of `kvscope kv-compare` on the page. The worker
// loads the model afresh once for the exact cache and once per chosen policy (from the model
// file, read again from the page's store or the picked file for each comparison), feeds the text
// through each one token at a time, and answers per policy: cache bytes, top-1 agreement and
// mean KL(P ‖ P′) against the exact cache's next-token distribution P, perplexity of the text,
// and the first step at which free greedy generation leaves the exact cache's (engine::kv_lab).
// This module draws the table, the per-position chart and both free texts around their first
// divergent token.
//
// It runs on the CPU backend unless the user picks the loaded one: the CPU backend runs every
// policy, and its figures are those of `kvscope kv-compare --backend cpu`. A policy that a backend
// does not run comes back with the engine's error, shown in its row.
//
// The address may ask for a comparison: ?compare=f16,q8_0,window-64 (the policies),
// ?compare_text=… (the text), ?compare_backend=cpu|gpu; it runs once the model is loaded.
import { $, el, fit, visible, fmtBytes } from './dom.js';
import { state, subscribe, exclusive } from './state.js';
import { params } from './settings.js';
import { messageOf } from './feedback.js';
import { sourceBytes } from './loading.js';

/** The policies offered as checkboxes, and those checked unless the address says otherwise. */
const OFFERED = ['f16', 'q8_0', 'q4_0', 'window-32', 'sink-4-window-28', 'h2o-32'];
const CHECKED = ['q8_0', 'window-32', 'sink-4-window-28'];
const PALETTE = ['#2a6fdb', '#e08a1e', '#27ae60', '#c0392b', '#8e44ad', '#16a085', '#7f8c8d', '#d35400'];
const TEXT = '#888';

/** The running comparison's AbortController: Cancel aborts it before the worker has the request
 * (while the model file is read) and stops the engine after. */
let running = null;
const stopped = () => Object.assign(new Error('stopped'), { name: 'Stopped' });

/** The policies chosen: the checked boxes, then the names typed in #kvlab-more (comma-separated),
 * each once. */
function chosenPolicies() {
  const boxes = [...document.querySelectorAll('#kvlab-policies input:checked')].map((b) => b.value);
  const more = $('kvlab-more').value.split(',').map((s) => s.trim()).filter(Boolean);
  return [...new Set([...boxes, ...more])];
}

/** Checks the offered boxes named in `names` (only those) and types the others into #kvlab-more. */
function choose(names) {
  for (const b of document.querySelectorAll('#kvlab-policies input')) b.checked = names.includes(b.value);
  $('kvlab-more').value = names.filter((n) => !OFFERED.includes(n)).join(', ');
}

function showLabError(e) {
  const box = $('kvlab-error');
  box.hidden = false;
  box.dataset.name = (e && e.name) || '';
  box.textContent = messageOf(e);
}

/** Bytes of an f32 cache position of the loaded model: 2 (K, V) × layers × kv_dim × 4. */
function f32PerPosition(st) {
  return 2 * st.n_layers * st.n_kv_heads * st.head_dim * 4;
}

/** The table: one row per policy (its figures also as data attributes), one per refusal. */
function renderTable(r, st) {
  const f32Bytes = (r.positions + 1) * f32PerPosition(st);
  const rows = r.policies.map((p, i) => el('tr', {
    data: {
      policy: p.name,
      cacheBytes: String(p.cache_bytes),
      bytesPerPosition: String(p.bytes_per_position),
      positionsHeld: String(p.positions_held),
      top1: String(p.top1_agreement),
      meanKl: String(p.mean_kl),
      perplexity: String(p.perplexity),
      firstDivergence: p.first_divergence === null ? '' : String(p.first_divergence),
    },
  },
  el('td', {}, el('span', { class: 'swatch', style: { background: PALETTE[i % PALETTE.length] } }), ` ${p.name}`),
  el('td', { text: fmtBytes(p.cache_bytes), title: `${p.positions_held} positions held × ${fmtBytes(p.bytes_per_position)} a position` }),
  el('td', { text: `${((100 * p.cache_bytes) / f32Bytes).toFixed(1)}%` }),
  el('td', { text: `${(100 * p.top1_agreement).toFixed(1)}%` }),
  el('td', { text: p.mean_kl.toFixed(5) }),
  el('td', { text: p.perplexity.toFixed(3) }),
  el('td', { text: p.first_divergence === null ? `none in ${r.free_steps} steps` : `step ${p.first_divergence}` })));
  const refused = r.refused.map((x) => el('tr', { class: 'refused', data: { policy: x.name, errorName: x.error.name } },
    el('td', { text: x.name }),
    el('td', { colspan: '6', text: x.error.message })));
  $('kvlab-rows').replaceChildren(...rows, ...refused);
  $('kvlab-table').hidden = false;
}

/**
 * Per position t (x): above, the running top-1 agreement, the share of positions 0..t whose
 * argmax agreed with the exact cache's; below, KL(P_t ‖ P′_t) on a scale to the largest. One
 * colour per policy, as in the table.
 */
function drawChart(r) {
  const canvas = $('kvlab-chart');
  const { g, w, h } = fit(canvas, 220);
  canvas.dataset.series = String(r ? r.policies.length : 0);
  g.font = '11px system-ui, sans-serif';
  g.fillStyle = TEXT;
  if (!r || r.policies.length === 0 || r.positions === 0) {
    g.fillText('Run a comparison to see agreement and KL at each position.', 10, 20);
    return;
  }
  const left = 44;
  const x = (t) => left + (t / Math.max(1, r.positions - 1)) * (w - left - 10);
  const top = { y0: 14, y1: 100 };
  const bottom = { y0: 124, y1: h - 18 };
  const maxKl = Math.max(1e-6, ...r.policies.flatMap((p) => p.kl_by_position));
  g.fillText('top-1 agreement so far', left, top.y0 - 3);
  g.fillText('100%', 4, top.y0 + 8);
  g.fillText('0%', 4, top.y1);
  g.fillText('KL(P ‖ P′) per position', left, bottom.y0 - 3);
  g.fillText(maxKl.toPrecision(2), 4, bottom.y0 + 8);
  g.fillText('0', 4, bottom.y1);
  g.fillText('position →', w - 70, h - 4);
  g.strokeStyle = '#8886';
  for (const a of [top, bottom]) {
    g.beginPath(); g.moveTo(left, a.y0); g.lineTo(left, a.y1); g.lineTo(w - 10, a.y1); g.stroke();
  }
  r.policies.forEach((p, i) => {
    g.strokeStyle = PALETTE[i % PALETTE.length];
    g.lineWidth = 1.5;
    let agreed = 0;
    g.beginPath();
    p.agreement_by_position.forEach((a, t) => {
      agreed += a ? 1 : 0;
      const y = top.y1 - (agreed / (t + 1)) * (top.y1 - top.y0);
      if (t === 0) g.moveTo(x(t), y); else g.lineTo(x(t), y);
    });
    g.stroke();
    g.beginPath();
    p.kl_by_position.forEach((k, t) => {
      const y = bottom.y1 - (k / maxKl) * (bottom.y1 - bottom.y0);
      if (t === 0) g.moveTo(x(t), y); else g.lineTo(x(t), y);
    });
    g.stroke();
  });
  g.lineWidth = 1;
}

/** One free text as tokens: those before step `d` plain, token d marked, the rest dimmed. */
function tokens(pieces, d, role) {
  return pieces.map((t, i) => el(i === d ? 'mark' : 'span', {
    class: i < d || d === null ? 'same' : i === d ? 'diverge' : 'after',
    text: t,
    title: `step ${i}: ${visible(t)}`,
    data: i === d ? { role } : undefined,
  }));
}

/** For each policy: the exact cache's free text and the policy's, from the text's first tokens,
 * with the first divergent token marked in both. */
function renderTexts(r) {
  const start = r.prefix_text.length > 80 ? `…${r.prefix_text.slice(-80)}` : r.prefix_text;
  const blocks = r.policies.map((p) => {
    const d = p.first_divergence;
    const head = d === null
      ? `${p.name}: the same ${r.free_steps} greedy tokens as the exact cache.`
      : `${p.name}: the free texts part at step ${d}: the exact cache picks ${JSON.stringify(r.reference.pieces[d])}, ${p.name} ${JSON.stringify(p.free.pieces[d])}.`;
    return el('div', {
      class: 'kvlab-free',
      data: { policy: p.name, firstDivergence: d === null ? '' : String(d), exactToken: d === null ? '' : r.reference.pieces[d], policyToken: d === null ? '' : p.free.pieces[d] },
    },
    el('p', { class: 'out-label', text: head }),
    el('p', { class: 'kvlab-line' }, el('span', { class: 'who', text: 'exact' }), el('span', { class: 'start', text: start }), ...tokens(r.reference.pieces, d, 'exact')),
    el('p', { class: 'kvlab-line' }, el('span', { class: 'who', text: p.name }), el('span', { class: 'start', text: start }), ...tokens(p.free.pieces, d, 'policy')));
  });
  $('kvlab-texts').replaceChildren(...blocks);
}

/** Runs the comparison of the text with the chosen policies on the chosen backend. */
export function runComparison() {
  return exclusive('comparing', async () => {
    const engine = state.engine;
    const panel = $('kvlab');
    if (!engine) return;
    const policies = chosenPolicies();
    $('kvlab-error').hidden = true;
    if (policies.length === 0) {
      showLabError(new Error('Choose at least one cache policy to compare with the exact cache.'));
      return;
    }
    const backend = $('kvlab-backend').value;
    panel.dataset.state = 'running';
    $('kvlab-status').textContent = `Loading the model ${policies.length + 1} times on the ${backend} backend (the exact cache and ${policies.join(', ')}) and feeding the text through each…`;
    const t0 = performance.now();
    const abort = new AbortController();
    running = abort;
    try {
      const bytes = await sourceBytes(state.source, abort.signal).catch((e) => { throw abort.signal.aborted ? stopped() : e; });
      if (abort.signal.aborted) throw stopped();
      const r = await engine.kvCompare({ bytes, text: $('kvlab-text').value, policies, options: { backend } });
      renderTable(r, engine.state());
      drawChart(r);
      renderTexts(r);
      panel.dataset.positions = String(r.positions);
      panel.dataset.freeSteps = String(r.free_steps);
      panel.dataset.backend = r.backend;
      panel.dataset.state = 'done';
      $('kvlab-status').textContent = `${r.positions} positions compared on the ${r.backend} backend in ${((performance.now() - t0) / 1000).toFixed(1)} s; ` +
        `free greedy generation of ${r.free_steps} steps from the text's first tokens.` + (r.refused.length ? ` ${r.refused.length} refused by this backend (see the table).` : '');
    } catch (e) {
      panel.dataset.state = e && e.name === 'Stopped' ? 'cancelled' : 'error';
      $('kvlab-status').textContent = e && e.name === 'Stopped' ? 'Cancelled.' : 'The comparison did not run.';
      if (!(e && e.name === 'Stopped')) showLabError(e);
    } finally {
      running = null;
    }
  });
}

/** Fills the policy boxes and the backend choice, wires Run and Cancel, and takes ?compare=. */
export function setupLab(backend) {
  $('kvlab-policies').replaceChildren(...OFFERED.map((name) => el('label', {},
    el('input', { type: 'checkbox', value: name, ...(CHECKED.includes(name) ? { checked: '' } : {}) }), ` ${name}`)));
  const backends = backend && backend !== 'cpu' ? ['cpu', backend] : ['cpu'];
  $('kvlab-backend').replaceChildren(...backends.map((b) => new Option(b === 'cpu' ? 'cpu (runs every policy)' : `${b} (the loaded backend)`, b)));
  if (params.has('compare')) choose(params.get('compare').split(',').map((s) => s.trim()).filter(Boolean));
  if (params.has('compare_text')) $('kvlab-text').value = params.get('compare_text');
  if (backends.includes(params.get('compare_backend'))) $('kvlab-backend').value = params.get('compare_backend');
  $('kvlab-run').addEventListener('click', () => runComparison());
  $('kvlab-cancel').addEventListener('click', () => {
    if (running) running.abort();
    if (state.engine) state.engine.stop();
  });
  $('kvlab').addEventListener('toggle', () => { if ($('kvlab').open && $('kvlab').dataset.state !== 'done') drawChart(null); });
  subscribe(({ phase, engine }) => {
    $('kvlab-run').disabled = phase !== 'idle' || !engine;
    $('kvlab-cancel').disabled = phase !== 'comparing';
  });
  drawChart(null);
}

/** Whether the address asks for a comparison once the model is loaded. */
export const comparisonRequested = () => params.has('compare');
