// Loading a model: from browser storage, the network or a file, with progress and Cancel; the
// model info line; keeping a file opened from disk for offline use.
import { $, mb } from './dom.js';
import { contextTokens, KNOWN_SHA256, loadOptions } from './settings.js';
import { state, set, inside, exclusive } from './state.js';
import { status, showFailure, clearError, messageOf } from './feedback.js';
import { modelStore, readPrefix } from './model-store.js';
import { hex } from './opfs.js';
import { updateStats } from './stats.js';
import { shippedAt } from './manifest.js';

/** Reads a byte stream of `total` bytes (0 if unknown) into one Uint8Array, reporting progress. */
async function readStream(stream, total, signal, onProgress) {
  const reader = stream.getReader();
  const buf = total ? new Uint8Array(total) : null;
  const chunks = [];
  let got = 0;
  for (;;) {
    if (signal.aborted) {
      await reader.cancel();
      throw new DOMException('cancelled', 'AbortError');
    }
    const { done, value } = await reader.read();
    if (done) break;
    if (buf && got + value.length <= total) buf.set(value, got);
    else chunks.push(value);
    got += value.length;
    onProgress(got, total);
  }
  if (buf && got === total && chunks.length === 0) return buf;
  // Unknown or wrong length: gather what arrived.
  const out = new Uint8Array(got);
  let at = 0;
  if (buf) { out.set(buf.subarray(0, Math.min(got, total)), 0); at = Math.min(got, total); }
  for (const c of chunks) { out.set(c, at); at += c.length; }
  return out;
}

const PHASES = { download: 'downloaded', resume: 'checking the part already stored', verify: 'checked', read: 'read', upload: 'uploaded to the GPU', wasm: 'read into wasm memory' };

/** A progress callback for #progress and #progress-text: bytes, the rate since `started` and
 * the time left. Takes (got, total) or a store's event ({phase, got, total}). */
function progress(started) {
  let phase = null;
  let t0 = started;
  return (got, total) => {
    if (typeof got === 'object') {
      if (got.phase !== phase) { phase = got.phase; t0 = performance.now(); }
      ({ got, total } = got);
    }
    const secs = (performance.now() - t0) / 1000;
    const rate = secs > 0 ? got / 1048576 / secs : 0;
    const left = total && rate > 0 ? (total - got) / 1048576 / rate : null;
    const what = phase ? `${PHASES[phase] || phase} · ` : '';
    $('progress').value = total ? got / total : 0;
    $('progress').dataset.phase = phase || '';
    $('progress-text').textContent = total
      ? `${what}${mb(got)} / ${mb(total)} MB · ${Math.floor((100 * got) / total)}% · ${rate.toFixed(1)} MB/s${left !== null && got < total ? ` · ${fmtSecs(left)} left` : ''}`
      : `${what}${mb(got)} MB · ${rate.toFixed(1)} MB/s`;
  };
}

const fmtSecs = (s) => (s < 90 ? `${Math.ceil(s)} s` : s < 5400 ? `${Math.round(s / 60)} min` : `${(s / 3600).toFixed(1)} h`);

async function fetchBytes(src, signal) {
  const started = performance.now();
  const res = await fetch(src.url, { signal });
  if (!res.ok) throw new Error(`${src.url}: HTTP ${res.status} ${res.statusText}`);
  const total = Number(res.headers.get('content-length')) || 0;
  return readStream(res.body, total, signal, progress(started));
}

const baseName = (name) => name.split('/').pop();

/** SHA-256 of a whole buffer (a download held in memory where there is no store). */
const sha256Hex = async (bytes) => hex(await crypto.subtle.digest('SHA-256', bytes));

/** A split model's part names (`NAME-00001-of-0000N.gguf` …) from its first part's name, or null
 * for any other name (the engine checks each part's header: `core::split`). */
function splitNames(name) {
  const m = /^(.*)-00001-of-(\d{5})\.gguf$/.exec(baseName(name));
  if (!m || Number(m[2]) < 2) return null;
  const count = Number(m[2]);
  return Array.from({ length: count }, (_, i) => `${m[1]}-${String(i + 1).padStart(5, '0')}-of-${m[2]}.gguf`);
}

/** The first `want` bytes of `url` and the file's length: {head, total} (total 0 where the
 * server does not say), or null where it refuses. */
async function headOf(url, want, signal) {
  const res = await fetch(url, { signal, headers: { Range: `bytes=0-${want - 1}` } });
  if (!res.ok) return null;
  const range = /\/(\d+)$/.exec(res.headers.get('content-range') || '');
  const total = res.status === 206 ? Number(range && range[1]) : Number(res.headers.get('content-length'));
  return { head: await readPrefix(res.body, want), total: total || 0 };
}

/** Before a download: the file's first bytes (2 MiB, then 8 MiB where its header is longer) and
 * the load's checks on its header at the chosen context and backend (`inspectModel`, which
 * includes what the backend can hold: the CPU backend's 4 GiB of wasm memory, the GPU's limits
 * and what it can allocate), so that a model that cannot load is refused before it downloads.
 * A split model's parts are read so together (each part's header, the set checked as one).
 * Skipped where a length or the header stays unknown (the load checks it then). Returns each
 * file's length (0 where unknown), for the store's quota check. */
async function checkBeforeDownload(urls, signal) {
  const split = urls.length > 1;
  for (const want of [2 << 20, 8 << 20]) {
    const heads = [];
    for (const url of urls) {
      const h = await headOf(url, want, signal);
      if (!h || !h.total) return urls.map(() => 0);
      // A whole single file read already: the load checks it.
      if (!split && h.total <= h.head.length) return [h.total];
      heads.push(h);
    }
    const sizes = heads.map((h) => h.total);
    const options = loadOptions(state.backend);
    const bytes = split ? { parts: heads.map((h) => h.head), name: baseName(urls[0]), sizes } : heads[0].head;
    if (!split) options.file_bytes = sizes[0];
    try {
      const info = await state.worker.inspectModel({ bytes, context: contextTokens(), options });
      showModelInfo(info, 'the network');
      return sizes;
    } catch (e) {
      // A header longer than what was read: read more, or leave it to the load.
      if (!(e && e.name === 'InvalidModel' && /truncated/.test(e.message))) throw e;
    }
  }
  return urls.map(() => 0);
}

/** A split model picked as several files, for the engine: {parts, name} — its files in order,
 * named by the first (the engine reads them as one model and checks each part's header). */
function pickedSet(files) {
  const byName = new Map(files.map((f) => [f.name, f]));
  const first = files.find((f) => splitNames(f.name));
  if (!first) throw new Error(`${files.length} files were picked, but none is the first part of a split model (NAME-00001-of-0000N.gguf): pick one .gguf file, or every part of a split one`);
  const parts = splitNames(first.name).map((part) => {
    const f = byName.get(part);
    if (!f) throw Object.assign(new Error(`split model part \`${part}\`: it was not picked with ${first.name}; pick every part together`), { name: 'InvalidModel' });
    return f;
  });
  return { parts, name: first.name };
}

/** The model's bytes: {bytes, from, check?}. From browser storage where a whole copy is there,
 * with `check` (its chunk digests, which the caller runs: `loadChecked`, `checkedBytes`); else
 * downloaded into the store (slice by slice, hashed as it streams, resuming an interrupted
 * download) and read from there — a File the engine reads slice by slice, so no copy of the whole
 * file is held. A split model is its files, each stored as it downloads (`splitBytes`); without a
 * store (no OPFS), a download is held in memory. */
async function modelBytes(src, name, signal) {
  if (src.files) return { bytes: pickedSet(src.files), from: 'disk' };
  // A picked file goes to the worker as it is: the engine reads it slice by slice.
  if (src.file) return { bytes: src.file, from: 'disk' };
  if (splitNames(src.url)) return splitBytes(src, signal);
  const key = new URL(src.url, location.href).href;
  const hit = await modelStore.open(key);
  if (hit) return { bytes: hit.file, from: 'storage', check: hit.check };
  if (!navigator.onLine) status(`The browser reports no network; trying to download ${name} anyway…`);
  else status(`Downloading ${name}…`);
  // The published hash of a known model, else the hash the build recorded for a shipped one.
  const want = KNOWN_SHA256[baseName(name)] || (shippedAt(src.url) || {}).sha256;
  try {
    const [size] = await checkBeforeDownload([src.url], signal);
    if (!modelStore.available) {
      $('storage-info').textContent = 'Not stored for offline use: this browser has no Origin Private File System.';
      const bytes = await fetchBytes(src, signal);
      const sha = await sha256Hex(bytes);
      if (want && sha !== want) throw Object.assign(new Error(`the download is damaged: sha256 ${sha.slice(0, 12)}… instead of ${want.slice(0, 12)}…`), { name: 'CorruptModel' });
      return { bytes, from: 'network' };
    }
    await modelStore.put({ key, name: baseName(name), url: key, want, size }, state.worker, { onProgress: progress(performance.now()), signal });
  } catch (e) {
    if (e && ['AbortError', 'QuotaExceeded', 'CorruptModel', 'Truncated', 'Busy'].includes(e.name)) throw e;
    throw Object.assign(new Error(`${messageOf(e)}${navigator.onLine ? '' : ' (the browser is offline and this model is not stored)'}`), { name: (e && e.name) || 'Error' });
  }
  $('storage-info').textContent = `${baseName(name)} is stored for offline use.`;
  const stored = await modelStore.file(key, baseName(name));
  if (!stored) throw new Error(`${baseName(name)} was stored but cannot be read back from browser storage`);
  return { bytes: stored, from: 'network' };
}

/** A split model named by its first part's URL, for the engine: {parts, name} — every part
 * from browser storage where it is stored whole (each with its check), else downloaded into the
 * store as a single model is (each part its own stored file, streamed and hashed), or into
 * memory where there is no store. Nothing joins the parts: the engine reads them as one model. */
async function splitBytes(src, signal) {
  const names = splitNames(src.url);
  const base = new URL(src.url, location.href);
  const urls = names.map((part) => new URL(part, base).href);
  const parts = [];
  const checks = [];
  let from = 'storage';
  let sizes = null;
  for (const [i, part] of names.entries()) {
    const key = urls[i];
    const hit = await modelStore.open(key);
    if (hit) {
      parts.push(hit.file);
      checks.push(hit.check);
      continue;
    }
    from = 'network';
    // Before the first byte of a part downloads, the set is checked from its headers.
    sizes ??= await checkBeforeDownload(urls, signal);
    status(`Downloading ${part} (part ${i + 1} of ${names.length})…`);
    if (!modelStore.available) {
      parts.push(new Blob([await fetchBytes({ url: key }, signal)]));
      continue;
    }
    try {
      await modelStore.put({ key, name: part, url: key, size: sizes[i] }, state.worker, { onProgress: progress(performance.now()), signal });
    } catch (e) {
      if (e && ['AbortError', 'QuotaExceeded', 'CorruptModel', 'Truncated', 'Busy'].includes(e.name)) throw e;
      throw Object.assign(new Error(`split model part \`${part}\`: ${messageOf(e)}${navigator.onLine ? '' : ' (the browser is offline and this part is not stored)'}`), { name: (e && e.name) || 'Error' });
    }
    const stored = await modelStore.file(key, part);
    if (!stored) throw new Error(`${part} was stored but cannot be read back from browser storage`);
    parts.push(stored);
  }
  if (modelStore.available) $('storage-info').textContent = `The ${names.length} parts of ${names[0]} are stored for offline use.`;
  const check = checks.length ? async (opts) => { for (const c of checks) await c(opts); } : undefined;
  return { bytes: { parts, name: names[0] }, from, check };
}

/** The model's bytes as `modelBytes` gives them, a stored copy checked first; a damaged one is
 * downloaded again when online and reported offline. */
async function checkedBytes(src, name, signal) {
  const got = await modelBytes(src, name, signal);
  if (!got.check) return got;
  try {
    status(`Checking ${baseName(name)} in browser storage…`);
    await got.check({ onProgress: progress(performance.now()), signal });
    return got;
  } catch (e) {
    return { bytes: (await afterDamage(e, src, name, signal)).bytes, from: 'network' };
  }
}

/** After the check of a stored copy failed with `e`: the model downloaded again (the damaged copy
 * is gone) when online; offline, an error that says why it cannot be. */
async function afterDamage(e, src, name, signal) {
  if (!(e && e.name === 'CorruptModel')) throw e;
  if (!navigator.onLine) throw Object.assign(new Error(`${e.message}, and the browser is offline, so it cannot be downloaded again. Reconnect and reload.`), { name: e.name });
  status(`The stored copy of ${baseName(name)} was damaged (${e.message}); downloading it again…`);
  return modelBytes(src, name, signal);
}

/** The bytes of the model loaded from `src` read again (from browser storage where it is stored),
 * for the KV-cache lab, which loads the model once per policy: neither the page nor the worker
 * keeps a copy of a loaded model's file. */
export async function sourceBytes(src, signal = new AbortController().signal) {
  const name = src.file ? src.file.name : src.files ? src.files.map((f) => f.name).sort()[0] : src.url;
  return (await checkedBytes(src, name, signal)).bytes;
}

/** Where the weights and the KV cache live on the chosen backend. */
export const memoryName = () => (state.backend === 'gpu' ? 'GPU memory' : 'wasm memory');

/** How the KV cache is allocated on the chosen backend: all at load on the GPU; on the CPU it
 * grows with the text (64 positions at a time) up to the context. */
export const cacheGrowth = () => (state.backend === 'gpu' ? '' : ', growing with the text');

/** Shows the model's name, size and the memory it needs (for the cache type it will get) before
 * anything is uploaded. */
function showModelInfo(info, from) {
  const infoEl = $('model-info');
  const need = info.weights_bytes + info.kv_cache_bytes;
  infoEl.textContent = `${info.name} · file ${mb(info.file_bytes)} MB (from ${from}) · needs ${mb(need)} MB of ${memoryName()} ` +
    `(weights ${mb(info.weights_bytes)} MB + ${info.kv_type} KV cache ${mb(info.kv_cache_bytes)} MB for ${info.context} tokens${cacheGrowth()})`;
  infoEl.dataset.fileBytes = String(info.file_bytes);
  infoEl.dataset.loadSource = from;
  return infoEl;
}

/** Progress of the weights going into the backend (bytes of the file read, the rate, the time
 * left), from the worker's `{phase: 'upload', got, total}` events. */
function uploadProgress() {
  const show = progress(performance.now());
  return (p) => show({ ...p, phase: state.backend === 'gpu' ? 'upload' : 'wasm' });
}

/** The engine for `src`'s bytes, loaded in the worker; a stored copy is checked meanwhile (on
 * this thread: WebCrypto digests of its chunks) and the engine kept only if the check passes —
 * a damaged copy's engine is freed and the model downloaded again (reported offline). */
async function loadChecked(src, name, signal) {
  const { bytes, from, check } = await modelBytes(src, name, signal);
  const options = loadOptions(state.backend);
  const context = contextTokens();
  // The bytes move to the engine's worker: the page keeps no copy.
  const loading = state.worker.load({ bytes, context, options }, (info) => {
    showModelInfo(info, from);
    status(state.backend === 'gpu' ? `Uploading ${info.name} to the GPU…` : `Loading ${info.name} into wasm memory…`);
    if (!check) $('cancel').disabled = true;
  }, uploadProgress());
  if (!check) return loading;
  // Cancel stops the check; once it has passed, the upload runs to its end.
  const checking = check({ signal }).then(() => { $('cancel').disabled = true; });
  const [loaded, checked] = await Promise.allSettled([loading, checking]);
  if (checked.status === 'fulfilled') {
    if (loaded.status === 'rejected') throw loaded.reason;
    return loaded.value;
  }
  if (loaded.status === 'fulfilled') loaded.value.free().catch((e) => console.warn('freeing an engine loaded from a damaged copy:', e));
  const again = await afterDamage(checked.reason, src, name, signal);
  $('cancel').disabled = true;
  return state.worker.load({ bytes: again.bytes, context, options }, (info) => {
    showModelInfo(info, again.from);
    status(state.backend === 'gpu' ? `Uploading ${info.name} to the GPU…` : `Loading ${info.name} into wasm memory…`);
  }, uploadProgress());
}

/** Loads a model; on failure the engine that was loaded before stays usable. Reloading the same
 * model (after a GPU failure) keeps the conversation on screen. */
export function loadModel(src, { keepConversation = false } = {}) {
  const abort = new AbortController();
  return exclusive('loading', async () => {
    const name = src.file ? src.file.name : src.files ? src.files.map((f) => f.name).sort()[0] : src.url;
    clearError();
    $('loader').hidden = false;
    $('keep').hidden = true;
    $('progress').value = 0;
    $('progress-text').textContent = '';
    status(`Loading ${name}…`);
    const started = performance.now();
    try {
      const next = await loadChecked(src, name, abort.signal);
      const infoEl = $('model-info');
      if (state.engine) state.engine.free().catch((e) => console.warn('freeing the previous engine:', e));
      const st = next.state();
      set({ engine: next, source: src, chatTemplate: st.chat_template, ...(keepConversation ? {} : { messages: [] }) });
      const peak = next.loadedWasmBytes;
      infoEl.dataset.wasmPeakBytes = String(peak);
      infoEl.dataset.loadMs = (performance.now() - started).toFixed(0);
      const outside = state.backend === 'gpu' ? ' (the file stays outside it)' : '';
      infoEl.append(` · wasm memory ${mb(peak)} MB${outside} · ready in ${(infoEl.dataset.loadMs / 1000).toFixed(1)} s`);
      $('keep').hidden = !src.file;
      inside.setModel(st);
      status(`Ready: ${st.name} on ${st.backend}`);
      updateStats({ cached: 0, context: st.context });
    } catch (e) {
      if (e && e.name === 'AbortError') status(state.engine ? 'Loading cancelled; the previous model is still loaded.' : 'Loading cancelled.');
      else {
        showFailure(e, `Could not load ${name}: ${messageOf(e)}`);
        status(state.engine ? 'The previous model is still loaded.' : 'No model loaded.');
      }
    } finally {
      $('loader').hidden = true;
      $('cancel').disabled = false;
    }
  }, abort);
}

/** Frees the engine (its GPU device is gone) and loads the same model again, keeping the
 * conversation. */
export async function reloadEngine() {
  if (state.phase !== 'idle' || !state.source) return;
  // The error goes at once: freeing the old engine is a round trip to its worker.
  clearError();
  status('Reloading the engine…');
  if (state.engine) {
    await state.engine.free().catch((e) => console.warn('freeing the engine:', e));
    set({ engine: null });
  }
  await loadModel(state.source, { keepConversation: true });
}

/** Stores the model opened from disk (slice by slice, hashed as it is written), so it can be
 * loaded offline later. */
export async function keepLocal() {
  const f = state.source && state.source.file;
  if (!f) return;
  try {
    $('storage-info').textContent = `Storing ${f.name}…`;
    await modelStore.put({ key: modelStore.localKey(f.name), name: f.name, blob: f }, state.worker);
    $('storage-info').textContent = `${f.name} is stored for offline use.`;
    $('keep').hidden = true;
  } catch (e) {
    $('storage-info').textContent = `Not stored for offline use: ${messageOf(e)}`;
    showFailure(e);
  }
}

/** Loads a model that was opened from disk earlier and stored (checked against its hash). */
export async function loadStored(m) {
  try {
    const file = await modelStore.get(m.key);
    if (!file) throw new Error('it is no longer stored');
    await loadModel({ file });
  } catch (e) {
    showFailure(e, `Could not load ${m.name} from storage: ${messageOf(e)}`);
  }
}
