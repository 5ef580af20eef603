// Small DOM helpers shared by the page's modules. Whatever the model or the user supplies goes in
// as text, never as HTML.

export const $ = (id) => document.getElementById(id);

/** Token text made visible: spaces and newlines shown as symbols. */
export function visible(t) {
  return t.replace(/ /g, '␣').replace(/\n/g, '↵').replace(/\t/g, '⇥') || '∅';
}

/** Sizes a canvas to its CSS width and `cssHeight` at device resolution; returns its 2D context
 * (drawing in CSS pixels, cleared) and size. */
export function fit(canvas, cssHeight) {
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

/** Bytes as MB with one decimal. */
export const mb = (b) => (b / 1048576).toFixed(1);

/** Bytes for people: B, KiB or MiB. */
export const fmtBytes = (b) => (b >= 1048576 ? `${(b / 1048576).toFixed(2)} MiB` : b >= 1024 ? `${(b / 1024).toFixed(1)} KiB` : `${b} B`);

/**
 * A new element: `el('td', { class: 'tok', text: '…', data: { id: '3' } }, ...children)`.
 * Props: `text` (set as text), `class`, `data` (dataset entries; undefined ones are left out), `style` (properties, custom ones
 * included, set through the CSSOM so that the Content-Security-Policy allows them), `on<event>`
 * (a listener); any other prop is an attribute. Children are nodes or strings (added as text).
 */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null) continue;
    if (key === 'text') node.textContent = String(value);
    else if (key === 'class') node.className = value;
    else if (key === 'data') for (const [k, v] of Object.entries(value)) { if (v !== undefined) node.dataset[k] = v; }
    else if (key === 'style') for (const [p, v] of Object.entries(value)) node.style.setProperty(p, v);
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, String(value));
  }
  node.append(...children);
  return node;
}
