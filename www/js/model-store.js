// Persistent model storage in Cache Storage ("kvscope-models"). Each entry keeps the model's
// bytes with its sha256, size and name in headers; every read is verified against the hash
// before the bytes are used, so a damaged copy is never loaded.
import { mb } from './dom.js';

const STORE = 'kvscope-models';

export class CorruptModelError extends Error {
  constructor(message) {
    super(message);
    this.name = 'CorruptModel';
  }
}

export async function sha256Hex(bytes) {
  const d = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
  return Array.from(d, (b) => b.toString(16).padStart(2, '0')).join('');
}

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

export const modelStore = {
  /** Calls `listener` after every change to the stored models. */
  onChange(listener) {
    changes.addEventListener('change', listener);
  },

  /** The key for a model opened from disk: a URL under the site that is never fetched. */
  localKey(name) {
    return new URL(`local-models/${encodeURIComponent(name)}`, location.href).href;
  },

  /** The stored bytes of `key`, verified, or null if there are none. Throws CorruptModelError
   * (after deleting the entry) when the bytes do not match their recorded hash. */
  async get(key, onProgress) {
    const cache = await caches.open(STORE);
    const res = await cache.match(key);
    if (!res) return null;
    const want = res.headers.get('x-kvscope-sha256');
    const total = Number(res.headers.get('content-length')) || 0;
    const reader = res.body.getReader();
    const chunks = [];
    let got = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      got += value.length;
      onProgress && onProgress(got, total);
    }
    const bytes = new Uint8Array(got);
    let at = 0;
    for (const c of chunks) { bytes.set(c, at); at += c.length; }
    const have = await sha256Hex(bytes);
    if (!want || have !== want || (total && got !== total)) {
      await cache.delete(key);
      changed();
      throw new CorruptModelError(`the stored copy is damaged (sha256 ${have.slice(0, 12)}…, expected ${(want || 'none').slice(0, 12)}…)`);
    }
    return { bytes, sha256: have, name: res.headers.get('x-kvscope-name') };
  },

  /** The first `n` bytes of the stored `key` (fewer if it is shorter), unverified — enough to read
   * a header before loading; a load reads and verifies the whole — and its stored size; null if
   * it is not stored. */
  async prefix(key, n) {
    const res = await (await caches.open(STORE)).match(key);
    if (!res) return null;
    return { bytes: await readPrefix(res.body, n), total: Number(res.headers.get('content-length')) || 0 };
  },

  /** Stores `bytes` under `key`. On a quota error, says how much is needed and available. */
  async put(key, bytes, name, sha256) {
    const cache = await caches.open(STORE);
    const headers = {
      'content-type': 'application/octet-stream',
      'content-length': String(bytes.length),
      'x-kvscope-sha256': sha256,
      'x-kvscope-name': encodeURIComponent(name),
      'x-kvscope-stored': new Date().toISOString(),
    };
    try {
      await cache.put(key, new Response(bytes, { headers }));
      changed();
    } catch (e) {
      if (e && e.name === 'QuotaExceededError') {
        const est = navigator.storage && navigator.storage.estimate ? await navigator.storage.estimate() : {};
        throw new Error(`not enough browser storage to keep ${name} offline: it needs ${mb(bytes.length)} MB; ` +
          `${mb((est.quota || 0) - (est.usage || 0))} MB of ${mb(est.quota || 0)} MB are free. Delete stored models or free disk space.`);
      }
      throw e;
    }
  },

  /** [{key, name, bytes, stored}] for every stored model. */
  async list() {
    const cache = await caches.open(STORE);
    const out = [];
    for (const req of await cache.keys()) {
      const res = await cache.match(req);
      out.push({
        key: req.url,
        name: decodeURIComponent(res.headers.get('x-kvscope-name') || req.url),
        bytes: Number(res.headers.get('content-length')) || 0,
        stored: res.headers.get('x-kvscope-stored') || '',
      });
    }
    return out;
  },

  async remove(key) {
    const removed = await (await caches.open(STORE)).delete(key);
    changed();
    return removed;
  },

  /** Asks the browser not to evict stored models under storage pressure. */
  async persist() {
    return navigator.storage && navigator.storage.persist ? navigator.storage.persist() : false;
  },
};
