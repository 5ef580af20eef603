// "Inside the model": the KV cache filling layer by layer, the next-token distribution the
// argmax picks from, attention (the newest query over the cache, the query × key matrix, every
// layer × head), the events of one decode step, and per-token time with and without the cache.
// Each step's views are kept for the timeline. Text is always inserted as text.
import { $, el, visible, fit, fmtBytes } from './dom.js';
import { AttentionRows, headRow, drawMatrix, drawOverview, wireGrid } from './attention.js';
import { Timeline } from './timeline.js';
import { heldPositions, describePolicy, policyBudget } from './kv-policy.js';

const COLORS = { prompt: '#2a6fdb', generated: '#e08a1e', free: '#8883', stale: '#8a8a8a', newest: '#111', grid: '#8886', text: '#888', evicted: '#e6b0aa', sink: '#7b3fa0' };

/**
 * Which position each cache row of each layer holds once `cached` positions have been written,
 * from engine.state()'s `context`, `layer_rows` and `sliding_window`. A layer with fewer rows than
 * the context is a ring: position p is written to row p mod rows, over whatever the row held, and
 * its query attends only over the last `sliding_window` positions. (A sliding-window layer whose
 * ring would be as long as the context keeps every position and is drawn as a full layer.)
 * Per layer: {rows, ring, positions: Int32Array [rows] (the position in each row, -1 if never
 * written), newest (the row written last, -1 if none), firstAttended (the oldest position the
 * newest query attends over), overwritten (positions no longer in the cache: 0…overwritten−1)}.
 */
export function cacheLayout(st, cached) {
  const rowsOf = st.layer_rows && st.layer_rows.length === st.n_layers ? st.layer_rows : Array(st.n_layers).fill(st.context);
  const last = cached - 1;
  return rowsOf.map((rows) => {
    const ring = rows < st.context;
    const positions = new Int32Array(rows);
    // Row r holds the newest position p ≤ last with p ≡ r (mod rows).
    for (let r = 0; r < rows; r++) positions[r] = r > last ? -1 : last - ((last - r) % rows);
    return {
      rows,
      ring,
      positions,
      newest: cached > 0 ? last % rows : -1,
      firstAttended: ring && st.sliding_window > 0 ? Math.max(0, cached - st.sliding_window) : 0,
      overwritten: Math.max(0, cached - rows),
    };
  });
}

/** Draws a chart's axes, the y axis at `left`, and returns its scales from data to pixels for
 * data up to `maxX` and `maxY`; leaves the style set for labels. */
function axes(g, w, h, left, maxX, maxY) {
  g.strokeStyle = COLORS.grid;
  g.beginPath(); g.moveTo(left, 10); g.lineTo(left, h - 20); g.lineTo(w - 10, h - 20); g.stroke();
  g.fillStyle = COLORS.text;
  g.font = '11px system-ui, sans-serif';
  return { x: (v) => left + (v / maxX) * (w - left - 10), y: (v) => h - 20 - (v / maxY) * (h - 30) };
}

export class Inside {
  constructor() {
    this.model = null;
    this.matrix = new AttentionRows();
    this.timeline = new Timeline((frame) => this.show(frame));
    /** The layer the running generation reads attention from (null: none). */
    this.readLayer = null;
    /** The matrix cell under the keyboard or mouse: {q, k}, or null. */
    this.cursor = null;
    /** The overview's strip under the keyboard: {layer, head}. */
    this.picked = { layer: 0, head: 0 };
    this.reset();
    for (const id of ['attention-layer', 'attention-head']) {
      $(id).addEventListener('change', () => {
        this.picked = { layer: Number($('attention-layer').value) || 0, head: this.head() };
        this.redraw();
      });
    }
    $('attention-overview').addEventListener('toggle', () => this.redraw());
    this.wireMatrix();
    this.wireOverview();
    addEventListener('resize', () => this.renderAll());
  }

  reset() {
    this.times = { cache: [], nocache: [] };  // [position, ms] per decode step
    // The state after the newest step: cache rows (kind and text of each), the step's token
    // event, and the attention read back with it.
    this.live = { cached: 0, kinds: [], tokens: [], ev: null, sampled: false, attention: null, layers: null };
    this.matrix.reset();
    this.cursor = null;
    this.timeline.reset();
    this.renderAll();
  }

  /** Geometry from engine.state(). */
  setModel(st) {
    this.model = st;
    this.policy = st;
    this.picked = { layer: 0, head: 0 };
    const layerSel = $('attention-layer');
    const headSel = $('attention-head');
    layerSel.replaceChildren(...Array.from({ length: st.n_layers }, (_, i) => new Option(`${i}`, String(i))));
    headSel.replaceChildren(...Array.from({ length: st.n_heads }, (_, i) => new Option(`${i} (KV head ${Math.floor(i / (st.n_heads / st.n_kv_heads))})`, String(i))));
    const group = st.n_heads / st.n_kv_heads;
    const perTok = st.kv_bytes_per_token;
    $('gqa').textContent =
      `Each layer caches K and V for ${st.n_kv_heads} KV heads × ${st.head_dim} dims, and ${st.n_heads} query heads share them ` +
      `(${group} per KV head: grouped-query attention). So one token costs ${st.n_layers} layers × 2 (K, V) × ${st.n_kv_heads} × ` +
      `${st.head_dim} × ${st.kv_value_bytes} bytes (${st.kv_type}) = ${fmtBytes(perTok)}, a ${group === 1 ? 'full' : `1/${group}`} of the ${fmtBytes(perTok * group)} that one KV head per query head would need.`;
    this.reset();
  }

  /** The attention read-back options for a generation: only what an open view shows. */
  attentionOptions() {
    const o = {};
    this.readLayer = null;
    if ($('attention-panel').open) {
      this.readLayer = Number($('attention-layer').value) || 0;
      o.attention_layer = this.readLayer;
      if ($('attention-prompt').checked) o.attention_prompt = true;
    }
    if ($('attention-overview').open) o.attention_all_layers = true;
    return o;
  }

  /** A turn begins: rows before `start` are kept, the prefilled tokens follow. */
  beginTurn(start, prefilled) {
    const L = this.live;
    // From an empty cache, a new conversation begins, and with it a new timeline.
    if (start === 0) this.timeline.reset();
    L.kinds.length = Math.min(L.kinds.length, start);
    L.tokens.length = Math.min(L.tokens.length, start);
    for (const t of prefilled) { L.kinds.push('prompt'); L.tokens.push(t); }
    L.cached = L.kinds.length;
    this.matrix.truncate(start);
  }

  /** One token was picked; its K and V are being written into row ev.pos. The step is kept for
   * the timeline, and the views follow it unless the timeline shows an earlier step. */
  token(ev, sampled) {
    const L = this.live;
    const h = this.model.n_heads;
    let bytes = 0;
    const keep = (weights) => {
      const a = Float32Array.from(weights);
      bytes += a.byteLength;
      return a;
    };
    if (ev.prefilled) this.beginTurn(ev.turn_start, ev.prefilled);
    if (ev.prompt_attention && this.readLayer !== null) {
      ev.prompt_attention.forEach((w, i) => this.matrix.set(ev.turn_start + i, keep(w), this.readLayer));
    }
    L.attention = null;
    if (ev.attention && this.readLayer !== null) {
      const w = keep(ev.attention);
      L.attention = { weights: w, n: w.length / h, layer: this.readLayer };
      // The query that produced this token is the last one fed: position pos - 1.
      this.matrix.set(ev.pos - 1, w, this.readLayer);
    }
    L.layers = ev.attention_layers ? keep(ev.attention_layers) : null;
    L.kinds[ev.pos] = 'generated';
    L.tokens[ev.pos] = ev.token;
    L.kinds.length = L.tokens.length = ev.pos + 1;
    L.cached = ev.pos + 1;
    L.ev = { id: ev.id, token: ev.token, pos: ev.pos, top: ev.top };
    L.sampled = sampled;
    const frame = this.frame();
    frame.kinds = L.kinds.slice();
    frame.tokens = L.tokens.slice();
    this.timeline.record(frame, bytes + 16 * (L.cached + frame.matrix.rows.length));
    if (this.timeline.live) this.show(null);
  }

  /** Generation ended: the engine's own count of cached rows is the truth, and `st`
   * (engine.state(), if given) says which positions an evicting cache holds. */
  finish(cached, st = null) {
    if (st) this.policy = st;
    const L = this.live;
    L.cached = cached;
    L.kinds.length = Math.min(L.kinds.length, cached);
    L.tokens.length = Math.min(L.tokens.length, cached);
    if (this.timeline.live) this.show(null);
  }

  /** The live state as a frame: the views' input, and what the timeline keeps per step. */
  frame() {
    const L = this.live;
    return { ...L, matrix: this.matrix.upTo(L.ev ? L.ev.pos : 0) };
  }

  /** Draws `frame` (a step from the timeline), or the live state when null. */
  show(frame) {
    this.shown = frame || this.frame();
    $('inside').dataset.step = String(frame ? frame.step : this.timeline.steps);
    this.renderKv();
    this.renderTopk();
    this.redraw();
  }

  /** The attention views again (another layer or head chosen, a panel opened). */
  redraw() {
    this.renderAttention();
    this.renderMatrix();
    this.renderOverview();
  }

  renderAll() {
    this.show(this.timeline.current());
    this.renderTiming();
  }

  /** Time of one decode step at position `pos`, with or without the cache. */
  timing(pos, ms, noCache) {
    this.times[noCache ? 'nocache' : 'cache'].push([pos, ms]);
    this.renderTiming();
  }

  renderTiming() {
    const box = $('timing');
    box.dataset.withCache = JSON.stringify(this.times.cache.map(([p, ms]) => [p, +ms.toFixed(2)]));
    box.dataset.withoutCache = JSON.stringify(this.times.nocache.map(([p, ms]) => [p, +ms.toFixed(2)]));
    const { g, w, h } = fit($('timing-chart'), 160);
    const all = [...this.times.cache, ...this.times.nocache];
    if (all.length === 0) {
      g.fillStyle = COLORS.text;
      g.font = '12px system-ui, sans-serif';
      g.fillText('Generate with and without the cache to compare the time of each step.', 10, 20);
      return;
    }
    const maxP = Math.max(8, ...all.map(([p]) => p)) * 1.05;
    const maxMs = Math.max(1, ...all.map(([, ms]) => ms)) * 1.1;
    const { x, y } = axes(g, w, h, 50, maxP, maxMs);
    g.fillText(`${maxMs.toFixed(0)} ms`, 0, 14);
    g.fillText('position →', w - 70, h - 5);
    for (const [key, color, label] of [['cache', COLORS.prompt, 'with the KV cache'], ['nocache', '#c0392b', 'without: the whole prefix again']]) {
      const pts = [...this.times[key]].sort((a, b) => a[0] - b[0]);
      g.fillStyle = color;
      for (const [p, ms] of pts) g.fillRect(x(p) - 2, y(ms) - 2, 4, 4);
      if (pts.length) g.fillText(label, x(pts.at(-1)[0]) - 160, y(pts.at(-1)[1]) - 6);
    }
  }

  renderKv() {
    const view = $('kv-view');
    const m = this.model;
    if (!m) return;
    const { cached, kinds } = this.shown;
    const layout = cacheLayout(m, cached);
    const rings = layout.filter((l) => l.ring);
    // Under an evicting policy, the positions each layer holds (null: every cached one).
    const kept = layout.map((_, l) => {
      const h = heldPositions(this.policy || m, l, cached);
      return h && new Set(h.filter((p) => p < cached));
    });
    this.renderPolicy(kept, cached);
    // K + V of one row of one layer; a ring layer holds at most its rows.
    const perRow = m.kv_bytes_per_token / m.n_layers;
    const used = layout.reduce((a, l, i) => a + (kept[i] ? kept[i].size : Math.min(cached, l.rows)), 0) * perRow;
    view.dataset.cachedTokens = String(cached);
    view.dataset.capacityTokens = String(m.context);
    view.dataset.bytesUsed = String(used);
    view.dataset.bytesAllocated = String(m.kv_cache_bytes);
    view.dataset.layers = String(m.n_layers);
    view.dataset.ringLayers = String(rings.length);
    view.dataset.ringRows = rings.length ? String(rings[0].rows) : '';
    const perLayerTok = perRow / 2;
    const held = (l) => (kept[layout.indexOf(l)] ? kept[layout.indexOf(l)].size : Math.min(cached, l.rows));
    const full = layout.find((l) => !l.ring);
    // engine.state().backend: "cpu", "reference" or "gpu: <adapter>".
    const where = m.backend.startsWith('gpu') ? 'in GPU memory' : 'in wasm memory (the CPU backend), not GPU memory';
    view.dataset.memory = m.backend.startsWith('gpu') ? 'gpu' : 'wasm';
    const parts = [
      `${cached} of ${m.context} positions cached · K ${fmtBytes(used / 2)} + V ${fmtBytes(used / 2)} = ${fmtBytes(used)} used of ${fmtBytes(m.kv_cache_bytes)} allocated ${where}`,
    ];
    if (full) parts.push(`per ${rings.length ? 'full-attention ' : ''}layer: K ${fmtBytes(perLayerTok * held(full))}, V ${fmtBytes(perLayerTok * held(full))} of ${fmtBytes(perLayerTok * full.rows)} each`);
    if (rings.length) parts.push(`per sliding-window layer: K ${fmtBytes(perLayerTok * held(rings[0]))}, V ${fmtBytes(perLayerTok * held(rings[0]))} of ${fmtBytes(perLayerTok * rings[0].rows)} each (a ring of ${rings[0].rows} rows)`);
    $('kv-bytes').textContent = parts.join(' · ');
    const ringNote = $('kv-ring');
    ringNote.hidden = rings.length === 0;
    if (rings.length) {
      const r = rings[0];
      const gone = r.overwritten ? ` Positions 0–${r.overwritten - 1} have been overwritten there.` : '';
      ringNote.replaceChildren(
        `${rings.length} of ${m.n_layers} layers attend over a sliding window of the last ${m.sliding_window} positions; their cache is a ring of ${r.rows} rows: `,
        `position p goes to row p mod ${r.rows}, so the band wraps and the newest row (`, el('span', { class: 'key newest', text: 'newest' }),
        `) moves along it; rows older than the window (`, el('span', { class: 'key stale', text: 'outside the window' }),
        `) are overwritten next.${gone}`);
    }

    // Layers × cache rows: each layer's row has a K half and a V half; a column is one cache row,
    // which in a full-attention layer is the position itself. A ring layer's band ends at its last row.
    const cols = Math.min(m.context, Math.max(64, 2 ** Math.ceil(Math.log2(cached + 1))));
    const rowH = 4;
    const { g, w } = fit($('kv-grid'), m.n_layers * rowH + 16);
    const cw = w / cols;
    const colW = Math.max(cw - (cw > 3 ? 1 : 0), 0.5);
    layout.forEach((lay, l) => {
      const y = l * rowH;
      for (let c = 0; c < Math.min(cols, lay.rows); c++) {
        const p = lay.positions[c];
        const sinks = (this.policy || m).kv_sinks || 0;
        const kind = p < 0 ? 'free' : kept[l] && !kept[l].has(p) ? 'evicted' : kept[l] && p < sinks ? 'sink'
          : p < lay.firstAttended ? 'stale' : kinds[p] || 'prompt';
        g.fillStyle = COLORS[kind];
        g.globalAlpha = 1;
        g.fillRect(c * cw, y, colW, rowH / 2 - 0.5);
        g.globalAlpha = kind === 'free' ? 1 : 0.7;
        g.fillRect(c * cw, y + rowH / 2, colW, rowH / 2 - 0.5);
      }
      g.globalAlpha = 1;
      if (lay.ring) {
        if (lay.newest >= 0 && lay.newest < cols) {
          g.fillStyle = COLORS.newest;
          g.fillRect(lay.newest * cw, y, Math.max(colW, 2), rowH - 0.5);
        }
        if (lay.rows < cols) {
          g.fillStyle = COLORS.grid;
          g.fillRect(lay.rows * cw, y, 1, rowH - 0.5);
        }
      }
    });
    g.fillStyle = COLORS.text;
    g.font = '11px system-ui, sans-serif';
    const pol = this.policy || m;
    g.fillText(`cache rows 0–${cols - 1} of ${m.context} · ${m.n_layers} layers (top half of each row K, bottom half V)` +
      (rings.length ? ` · ${rings.length} ring layers of ${rings[0].rows} rows` : '') +
      (pol.kv_policy && pol.kv_policy !== 'f32' ? ` · ${pol.kv_policy}: ${fmtBytes(pol.kv_bytes_per_position)} a position` : ''), 0, m.n_layers * rowH + 12);

    this.renderMemoryChart(cached);
  }

  /**
   * The legend line of the loaded cache policy (#kv-policy-legend), with what layer 0 holds as
   * data attributes for automation: data-kv-policy, data-bytes-per-position, and under an
   * evicting policy data-held, data-evicted and data-sinks (positions, comma-separated).
   */
  renderPolicy(held, cached) {
    const st = this.policy || this.model;
    const legend = $('kv-policy-legend');
    const view = $('kv-view');
    view.dataset.kvPolicy = st.kv_policy || '';
    view.dataset.bytesPerPosition = String(st.kv_bytes_per_position ?? '');
    const parts = [describePolicy(st, fmtBytes)];
    const h = held[0];
    if (h) {
      const kept = [...h].sort((a, b) => a - b);
      const evicted = Array.from({ length: cached }, (_, p) => p).filter((p) => !h.has(p));
      const sinks = kept.filter((p) => p < (st.kv_sinks || 0));
      view.dataset.held = kept.join(',');
      view.dataset.evicted = evicted.join(',');
      view.dataset.sinks = sinks.join(',');
      parts.push(` Layer 0 holds ${kept.length} of ${cached} positions: `,
        el('span', { class: 'key evicted', text: 'evicted' }), ` ${evicted.length}`);
      if (st.kv_sinks) parts.push(', ', el('span', { class: 'key sink', text: 'sinks' }), ` ${sinks.length}`);
      parts.push('.');
    } else {
      for (const k of ['held', 'evicted', 'sinks']) delete view.dataset[k];
    }
    legend.replaceChildren(...parts);
    // The exact cache needs no legend: the paragraph below says what its positions cost.
    legend.hidden = (st.kv_policy || 'f32') === 'f32';
  }

  /** KV bytes against tokens cached: this model's line up to `cached`, and what one KV head per
   * query head would cost. */
  renderMemoryChart(cached) {
    const m = this.model;
    const { g, w, h } = fit($('kv-chart'), 90);
    const maxT = Math.max(16, cached) * 1.1;
    const group = m.n_heads / m.n_kv_heads;
    const maxB = maxT * m.kv_bytes_per_token * group;
    const { x, y } = axes(g, w, h, 40, maxT, maxB);
    g.fillText('tokens cached →', w - 110, h - 5);
    g.fillText(fmtBytes(maxB), 0, 12);
    g.setLineDash([4, 4]);
    g.strokeStyle = COLORS.text;
    g.beginPath(); g.moveTo(x(0), y(0)); g.lineTo(x(maxT), y(maxB)); g.stroke();
    g.setLineDash([]);
    g.fillText(`without GQA (×${group})`, x(maxT * 0.55), y(maxT * 0.62 * m.kv_bytes_per_token * group) - 4);
    // Ring layers stop growing at their rows: the line bends there.
    const rowsOf = m.layer_rows && m.layer_rows.length === m.n_layers ? m.layer_rows : [m.context];
    // An evicting policy holds at most its budget of positions in every layer: the line bends there too.
    const budget = policyBudget((this.policy || m).kv_policy);
    const bytesAt = (t) => (rowsOf.reduce((a, r) => a + Math.min(t, r, budget), 0) * m.kv_bytes_per_token) / rowsOf.length;
    const bends = [...new Set([...rowsOf, budget])].filter((r) => r < cached).sort((a, b) => a - b);
    g.strokeStyle = COLORS.prompt;
    g.lineWidth = 2;
    g.beginPath(); g.moveTo(x(0), y(0));
    for (const t of [...bends, cached]) g.lineTo(x(t), y(bytesAt(t)));
    g.stroke();
    g.lineWidth = 1;
    g.fillStyle = COLORS.prompt;
    g.fillText(`${fmtBytes(bytesAt(cached))} at ${cached}`, Math.min(x(cached) + 4, w - 110), y(bytesAt(cached)) - 4);
  }

  renderTopk() {
    const { ev, sampled } = this.shown;
    if (!ev) {
      $('topk').replaceChildren();
      $('topk-caption').textContent = 'Generate to see the distribution each token is picked from.';
      return;
    }
    const rows = [...ev.top];
    if (!rows.some((r) => r.id === ev.id)) rows.push({ id: ev.id, p: NaN, text: ev.token });
    $('topk').replaceChildren(...rows.map((r) => {
      const chosen = r.id === ev.id;
      const known = !Number.isNaN(r.p);
      return el('tr', { class: chosen ? 'chosen' : null, data: { tokenId: String(r.id), p: known ? String(r.p) : '', chosen: chosen ? 'true' : undefined } },
        el('td', { class: 'tok', text: visible(r.text) }),
        el('td', { text: String(r.id) }),
        el('td', {}, el('span', { class: 'bar', style: { width: `${known ? Math.max(1, r.p * 100) : 0}%` } })),
        el('td', { text: known ? r.p.toFixed(4) : 'outside the top rows' }),
        el('td', { text: chosen ? (sampled ? '← sampled' : '← argmax') : '' }));
    }));
    $('topk-caption').textContent = `Pr(y | cache) for position ${ev.pos}: the ${ev.top.length} most probable of ${this.model.vocab_size} tokens (softmax of the logits read back)`;
  }

  /** The head chosen for the attention views. */
  head() {
    return Number($('attention-head').value) || 0;
  }

  /** The newest query's weights over the cached tokens, for the chosen head. */
  renderAttention() {
    const box = $('attention');
    const strip = $('attention-tokens');
    strip.replaceChildren();
    const att = this.shown && this.shown.attention;
    if (!this.model || !att || !$('attention-panel').open) {
      box.dataset.weights = '';
      $('attention-caption').textContent = 'The newest query\'s weights over the cached tokens appear here after a step read with this panel open.';
      return;
    }
    const { weights, n, layer } = att;
    const { kinds, tokens } = this.shown;
    const head = this.head();
    const row = weights.subarray(head * n, (head + 1) * n);
    box.dataset.weights = Array.from(row, (v) => v.toPrecision(6)).join(',');
    box.dataset.positions = String(n);
    box.dataset.layer = String(layer);
    box.dataset.head = String(head);
    const max = Math.max(...row, 1e-9);
    strip.append(...Array.from(row, (wt, p) => el('span', {
      class: `att-tok ${kinds[p] || 'prompt'}`,
      text: visible(tokens[p] ?? '?'),
      style: { '--w': String(wt / max) },
      title: `position ${p}: weight ${wt.toFixed(4)}`,
    })));
    const sum = row.reduce((a, b) => a + b, 0);
    $('attention-caption').textContent = `The newest query (position ${n - 1}) over the ${n} cached keys, layer ${layer}, head ${head}; ` +
      `weights sum to ${sum.toFixed(4)}; shade relative to the largest. Hover a token for its weight.`;
  }

  /** The query × key matrix of the frame on show, for the chosen head. */
  renderMatrix() {
    const canvas = $('attention-matrix');
    const caption = $('attention-matrix-caption');
    if (!this.model || !$('attention-panel').open) return;
    const { matrix, kinds, tokens } = this.shown;
    const head = this.head();
    this.geometry = drawMatrix(canvas, { rows: matrix.rows, head, nHeads: this.model.n_heads, kinds, cursor: this.cursor });
    canvas.dataset.layer = matrix.layer === null ? '' : String(matrix.layer);
    canvas.dataset.head = String(head);
    const { rows: R, cols: C } = this.geometry;
    canvas.setAttribute('aria-label', `Attention matrix, ${R} queries by ${C} keys`);
    if (R === 0) {
      caption.textContent = 'Generate or Step with this panel open: each step adds one row.';
      return;
    }
    const missing = matrix.rows.filter((r) => !r).length + (R - matrix.rows.length);
    const wanted = Number($('attention-layer').value) || 0;
    const parts = [`Layer ${matrix.layer}, head ${head}: ${R} queries × ${C} keys; row q is position q's query over keys 0…q, each row sums to 1.`];
    if (missing) parts.push(`${missing} rows were not read (grey): the panel was closed, the prompt's rows were not asked for, or another layer was read.`);
    if (matrix.layer !== wanted) parts.push(`These rows are layer ${matrix.layer}; Generate or Step to read layer ${wanted}.`);
    const c = this.cursor;
    if (c && c.q < R && c.k < C) {
      const line = headRow(matrix.rows[c.q], head, this.model.n_heads);
      const w = line && c.k < line.length ? line[c.k].toFixed(4) : c.k > c.q ? 'not yet cached' : 'not read';
      parts.unshift(`Query ${c.q} (${visible(tokens[c.q] ?? '?')}) → key ${c.k} (${visible(tokens[c.k] ?? '?')}): ${w}.`);
    } else {
      parts.push('Point at a cell, or focus the matrix and use the arrow keys, to read its weight.');
    }
    caption.textContent = parts.join(' ');
  }

  /** The newest query in every layer × head, for the frame on show. */
  renderOverview() {
    if (!this.model || !$('attention-overview').open) return;
    const m = this.model;
    const { layers, ev, tokens } = this.shown;
    this.overview = drawOverview($('attention-layers'), { weights: layers, nLayers: m.n_layers, nHeads: m.n_heads, selected: this.picked });
    const caption = $('attention-layers-caption');
    if (!layers) {
      caption.textContent = 'Generate or Step with this panel open to see every layer and head.';
      return;
    }
    const n = layers.length / (m.n_layers * m.n_heads);
    $('attention-layers').dataset.keys = String(n);
    const { layer, head } = this.picked;
    const row = layers.subarray((layer * m.n_heads + head) * n, (layer * m.n_heads + head + 1) * n);
    let top = 0;
    for (let k = 1; k < n; k++) if (row[k] > row[top]) top = k;
    caption.textContent = `The query at position ${ev.pos - 1} over ${n} keys in ${m.n_layers} layers × ${m.n_heads} heads. ` +
      `Layer ${layer}, head ${head} (outlined) puts most weight on position ${top} (${visible(tokens[top] ?? '?')}, ${row[top].toFixed(4)}). ` +
      'Enter or a click shows it in the matrix.';
  }

  /** Mouse and keyboard reading of the matrix's cells: the cursor's weight goes to the caption. */
  wireMatrix() {
    wireGrid($('attention-matrix'), {
      geometry: () => this.geometry,
      at: () => (this.cursor ? [this.cursor.q, this.cursor.k] : [this.geometry.rows - 1, 0]),
      mark: (q, k) => {
        this.cursor = { q, k };
        this.renderMatrix();
      },
      pointer: 'mousemove',
      // Home and End: the row's first key and its own.
      keys: { Home: (q) => [q, 0], End: (q) => [q, q] },
    });
  }

  /** Choosing a layer and head from the overview, by mouse or keyboard. */
  wireOverview() {
    wireGrid($('attention-layers'), {
      geometry: () => this.overview,
      at: () => [this.picked.layer, this.picked.head],
      mark: (layer, head) => {
        this.picked = { layer, head };
        this.renderOverview();
      },
      pointer: 'click',
      choose: () => {
        $('attention-layer').value = String(this.picked.layer);
        $('attention-head').value = String(this.picked.head);
        this.redraw();
      },
    });
  }

  /** The matrix on show, for the chosen head: {layer, head, rows: [[w…] | null]} (for tests). */
  matrixView() {
    const { matrix } = this.shown;
    const head = this.head();
    return { layer: matrix.layer, head, rows: matrix.rows.map((r) => (r ? Array.from(headRow(r, head, this.model.n_heads)) : null)) };
  }

  /** The ordered events of one decode step, with the cache before and after. */
  renderStep(ev, before, after, next) {
    const m = this.model;
    const i = ev.pos;
    const rowBytes = m.kv_bytes_per_token;
    const ring = cacheLayout(m, after).find((l) => l.ring);
    const items = [
      `argmax over the logits from the previous step: Pr(y | cache) is highest for ${JSON.stringify(ev.token)} (id ${ev.id}${ev.top[0] ? `, p = ${ev.top[0].p.toFixed(4)}` : ''}) — this is token ${i}.`,
      `Embed token ${i}: one row of the token-embedding table → x (the residual stream).`,
      `In each of the ${m.n_layers} layers, compute q${i} (${m.n_heads} heads × ${m.head_dim}) and k${i}, v${i} (${m.n_kv_heads} KV heads × ${m.head_dim}) for this token only, and rotate q and k by position ${i} (RoPE).`,
      `Write k${i} and v${i} into cache row ${i} of every layer${ring ? ` (row ${i % ring.rows} of each ring, below)` : ''}: ${fmtBytes(rowBytes)} in all. Rows 0–${i - 1} are not recomputed.`,
      `Attend: q${i} against the ${i + 1} cached keys k0…k${i}, its own k${i} included; softmax; a weighted sum of v0…v${i}. ` +
        `(Counting from 1, this is token ${i + 1}: q${i + 1} attends over k1…k${i + 1}.)`,
      `MLP (SwiGLU) in each layer, residual adds, final norm.`,
      `Logits: one score per vocabulary token, read back once; the next Step's argmax picks from them${next ? ` — most probable now: ${JSON.stringify(next.text)} (p = ${next.p.toFixed(4)})` : ''}.`,
    ];
    if (ring) {
      items.splice(4, 0, `In the ${m.layer_rows.filter((r) => r < m.context).length} sliding-window layers the cache is a ring of ${ring.rows} rows: ` +
        `k${i} and v${i} go to row ${i % ring.rows} (${i} mod ${ring.rows}), and q${i} attends only over the last ${m.sliding_window} positions ` +
        `(from ${Math.max(0, i + 1 - m.sliding_window)}).`);
    }
    $('step-log').replaceChildren(...items.map((t) => el('li', { text: t })));
    $('step-cache').textContent = `Cache before: ${before} rows (positions 0–${before - 1}). After: ${after} rows — one more.`;
  }
}
