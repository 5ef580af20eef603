// Persistent model storage in the Origin Private File System (layout: opfs.js). The engine's
// worker writes and checks the copies (store-writer.js), hashing them slice by slice as they
// pass; the page lists them, reads their headers, hands their files to the engine and deletes
// them. A copy counts as stored only once it is whole and its SHA-256 checked, and every load
// from the store checks it again, so a damaged copy is never loaded.
import { hasOpfs, modelsDir, idOf, readMeta, removeEntry, entryFile, named, checkStored } from './opfs.js';
import { OLD_CACHE } from './store-writer.js';

/** The first `n` bytes of `stream` (fewer if it ends sooner); the rest is never read. */
export async function readPrefix(stream, n) {
  const reader = stream.getReader();
  const out = new Uint8Array(n);
  let got = 0;
  while (got < n) {
    const { done, value } = await reader.read();
    if (done) break;
    const take = Math.min(value.length, n - got);
    out.set(value.subarray(0, take), got);
    got += take;
  }
  await reader.cancel().catch(() => {});
  return out.subarray(0, got);
}

/** Fires 'change' whenever an entry is added or deleted, for the views that list the store. */
const changes = new EventTarget();
const changed = () => changes.dispatchEvent(new Event('change'));

/** Every record in the store: [{id, meta, file}] (file: the bytes so far, or null). */
async function entries() {
  const dir = await modelsDir();
  const out = [];
  for await (const name of dir.keys()) {
    if (!name.endsWith('.json')) continue;
    const id = name.slice(0, -5);
    const meta = await readMeta(dir, id);
    if (meta) out.push({ id, meta, file: await entryFile(dir, id) });
  }
  return out;
}

/** The complete stored copy of `key`: {dir, id, meta, file}, or null (none, or not whole). */
async function stored(key) {
  if (!hasOpfs()) return null;
  const dir = await modelsDir();
  const id = await idOf(key);
  const meta = await readMeta(dir, id);
  const file = meta && meta.complete ? await entryFile(dir, id) : null;
  return file && { dir, id, meta, file };
}

/** The models of the old Cache Storage store, moved into this one once (`migrate`). */
let migrated = Promise.resolve();

export const modelStore = {
  /** Whether models can be stored in this browser. */
  available: hasOpfs(),

  /** Calls `listener` after every change to the stored models. */
  onChange(listener) {
    changes.addEventListener('change', listener);
  },

  /** The key for a model opened from disk: a URL under the site that is never fetched. */
  localKey(name) {
    return new URL(`local-models/${encodeURIComponent(name)}`, location.href).href;
  },

  /** Moves the models kept in the older Cache Storage store into this one (each copied slice by
   * slice in `worker`, checked against the hash it was kept with, then removed there). Lookups
   * wait for it. */
  migrate(worker, onStatus = () => {}) {
    migrated = (async () => {
      if (!this.available || !globalThis.caches || !(await caches.has(OLD_CACHE))) return;
      const cache = await caches.open(OLD_CACHE);
      for (const req of await cache.keys()) {
        const res = await cache.match(req);
        const name = decodeURIComponent(res.headers.get('x-kvscope-name') || req.url);
        onStatus(`Moving ${name} to the new model store…`);
        try {
          await worker.storeModel({ key: req.url, name, cache: req.url, want: res.headers.get('x-kvscope-sha256') || undefined });
          await cache.delete(req);
        } catch (e) {
          // A damaged copy goes; any other is kept there and tried again at the next start (a
          // full quota, say).
          if (e && e.name === 'CorruptModel') await cache.delete(req);
          console.warn(`${name} was not moved from the old store:`, e);
        }
      }
      if ((await cache.keys()).length === 0) await caches.delete(OLD_CACHE);
      changed();
    })();
    return migrated;
  },

  /** The stored copy of `key`, unchecked, with its check: {file (a File named as the model,
   * read slice by slice as the engine uses it), check({onProgress, signal}) (resolves when every
   * chunk matches its recorded digest; rejects with `CorruptModel` after removing a damaged
   * copy)}; or null if it is not stored whole. A load runs the check beside the engine's load
   * and keeps the engine only if it passes. */
  async open(key) {
    await migrated.catch(() => {});
    const whole = await stored(key);
    if (!whole) return null;
    const { dir, id, meta, file } = whole;
    const check = async ({ onProgress, signal } = {}) => {
      try {
        await checkStored(dir, id, meta, file, onProgress, signal);
      } catch (e) {
        if (e.name === 'CorruptModel') changed();
        throw e;
      }
    };
    return { file: new File([file], meta.name, { type: 'application/octet-stream' }), check };
  },

  /** The stored copy of `key` as a File named as the model, checked first (`open`), or null. */
  async get(key, { onProgress, signal } = {}) {
    const hit = await this.open(key);
    if (!hit) return null;
    await hit.check({ onProgress, signal });
    return hit.file;
  },

  /** The stored copy of `key` as a File named `name`, unchecked (one just stored and checked),
   * or null. */
  async file(key, name) {
    const file = await entryFile(await modelsDir(), await idOf(key));
    return file && new File([file], name, { type: 'application/octet-stream' });
  },

  /** Stores a model in `worker` (store-writer.js's storeModel: {key, name, url | blob, want}). */
  async put(args, worker, { onProgress, signal } = {}) {
    await migrated.catch(() => {});
    if (!this.available) throw named('Unsupported', 'this browser has no Origin Private File System to keep models in');
    try {
      return await worker.storeModel(args, { onEvent: (ev) => onProgress && onProgress(ev.progress), signal });
    } finally {
      changed();
    }
  },

  /** The first `n` bytes of the stored `key` (fewer if it is shorter), unchecked — enough to read
   * a header before loading; a load checks the whole — and its stored size; null if it is not
   * stored. */
  async prefix(key, n) {
    const whole = await stored(key);
    if (!whole) return null;
    return { bytes: new Uint8Array(await whole.file.slice(0, n).arrayBuffer()), total: whole.file.size };
  },

  /** [{key, name, bytes, stored, complete, total}] for every stored model; with `partial`, also
   * the downloads that stopped before the end (bytes: those stored; the next load resumes). */
  async list({ partial = false } = {}) {
    if (!this.available) return [];
    const out = [];
    for (const { meta, file } of await entries()) {
      if (!meta.complete && !partial) continue;
      out.push({ key: meta.key, name: meta.name, bytes: file ? file.size : 0, total: meta.total || 0, stored: meta.stored || '', complete: !!meta.complete });
    }
    return out.sort((a, b) => a.name.localeCompare(b.name));
  },

  async remove(key) {
    const removed = await removeEntry(await modelsDir(), await idOf(key));
    changed();
    return removed;
  },

  /** Asks the browser not to evict stored models under storage pressure. */
  async persist() {
    return navigator.storage && navigator.storage.persist ? navigator.storage.persist() : false;
  },
};
