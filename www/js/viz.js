// "Inside the model": the KV cache filling layer by layer, the next-token distribution the
// argmax picks from, the attention of the newest query over the cache, the events of one decode
// step, and per-token time with and without the cache. Text is always inserted as text.
import { $, el } from './dom.js';

const fmtBytes = (b) => (b >= 1048576 ? `${(b / 1048576).toFixed(2)} MiB` : b >= 1024 ? `${(b / 1024).toFixed(1)} KiB` : `${b} B`);
const COLORS = { prompt: '#2a6fdb', generated: '#e08a1e', free: '#8883', grid: '#8886', text: '#888' };

/** Sizes a canvas to its CSS box at device resolution; returns its 2D context and size. */
function fit(canvas, cssHeight) {
  const w = canvas.clientWidth || 600;
  const dpr = window.devicePixelRatio || 1;
  canvas.style.height = `${cssHeight}px`;
  canvas.width = Math.round(w * dpr);
  canvas.height = Math.round(cssHeight * dpr);
  const g = canvas.getContext('2d');
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, cssHeight);
  return { g, w, h: cssHeight };
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

/** Token text made visible: spaces and newlines shown as symbols. */
function visible(t) {
  return t.replace(/ /g, '␣').replace(/\n/g, '↵').replace(/\t/g, '⇥') || '∅';
}

export class Inside {
  constructor() {
    this.model = null;
    this.reset();
    $('attention-layer').addEventListener('change', () => this.renderAttention());
    $('attention-head').addEventListener('change', () => this.renderAttention());
    addEventListener('resize', () => this.renderAll());
  }

  reset() {
    this.times = { cache: [], nocache: [] };  // [position, ms] per decode step
    this.kinds = [];        // per cache row: 'prompt' | 'generated'
    this.tokens = [];       // per cache row: display text
    this.cached = 0;
    this.memory = [[0, 0]]; // [tokens, bytes] after each step
    this.attention = null;  // last step's weights, [h × n]
    this.renderAll();
  }

  /** Geometry from engine.state(). */
  setModel(st) {
    this.model = st;
    const layerSel = $('attention-layer');
    const headSel = $('attention-head');
    layerSel.replaceChildren(...Array.from({ length: st.n_layers }, (_, i) => new Option(`layer ${i}`, String(i))));
    headSel.replaceChildren(...Array.from({ length: st.n_heads }, (_, i) => new Option(`head ${i} (KV head ${Math.floor(i / (st.n_heads / st.n_kv_heads))})`, String(i))));
    const group = st.n_heads / st.n_kv_heads;
    const perTok = st.kv_bytes_per_token;
    $('gqa').textContent =
      `Each layer caches K and V for ${st.n_kv_heads} KV heads × ${st.head_dim} dims, and ${st.n_heads} query heads share them ` +
      `(${group} per KV head: grouped-query attention). So one token costs ${st.n_layers} layers × 2 (K, V) × ${st.n_kv_heads} × ` +
      `${st.head_dim} × ${st.kv_value_bytes} bytes (${st.kv_type}) = ${fmtBytes(perTok)}, a ${group === 1 ? 'full' : `1/${group}`} of the ${fmtBytes(perTok * group)} that one KV head per query head would need.`;
    this.reset();
  }

  /** The attention layer to read back, or null when the view is closed (no extra readback then). */
  attentionLayer() {
    return $('attention-panel').open ? Number($('attention-layer').value) || 0 : null;
  }

  /** A turn begins: rows before `start` are kept, the prefilled tokens follow. */
  beginTurn(start, prefilled) {
    this.kinds.length = Math.min(this.kinds.length, start);
    this.tokens.length = Math.min(this.tokens.length, start);
    for (const t of prefilled) { this.kinds.push('prompt'); this.tokens.push(t); }
    this.cached = this.kinds.length;
    this.memory = this.memory.filter(([n]) => n <= this.cached);
    if (this.memory.length === 0) this.memory.push([0, 0]);
    this.memory.push([this.cached, this.cached * (this.model?.kv_bytes_per_token || 0)]);
    this.renderKv();
  }

  /** One token was picked; its K and V are being written into row ev.pos. */
  token(ev, sampled) {
    if (ev.prefilled) this.beginTurn(ev.turn_start, ev.prefilled);
    if (ev.attention) this.attention = { weights: ev.attention, n: ev.pos };
    this.kinds[ev.pos] = 'generated';
    this.tokens[ev.pos] = ev.token;
    this.kinds.length = this.tokens.length = ev.pos + 1;
    this.cached = ev.pos + 1;
    this.memory.push([this.cached, this.cached * this.model.kv_bytes_per_token]);
    this.renderTopk(ev, sampled);
    this.renderKv();
    this.renderAttention();
  }

  /** Generation ended: the engine's own count of cached rows is the truth. */
  finish(cached) {
    this.cached = cached;
    this.kinds.length = Math.min(this.kinds.length, cached);
    this.tokens.length = Math.min(this.tokens.length, cached);
    this.renderKv();
  }

  renderAll() {
    this.renderKv();
    this.renderAttention();
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
    const used = this.cached * m.kv_bytes_per_token;
    view.dataset.cachedTokens = String(this.cached);
    view.dataset.capacityTokens = String(m.context);
    view.dataset.bytesUsed = String(used);
    view.dataset.bytesAllocated = String(m.kv_bytes_allocated);
    view.dataset.layers = String(m.n_layers);
    const perLayerTok = m.kv_bytes_per_token / m.n_layers / 2;
    $('kv-bytes').textContent =
      `${this.cached} of ${m.context} positions cached · K ${fmtBytes(used / 2)} + V ${fmtBytes(used / 2)} = ${fmtBytes(used)} used of ` +
      `${fmtBytes(m.kv_bytes_allocated)} allocated · per layer: K ${fmtBytes(perLayerTok * this.cached)}, V ${fmtBytes(perLayerTok * this.cached)} ` +
      `of ${fmtBytes(perLayerTok * m.context)} each`;

    // Layers × positions: each layer's row has a K half and a V half; a column is one token.
    const window = Math.min(m.context, Math.max(64, 2 ** Math.ceil(Math.log2(this.cached + 1))));
    const rowH = 6;
    const { g, w } = fit($('kv-grid'), m.n_layers * rowH + 18);
    const cw = w / window;
    for (let p = 0; p < window; p++) {
      const kind = this.kinds[p] || 'free';
      for (let l = 0; l < m.n_layers; l++) {
        g.fillStyle = COLORS[kind];
        g.globalAlpha = 1;
        g.fillRect(p * cw, l * rowH, Math.max(cw - (cw > 3 ? 1 : 0), 0.5), rowH / 2 - 0.5);
        g.globalAlpha = kind === 'free' ? 1 : 0.7;
        g.fillRect(p * cw, l * rowH + rowH / 2, Math.max(cw - (cw > 3 ? 1 : 0), 0.5), rowH / 2 - 0.5);
      }
    }
    g.globalAlpha = 1;
    g.fillStyle = COLORS.text;
    g.font = '11px system-ui, sans-serif';
    g.fillText(`positions 0–${window - 1} of ${m.context} · ${m.n_layers} layers (top half of each row K, bottom half V)`, 0, m.n_layers * rowH + 13);

    this.renderMemoryChart();
  }

  renderMemoryChart() {
    const m = this.model;
    const { g, w, h } = fit($('kv-chart'), 140);
    const maxT = Math.max(16, ...this.memory.map(([n]) => n)) * 1.1;
    const group = m.n_heads / m.n_kv_heads;
    const maxB = maxT * m.kv_bytes_per_token * group;
    const { x, y } = axes(g, w, h, 40, maxT, maxB);
    g.fillText('tokens cached →', w - 110, h - 5);
    g.fillText(fmtBytes(maxB), 0, 12);
    // What one KV head per query head would cost, for comparison.
    g.setLineDash([4, 4]);
    g.strokeStyle = COLORS.text;
    g.beginPath(); g.moveTo(x(0), y(0)); g.lineTo(x(maxT), y(maxT * m.kv_bytes_per_token * group)); g.stroke();
    g.setLineDash([]);
    g.fillText(`without GQA (×${group})`, x(maxT * 0.55), y(maxT * 0.62 * m.kv_bytes_per_token * group) - 4);
    g.strokeStyle = COLORS.prompt;
    g.lineWidth = 2;
    g.beginPath();
    this.memory.forEach(([n, b], i) => (i ? g.lineTo(x(n), y(b)) : g.moveTo(x(n), y(b))));
    g.stroke();
    g.lineWidth = 1;
  }

  renderTopk(ev, sampled) {
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

  renderAttention() {
    const box = $('attention');
    const strip = $('attention-tokens');
    strip.replaceChildren();
    if (!this.model || !this.attention || !$('attention-panel').open) {
      box.dataset.weights = '';
      return;
    }
    const { weights, n } = this.attention;
    const head = Number($('attention-head').value) || 0;
    const row = weights.slice(head * n, (head + 1) * n);
    box.dataset.weights = row.map((v) => v.toPrecision(6)).join(',');
    box.dataset.positions = String(n);
    box.dataset.layer = $('attention-layer').value;
    box.dataset.head = String(head);
    const max = Math.max(...row, 1e-9);
    strip.append(...row.map((wt, p) => el('span', {
      class: `att-tok ${this.kinds[p] || 'prompt'}`,
      text: visible(this.tokens[p] ?? '?'),
      style: { '--w': String(wt / max) },
      title: `position ${p}: weight ${wt.toFixed(4)}`,
    })));
    const sum = row.reduce((a, b) => a + b, 0);
    $('attention-caption').textContent = `The query at position ${n - 1} over the ${n} cached keys (layer ${box.dataset.layer}, head ${head}); weights sum to ${sum.toFixed(4)}. Hover a token for its weight.`;
  }

  /** The ordered events of one decode step, with the cache before and after. */
  renderStep(ev, before, after, next) {
    const m = this.model;
    const i = ev.pos;
    const rowBytes = m.kv_bytes_per_token;
    const items = [
      `argmax over the logits from the previous step: Pr(y | cache) is highest for ${JSON.stringify(ev.token)} (id ${ev.id}${ev.top[0] ? `, p = ${ev.top[0].p.toFixed(4)}` : ''}) — this is token ${i}.`,
      `Embed token ${i}: one row of the token-embedding table → x (the residual stream).`,
      `In each of the ${m.n_layers} layers, compute q${i} (${m.n_heads} heads × ${m.head_dim}) and k${i}, v${i} (${m.n_kv_heads} KV heads × ${m.head_dim}) for this token only, and rotate q and k by position ${i} (RoPE).`,
      `Write k${i} and v${i} into cache row ${i} of every layer: ${fmtBytes(rowBytes)} in all. Rows 0–${i - 1} are not recomputed.`,
      `Attend: q${i} against the ${i + 1} cached keys k0…k${i}; softmax; a weighted sum of v0…v${i}.`,
      `MLP (SwiGLU) in each layer, residual adds, final norm.`,
      `Logits: one score per vocabulary token, read back once; the next Step's argmax picks from them${next ? ` — most probable now: ${JSON.stringify(next.text)} (p = ${next.p.toFixed(4)})` : ''}.`,
    ];
    $('step-log').replaceChildren(...items.map((t) => el('li', { text: t })));
    $('step-cache').textContent = `Cache before: ${before} rows (positions 0–${before - 1}). After: ${after} rows — one more.`;
  }
}
