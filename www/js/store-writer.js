// The model store's writer, in the engine's worker (sync access handles exist only in workers):
// a model streams into the Origin Private File System slice by slice — from the network (resuming
// an interrupted download with an HTTP Range request), from a picked file, or from the older
// Cache Storage store — and is hashed as it passes, so no buffer of the whole file exists in JS
// or wasm. Layout, and the check of a stored copy before it is loaded: opfs.js.
import { modelsDir, idOf, readMeta, writeMeta, removeEntry, entryFile, named, hex } from './opfs.js';

/** The store the page used before the OPFS one (Cache Storage), moved over once (`fromCache`). */
export const OLD_CACHE = 'kvscope-models';

/** Slices of a stored file read at once when a download resumes; and the chunks whose SHA-256
 * digests the record keeps, for checking a stored copy quickly (opfs.js's `checkStored`). */
const SLICE = 8 << 20;
const CHUNK = 8 << 20;
/** Digests of chunks at most in flight at once. */
const IN_FLIGHT = 4;

/**
 * SHA-256 of each CHUNK bytes of a stream, by WebCrypto (native code, off this thread): the
 * record's `chunks`. A stored copy is checked against them chunk by chunk, every chunk read as a
 * slice of the file; the whole file's SHA-256 (which a manifest or a model's publisher gives)
 * needs one pass in order, which the `sha2` hasher makes as the bytes arrive.
 */
class ChunkDigests {
  constructor() {
    this.buf = new Uint8Array(CHUNK);
    this.fill = 0;
    this.done = [];
    this.pending = [];
  }

  /** Adds `bytes`; waits while IN_FLIGHT digests are running. */
  async update(bytes) {
    for (let at = 0; at < bytes.length;) {
      const take = Math.min(bytes.length - at, CHUNK - this.fill);
      this.buf.set(bytes.subarray(at, at + take), this.fill);
      this.fill += take;
      at += take;
      if (this.fill === CHUNK) {
        // `digest` copies its input before it returns: the buffer is free to fill again.
        this.digest(this.buf);
        this.fill = 0;
        if (this.pending.length >= IN_FLIGHT) await this.pending[0];
      }
    }
  }

  digest(bytes) {
    const i = this.done.length + this.pending.length;
    const p = crypto.subtle.digest('SHA-256', bytes).then((d) => {
      this.done[i] = hex(d);
      this.pending.splice(this.pending.indexOf(p), 1);
    });
    this.pending.push(p);
  }

  /** Every chunk's digest, the last (short) one included. */
  async finish() {
    if (this.fill) this.digest(this.buf.subarray(0, this.fill));
    while (this.pending.length) await this.pending[0];
    return this.done;
  }
}
/** At most this often a progress event (ms). */
const EVERY = 100;

const mib = (n) => (n / 1048576).toFixed(1);

function aborted() {
  return new DOMException('cancelled', 'AbortError');
}

/** Progress events at most every EVERY ms, the latest always sent (a stalled download shows
 * where it stalled): {progress: {phase, got, total}}. */
function reporter(send, phase) {
  let last = 0;
  let timer = null;
  let latest = null;
  const flush = () => {
    timer = null;
    last = performance.now();
    send({ progress: latest });
  };
  return (got, total, force = false) => {
    latest = { phase, got, total };
    if (force) {
      clearTimeout(timer);
      flush();
    } else if (!timer) {
      timer = setTimeout(flush, Math.max(0, EVERY - (performance.now() - last)));
    }
  };
}

/** Says how much storage a model needs against what the browser gives this site; throws a
 * `QuotaExceeded` error naming both when `need` more bytes do not fit. */
async function checkQuota(need, name) {
  if (!need || !navigator.storage.estimate) return;
  const { quota = 0, usage = 0 } = await navigator.storage.estimate();
  if (quota && need > quota - usage) throw quotaError(name, need, quota, usage);
}

function quotaError(name, need, quota, usage) {
  return named('QuotaExceeded', `not enough browser storage for ${name}: it needs ${mib(need)} MiB more; ` +
    `${mib(Math.max(0, quota - usage))} MiB of the site's ${mib(quota)} MiB are free. Delete stored models (the Models panel) or free disk space.`);
}

/** Hashes the first `n` stored bytes (a download being resumed). */
async function hashStored(access, hash, n, progress, signal) {
  const buf = new Uint8Array(Math.min(SLICE, n));
  for (let at = 0; at < n;) {
    if (signal.aborted) throw aborted();
    const got = access.read(buf.subarray(0, Math.min(buf.length, n - at)), { at });
    if (got <= 0) throw named('Io', `the stored part of the download ends at ${at} bytes, not ${n}`);
    await hash.update(buf.subarray(0, got));
    at += got;
    progress(at, n);
  }
}

/** The whole file's SHA-256 (`sha2` in the wasm module) and its chunks' (ChunkDigests). */
function hashers(Sha256) {
  const whole = new Sha256();
  const chunks = new ChunkDigests();
  return {
    async update(bytes) {
      whole.update(bytes);
      await chunks.update(bytes);
    },
    async finish() {
      return { sha256: whole.hex(), chunks: await chunks.finish() };
    },
    free: () => whole.free(),
  };
}

/** The body to store and where it starts: for a URL, the rest after `have` stored bytes when the
 * server answers the Range request, else the whole from 0. Returns {body, from, total}. */
async function openSource({ url, blob, cache }, have, signal) {
  if (blob) return { body: blob.stream(), from: 0, total: blob.size };
  if (cache) {
    const res = await (await caches.open(OLD_CACHE)).match(cache);
    if (!res) throw named('Io', `${cache} is no longer in the old store`);
    return { body: res.body, from: 0, total: Number(res.headers.get('content-length')) || 0 };
  }
  const res = await fetch(url, { signal, headers: have ? { Range: `bytes=${have}-` } : {} });
  if (!res.ok) throw named('Network', `${url}: HTTP ${res.status} ${res.statusText}`);
  const range = /^bytes (\d+)-\d+\/(\d+)$/.exec(res.headers.get('content-range') || '');
  if (have && res.status === 206 && range && Number(range[1]) === have) return { body: res.body, from: have, total: Number(range[2]) };
  return { body: res.body, from: 0, total: Number(res.headers.get('content-length')) || 0 };
}

/** Writes `body` into `access` from byte `at`, hashing each slice; returns the end. */
async function pour(body, access, hash, at, { total, name, progress, signal }) {
  const reader = body.getReader();
  try {
    for (;;) {
      if (signal.aborted) throw aborted();
      let next;
      try {
        next = await reader.read();
      } catch (e) {
        if (signal.aborted) throw aborted();
        // The connection dropped: what arrived stays stored, and the next load resumes there.
        throw named('Truncated', `the download of ${name} stopped after ${mib(at)}${total ? ` of ${mib(total)}` : ''} MiB (${e.message || e}); load it again to resume from there`);
      }
      const { done, value } = next;
      if (done) return at;
      try {
        access.write(value, { at });
      } catch (e) {
        if (e && e.name === 'QuotaExceededError') {
          const { quota = 0, usage = 0 } = await navigator.storage.estimate();
          throw quotaError(name, Math.max(value.length, total - at), quota, usage);
        }
        throw e;
      }
      await hash.update(value);
      at += value.length;
      progress(at, total);
    }
  } catch (e) {
    await reader.cancel().catch(() => {});
    throw signal.aborted ? aborted() : e;
  }
}

/**
 * Stores a model under `key` (named `name`), from `url` (a download, resumed where an earlier one
 * of the same key stopped), `blob` (a picked file) or `cache` (a key of the old Cache Storage
 * store). `want`: the SHA-256 it must have, if known; `size`: its length, if known. The record
 * says complete only once every byte is written and hashed; a mismatch removes the copy.
 * Resolves to {bytes, sha256}.
 */
export async function storeModel({ key, name, url, blob, cache, want, size }, send, signal, Sha256) {
  const dir = await modelsDir();
  const id = await idOf(key);
  const old = await readMeta(dir, id);
  const resumable = url && old && !old.complete && old.key === key && old.total > 0;
  // Where the size is known before the download (`size`: from the page's header check), the
  // quota is checked before a byte is fetched.
  if (size) await checkQuota(size - (resumable ? Math.min(size, (await entryFile(dir, id))?.size || 0) : 0), name);
  const handle = await (await dir.getFileHandle(`${id}.gguf`, { create: true })).createSyncAccessHandle().catch((e) => {
    throw e && e.name === 'NoModificationAllowedError' ? named('Busy', `${name} is being stored by another tab of this site; try again when it is done`) : e;
  });
  const hash = hashers(Sha256);
  try {
    const have = resumable ? Math.min(handle.getSize(), old.total) : 0;
    const src = await openSource({ url, blob, cache }, have, signal);
    try {
      if (src.from) await hashStored(handle, hash, src.from, reporter(send, 'resume'), signal);
      // Checked here where the size was not known before.
      if (!size) await checkQuota(src.total - src.from, name);
      // The record says incomplete before a stored byte changes.
      await writeMeta(dir, id, { key, name, total: src.total, complete: false, resumedAt: src.from || undefined });
      handle.truncate(src.from);
    } catch (e) {
      await src.body.cancel().catch(() => {});
      throw e;
    }
    const progress = reporter(send, 'download');
    const end = await pour(src.body, handle, hash, src.from, { total: src.total, name, progress, signal });
    progress(end, src.total, true);
    handle.flush();
    if (src.total && end !== src.total) {
      throw named('Truncated', `the download of ${name} stopped after ${mib(end)} of ${mib(src.total)} MiB; load it again to resume from there`);
    }
    const { sha256, chunks } = await hash.finish();
    if (want && sha256 !== want) {
      handle.close();
      await removeEntry(dir, id);
      throw named('CorruptModel', `the download is damaged: sha256 ${sha256.slice(0, 12)}… instead of ${want.slice(0, 12)}…`);
    }
    await writeMeta(dir, id, { key, name, total: end, sha256, chunk: CHUNK, chunks, complete: true, stored: new Date().toISOString() });
    return { bytes: end, sha256 };
  } catch (e) {
    // A download keeps its bytes for a resume; a copy from a file or the old store does not.
    if (!url && e.name !== 'CorruptModel') {
      try { handle.close(); } catch { /* closed */ }
      await removeEntry(dir, id).catch(() => {});
    }
    throw e;
  } finally {
    try { handle.close(); } catch { /* closed above */ }
    hash.free();
  }
}
