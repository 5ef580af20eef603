// The model picker (#model-select): the models this site ships (models/manifest.json) and those
// stored in this browser; for the chosen one, before anything is loaded, what it needs (#model-plan):
// weights + KV cache at the chosen context (#context), read by inspectModel from the file's header
// only (a Range request for a shipped model, or the stored copy's first bytes), its architecture
// and shape, its sliding-window rings and whether it has a chat template. Load loads it.
import { $, el, mb } from './dom.js';
import { contextTokens, loadOptions } from './settings.js';
import { state } from './state.js';
import { modelStore, readPrefix } from './model-store.js';
import { guarded, messageOf, report } from './feedback.js';
import { loadManifest, shipped } from './manifest.js';
import { loadModel, loadStored, memoryName, cacheGrowth } from './loading.js';

/** The picker's entries by option value: {value, name, bytes, url | key, local, headerBytes, stored}. */
let entries = new Map();
/** Counts plan requests, so that a slow header read never overwrites a newer choice's plan. */
let planSeq = 0;

const abs = (url) => new URL(url, location.href).href;
const count = (n) => n.toLocaleString('en');

/** Rebuilds the options from the manifest and the store, keeping the selection. */
async function refresh() {
  let stored = [];
  try {
    stored = await modelStore.list();
  } catch {
    // Storage unavailable: the Models panel says so; the shipped models are still listed.
  }
  const storedKeys = new Set(stored.map((m) => m.key));
  const next = new Map();
  for (const m of shipped) {
    const value = abs(m.url);
    next.set(value, { value, name: m.name, file: m.file, bytes: m.bytes, url: m.url, headerBytes: m.header_bytes, stored: storedKeys.has(value), shipped: true });
  }
  for (const m of stored) {
    if (next.has(m.key)) continue;
    const local = m.key.includes('/local-models/');
    next.set(m.key, { value: m.key, name: m.name, file: m.name, bytes: m.bytes, key: m.key, url: local ? null : m.key, local, stored: true, shipped: false });
  }
  entries = next;
  const select = $('model-select');
  const keep = select.value;
  const option = (e) => new Option(e.shipped ? `${e.name} — ${e.file}, ${mb(e.bytes)} MB${e.stored ? ' (stored)' : ''}` : `${e.name}, ${mb(e.bytes)} MB`, e.value);
  const group = (label, list) => {
    const g = el('optgroup', { label });
    g.append(...list.map(option));
    return g;
  };
  const ship = [...next.values()].filter((e) => e.shipped);
  const kept = [...next.values()].filter((e) => !e.shipped);
  select.replaceChildren(...(ship.length ? [group('Shipped with this site', ship)] : []), ...(kept.length ? [group('Stored in this browser', kept)] : []));
  select.disabled = next.size === 0;
  if (next.has(keep)) select.value = keep;
  $('model-picker').dataset.count = String(next.size);
}

/** The entry chosen in the picker, or null. */
function chosen() {
  return entries.get($('model-select').value) || null;
}

/** The first bytes of `e`'s file, enough for its header: `want` bytes, from the stored copy
 * when there is one, else from the network with a Range request (a server that ignores Range
 * sends the whole file, of which only `want` bytes are read). */
async function headOf(e, want) {
  const key = e.key || abs(e.url);
  const hit = await modelStore.prefix(key, want);
  if (hit) return hit.bytes;
  if (!e.url) throw new Error('it is no longer stored in this browser');
  let res;
  try {
    res = await fetch(e.url, { headers: { Range: `bytes=0-${want - 1}` } });
  } catch (err) {
    throw new Error(`${e.url}: ${messageOf(err)}${navigator.onLine ? '' : ' (the browser is offline and this model is not stored)'}`);
  }
  if (!res.ok) throw new Error(`${e.url}: HTTP ${res.status} ${res.statusText}`);
  return readPrefix(res.body, want);
}

/** inspectModel on the header of `e` at `context` tokens. A stored model of unknown header size
 * is read in growing prefixes until its header parses (or the whole file has been tried). */
async function inspect(e, context) {
  const options = { ...loadOptions(state.backend), file_bytes: e.bytes };
  const inspectHead = async (n) => state.worker.inspectModel({ bytes: await headOf(e, n), context, options });
  if (e.headerBytes) return inspectHead(e.headerBytes);
  for (let want = Math.min(e.bytes, 8 << 20); ; want = Math.min(e.bytes, want * 4)) {
    try {
      return await inspectHead(want);
    } catch (err) {
      // Only a header longer than what was read is worth a longer read.
      if (want >= e.bytes || !/truncated/.test(messageOf(err))) throw err;
    }
  }
}

/** What the model needs and what it is, as lines of text and data attributes. */
export function describe(info) {
  const c = info;
  const total = info.weights_bytes + info.kv_cache_bytes;
  const rings = info.layer_rows.filter((r) => r < info.context);
  const lines = [
    `${info.name} · ${c.arch} · ${c.n_layers} layers · ${c.n_heads} query heads sharing ${c.n_kv_heads} KV heads × ${c.head_dim} dims · ` +
      `vocabulary ${count(c.vocab_size)} tokens`,
    `Needs ${mb(total)} MB of ${memoryName()}: weights ${mb(info.weights_bytes)} MB + ${info.kv_type} KV cache ${mb(info.kv_cache_bytes)} MB ` +
      `for ${count(info.context)} tokens${cacheGrowth()}${info.context > c.train_context ? ` (trained for ${count(c.train_context)})` : ''}; file ${mb(info.file_bytes)} MB.`,
  ];
  if (rings.length) {
    lines.push(`${rings.length} of ${c.n_layers} layers attend over a sliding window of ${count(c.sliding_window)} positions: each keeps a ring of ` +
      `${count(rings[0])} rows (position p in row p mod ${rings[0]}) instead of ${count(info.context)}; the other ${c.n_layers - rings.length} keep every position.`);
  }
  lines.push(info.chat_template ? 'Has a chat template: Chat works.' : 'This model has no chat template: use Complete (Chat is off for it).');
  const data = {
    weightsBytes: String(info.weights_bytes),
    kvCacheBytes: String(info.kv_cache_bytes),
    totalBytes: String(total),
    context: String(info.context),
    kvType: info.kv_type,
    arch: c.arch,
    layers: String(c.n_layers),
    heads: String(c.n_heads),
    kvHeads: String(c.n_kv_heads),
    vocab: String(c.vocab_size),
    slidingWindow: String(c.sliding_window),
    ringLayers: String(rings.length),
    ringRows: rings.length ? String(rings[0]) : '',
    chatTemplate: String(info.chat_template),
  };
  return { lines, data };
}

/** Shows what the chosen model needs at the chosen context (#model-plan[data-state] goes
 * reading → ready, or error with data-name). */
export async function showPlan() {
  const plan = $('model-plan');
  const e = chosen();
  const seq = ++planSeq;
  for (const k of Object.keys(plan.dataset)) delete plan.dataset[k];
  if (!e) {
    const broken = $('model-picker').dataset.manifestError;
    plan.textContent = broken ? `No list of shipped models: ${broken}` : '';
    return;
  }
  plan.dataset.file = e.file;
  if (!state.backend) {
    plan.dataset.state = 'waiting';
    plan.textContent = `${e.name}: file ${mb(e.bytes)} MB. What it needs shows once the engine has started.`;
    return;
  }
  plan.dataset.state = 'reading';
  plan.textContent = `Reading the header of ${e.file}…`;
  const context = contextTokens();
  try {
    const info = await inspect(e, context);
    if (seq !== planSeq) return;
    const { lines, data } = describe(info);
    Object.assign(plan.dataset, data, { state: 'ready' });
    plan.replaceChildren(...lines.map((t) => el('span', { class: 'line', text: t })));
  } catch (err) {
    if (seq !== planSeq) return;
    plan.dataset.state = 'error';
    plan.dataset.name = (err && err.name) || '';
    plan.textContent = `Cannot read what ${e.file} needs: ${messageOf(err)}`;
  }
}

/** Loads the chosen model at the chosen context. */
function loadChosen() {
  const e = chosen();
  if (!e) return undefined;
  return e.local ? loadStored({ key: e.key, name: e.name }) : loadModel({ url: e.url });
}

/** Chooses the entry for `url` when the picker has it (no plan is read). */
export function choose(url) {
  const value = abs(url);
  if (entries.has(value)) $('model-select').value = value;
}

/** Fills the picker from the manifest and the store, chooses `url`, and keeps the list in step
 * with the store. A missing or broken manifest is said in #model-plan; the rest still works. */
export async function setupPicker(url) {
  $('model-select').addEventListener('change', guarded(showPlan));
  $('context').addEventListener('change', guarded(showPlan));
  $('load-model').addEventListener('click', guarded(loadChosen));
  modelStore.onChange(() => report(refresh()));
  try {
    await loadManifest();
  } catch (e) {
    $('model-picker').dataset.manifestError = messageOf(e);
    $('model-plan').textContent = `No list of shipped models: ${messageOf(e)}`;
  }
  await refresh();
  choose(url);
}
