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

const PHASES = { download: 'downloaded', resume: 'checking the part already stored', verify: 'checked', read: 'read' };

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
  if (src.file) return readStream(src.file.stream(), src.file.size, signal, progress(started));
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

/** Joins a split model in the engine's worker: `first` (its first part's bytes, named `name`)
 * and the other parts, read in order by `readPart(name)`. */
async function joinParts(first, name, readPart) {
  const names = splitNames(name);
  const parts = [];
  for (const part of names.slice(1)) {
    status(`Reading ${part} (part ${parts.length + 2} of ${names.length})…`);
    parts.push(await readPart(part));
  }
  status(`Joining the ${names.length} parts of ${baseName(name)}…`);
  return state.worker.joinSplit({ first, name: baseName(name), parts });
}

/** Before a download: the file's first bytes (2 MiB, then 8 MiB where its header is longer) and
 * the load's checks on its header at the chosen context and backend (`inspectModel`, which
 * includes what the backend can hold: the CPU backend's 4 GiB of wasm memory), so that a model
 * that cannot load is refused before it downloads. Skipped for a split model's first part (the
 * parts are checked together) and where the length or the header stays unknown (the load
 * checks it then). Returns the file's length (0 where unknown), for the store's quota check. */
async function checkBeforeDownload(src, signal) {
  if (splitNames(src.url)) return 0;
  for (const want of [2 << 20, 8 << 20]) {
    const res = await fetch(src.url, { signal, headers: { Range: `bytes=0-${want - 1}` } });
    if (!res.ok) return 0;
    const range = /\/(\d+)$/.exec(res.headers.get('content-range') || '');
    const total = res.status === 206 ? Number(range && range[1]) : Number(res.headers.get('content-length'));
    const head = await readPrefix(res.body, want);
    if (!total || total <= head.length) return total || 0;
    const options = { ...loadOptions(state.backend), file_bytes: total };
    try {
      const info = await state.worker.inspectModel({ bytes: head, context: contextTokens(), options });
      showModelInfo(info, 'the network');
      return total;
    } catch (e) {
      // A header longer than what was read: read more, or leave it to the load.
      if (!(e && e.name === 'InvalidModel' && /truncated/.test(e.message))) throw e;
    }
  }
  return 0;
}

/** The bytes of a split model picked as several files: its first part and the others by name. */
async function pickedSet(files, signal) {
  const byName = new Map(files.map((f) => [f.name, f]));
  const first = files.find((f) => splitNames(f.name));
  if (!first) throw new Error(`${files.length} files were picked, but none is the first part of a split model (NAME-00001-of-0000N.gguf): pick one .gguf file, or every part of a split one`);
  const read = (part) => {
    const f = byName.get(part);
    if (!f) throw Object.assign(new Error(`split model part \`${part}\`: it was not picked with ${first.name}; pick every part together`), { name: 'InvalidModel' });
    return fetchBytes({ file: f }, signal);
  };
  return joinParts(await fetchBytes({ file: first }, signal), first.name, read);
}

/** The model's bytes: {bytes, from, check?}. From browser storage where a whole copy is there,
 * with `check` (its chunk digests, which the caller runs: `loadChecked`, `checkedBytes`); else
 * downloaded into the store (slice by slice, hashed as it streams, resuming an interrupted
 * download) and read from there — a File the engine reads slice by slice, so no copy of the whole
 * file is held. A split model's parts are joined in memory; without a store (no OPFS), a
 * download is held in memory. */
async function modelBytes(src, name, signal) {
  if (src.files) return { bytes: await pickedSet(src.files, signal), from: 'disk' };
  // A picked file goes to the worker as it is: the engine reads it slice by slice.
  if (src.file) return { bytes: src.file, from: 'disk' };
  const key = new URL(src.url, location.href).href;
  const hit = await modelStore.open(key);
  if (hit) return { bytes: hit.file, from: 'storage', check: hit.check };
  if (!navigator.onLine) status(`The browser reports no network; trying to download ${name} anyway…`);
  else status(`Downloading ${name}…`);
  // The published hash of a known model, else the hash the build recorded for a shipped one.
  const want = KNOWN_SHA256[baseName(name)] || (shippedAt(src.url) || {}).sha256;
  try {
    const size = await checkBeforeDownload(src, signal);
    if (splitNames(src.url)) return { bytes: await downloadSplit(src, key, name, signal), from: 'network' };
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

/** A split model named by its first part's URL: every part downloaded, joined in the worker
 * (in memory: the engine takes one file), and the joined model stored. */
async function downloadSplit(src, key, name, signal) {
  const first = await fetchBytes(src, signal);
  const bytes = await joinParts(first, src.url, (part) => fetchBytes({ url: new URL(part, new URL(src.url, location.href)).href }, signal));
  if (modelStore.available) {
    try {
      await modelStore.put({ key, name: baseName(name), blob: new Blob([bytes]) }, state.worker, { signal });
      $('storage-info').textContent = `${baseName(name)} is stored for offline use.`;
    } catch (e) {
      if (e && e.name === 'AbortError') throw e;
      $('storage-info').textContent = `Not stored for offline use: ${messageOf(e)}`;
    }
  }
  return bytes;
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
  });
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
  });
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
