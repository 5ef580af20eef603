// Attention views: the causal query × key matrix of one layer and head (each row one query over
// the cache as it was at that step), and the newest query in every layer × head as heat strips.
// Shade is √weight, so that weights well below the largest still show; the numbers are in the
// captions and data attributes.
import { fit } from './dom.js';

/** Weights of one layer for every query position read so far: rows[q] is [h × n_q]. */
export class AttentionRows {
  constructor() {
    this.reset();
  }

  reset() {
    this.layer = null;
    this.rows = [];
  }

  /** Forgets the rows of queries from position `n` on (a new turn rewrites them). */
  truncate(n) {
    this.rows.length = Math.min(this.rows.length, n);
  }

  /** The weights of the query at position `q` in `layer`; rows read from another layer are
   * dropped, since a matrix shows one layer. */
  set(q, weights, layer) {
    if (layer !== this.layer) {
      this.rows = [];
      this.layer = layer;
    }
    this.rows[q] = weights;
  }

  /** The rows of queries 0..n-1, as the matrix stood when query n-1 was the newest; null where
   * a row was not read (the array is dense, so every view can map over it). */
  upTo(n) {
    return { layer: this.layer, rows: Array.from({ length: Math.max(0, n) }, (_, q) => this.rows[q] || null) };
  }
}

/** Row `q`'s weights for `head`: [n_q], or null when the row was not read. */
export function headRow(row, head, nHeads) {
  if (!row) return null;
  const n = row.length / nHeads;
  return row.subarray(head * n, (head + 1) * n);
}

const HEAT = [224, 138, 30];
const KIND = { prompt: '#2a6fdb', generated: '#e08a1e' };
const TEXT = '#888';
const FONT = '11px system-ui, sans-serif';

/** An off-screen canvas of `w` × `h` pixels filled by `pixel(x, y)` → [r, g, b, a] or null;
 * null when either side is not a positive whole number (nothing to draw). */
function bitmap(w, h, pixel) {
  if (!(Number.isInteger(w) && Number.isInteger(h) && w > 0 && h > 0)) return null;
  const c = document.createElement('canvas');
  c.width = w;
  c.height = h;
  const img = new ImageData(w, h);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const px = pixel(x, y);
      if (px) img.data.set(px, (y * w + x) * 4);
    }
  }
  c.getContext('2d').putImageData(img, 0, 0);
  return c;
}

const heat = (w) => [...HEAT, Math.round(255 * Math.sqrt(Math.max(0, Math.min(1, w))))];
const UNREAD = [136, 136, 136, 40];

/**
 * Draws the matrix of `rows` (one per query position; null where not read) for `head` into
 * `canvas`: queries down, keys across, the newest query outlined, `cursor` ({q, k}) boxed.
 * `kinds[p]` colours the bar beside row p (prompt or generated). Returns the geometry for
 * hit-testing (wireGrid's): {x0, y0, pitchX, pitchY, rows, cols}.
 */
export function drawMatrix(canvas, { rows, head, nHeads, kinds, cursor }) {
  const R = rows.length;
  // Array.from, not map: a row that was never read may be a hole, and map keeps holes.
  const lines = Array.from(rows, (r) => headRow(r, head, nHeads));
  const C = lines.reduce((c, l) => Math.max(c, l ? l.length : 0), R);
  const width = canvas.clientWidth || 600;
  const labelW = 34;
  const bar = 6;
  const cell = Math.max(0.5, Math.min(22, (width - labelW - bar - 8) / Math.max(C, 1)));
  const x0 = labelW + bar + 2;
  const y0 = 16;
  const { g } = fit(canvas, Math.max(60, Math.ceil(y0 + R * cell + 32)));
  g.font = FONT;
  canvas.dataset.rows = String(R);
  canvas.dataset.cols = String(C);
  const geometry = { x0, y0, pitchX: cell, pitchY: cell, rows: R, cols: C };
  if (R === 0) return geometry;

  const img = bitmap(C, R, (k, q) => {
    const l = lines[q];
    if (!l) return k <= q ? UNREAD : null;
    return k < l.length ? heat(l[k]) : null;
  });
  g.imageSmoothingEnabled = false;
  if (img && cell > 0) g.drawImage(img, x0, y0, C * cell, R * cell);

  // Beside each row, the kind of token whose query it is.
  for (let q = 0; q < R; q++) {
    g.fillStyle = KIND[kinds[q]] || TEXT;
    g.fillRect(labelW, y0 + q * cell, bar, Math.max(cell - (cell > 3 ? 1 : 0), 0.5));
  }
  // Positions down the side, and across the top when the cells are wide enough.
  g.fillStyle = TEXT;
  const every = Math.max(1, Math.ceil(14 / cell));
  for (let p = 0; p < Math.max(R, C); p += every) {
    if (p < R) g.fillText(String(p), 2, y0 + (p + 0.5) * cell + 4);
    if (p < C && cell >= 14) g.fillText(String(p), x0 + p * cell + 2, y0 - 4);
  }
  if (cell < 14) g.fillText('keys (cached positions) →', x0, y0 - 4);
  g.fillText('↑ queries, one row per step; the newest outlined', 2, y0 + R * cell + 13);
  g.fillText('bar: blue prompt, orange generated · shade = √weight', 2, y0 + R * cell + 27);

  // The newest query, and the cell under the keyboard or mouse cursor.
  g.strokeStyle = KIND.generated;
  g.lineWidth = 1.5;
  g.strokeRect(x0 - 1, y0 + (R - 1) * cell - 1, C * cell + 2, cell + 2);
  if (cursor && cursor.q < R && cursor.k < C) {
    g.strokeStyle = '#2a6fdb';
    g.lineWidth = 2;
    g.strokeRect(x0 + cursor.k * cell - 1, y0 + cursor.q * cell - 1, cell + 2, cell + 2);
  }
  g.lineWidth = 1;
  return geometry;
}

/**
 * Draws the newest query's weights in every layer × head (`weights` [L × h × n]) as heat strips,
 * layers down and heads across, with `selected` ({layer, head}) boxed. Returns the geometry for
 * hit-testing (wireGrid's, a row per layer and a column per head).
 */
export function drawOverview(canvas, { weights, nLayers, nHeads, selected }) {
  const x0 = 30;
  const y0 = 16;
  const ch = 9;
  const gap = 3;
  const cw = Math.max(4, ((canvas.clientWidth || 600) - x0) / nHeads - gap);
  const { g } = fit(canvas, y0 + nLayers * ch + 4);
  g.font = FONT;
  const n = weights ? weights.length / (nLayers * nHeads) : 0;
  g.fillStyle = TEXT;
  for (let h = 0; h < nHeads; h++) g.fillText(`h${h}`, x0 + h * (cw + gap), y0 - 4);
  for (let l = 0; l < nLayers; l++) {
    if (l % 5 === 0) {
      g.fillStyle = TEXT;
      g.fillText(`L${l}`, 0, y0 + l * ch + ch - 1);
    }
    for (let h = 0; h < nHeads; h++) {
      const x = x0 + h * (cw + gap);
      const y = y0 + l * ch;
      g.fillStyle = '#8882';
      g.fillRect(x, y, cw, ch - 1);
      if (!n) continue;
      const row = weights.subarray((l * nHeads + h) * n, (l * nHeads + h + 1) * n);
      // One pixel column shows the largest weight of the keys that fall in it.
      const px = Math.max(1, Math.floor(cw));
      for (let c = 0; c < px; c++) {
        const a = Math.floor((c * n) / px);
        const b = Math.max(a + 1, Math.floor(((c + 1) * n) / px));
        let w = 0;
        for (let k = a; k < b && k < n; k++) w = Math.max(w, row[k]);
        const [r, gg, bb, al] = heat(w);
        g.fillStyle = `rgba(${r},${gg},${bb},${al / 255})`;
        g.fillRect(x + (c * cw) / px, y, cw / px + 0.3, ch - 1);
      }
    }
  }
  if (selected) {
    g.strokeStyle = '#2a6fdb';
    g.lineWidth = 2;
    g.strokeRect(x0 + selected.head * (cw + gap) - 1, y0 + selected.layer * ch - 1, cw + 2, ch + 1);
    g.lineWidth = 1;
  }
  return { x0, y0, pitchX: cw + gap, pitchY: ch, rows: nLayers, cols: nHeads };
}

/** Arrow keys as [row, column] steps. */
const ARROWS = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };

/**
 * Pointer and keyboard use of a grid drawn on `canvas`. `geometry()`: the last draw's
 * {x0, y0, pitchX, pitchY, rows, cols}; `at()`: the marked cell, [row, col]; `mark(row, col)`
 * marks another; `pointer`: the event that marks the cell under the pointer ('mousemove' to
 * read, 'click' to choose); the arrow keys move the mark, `keys` maps other keys to a target
 * cell from (row, col), and Enter, Space or the pointer event call `choose()` when given.
 */
export function wireGrid(canvas, { geometry, at, mark, pointer, choose = null, keys = {} }) {
  canvas.addEventListener(pointer, (e) => {
    const g = geometry();
    if (!g) return;
    const r = canvas.getBoundingClientRect();
    const row = Math.floor((e.clientY - r.top - g.y0) / g.pitchY);
    const col = Math.floor((e.clientX - r.left - g.x0) / g.pitchX);
    if (row < 0 || col < 0 || row >= g.rows || col >= g.cols) return;
    mark(row, col);
    if (choose) choose();
  });
  canvas.addEventListener('keydown', (e) => {
    const g = geometry();
    if (!g || g.rows === 0) return;
    const [row, col] = at();
    const clamp = (v, n) => Math.max(0, Math.min(n - 1, v));
    const step = ARROWS[e.key];
    if (step) mark(clamp(row + step[0], g.rows), clamp(col + step[1], g.cols));
    else if (keys[e.key]) mark(...keys[e.key](row, col));
    else if (choose && (e.key === 'Enter' || e.key === ' ')) choose();
    else return;
    e.preventDefault();
  });
}
