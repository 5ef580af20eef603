// The model store's layout in the Origin Private File System, shared by the page (which lists,
// reads and deletes) and the engine's worker (which writes, store-writer.js):
//   kvscope-models/<id>.gguf  the model's bytes (whole once complete; a download's first bytes
//                             while it runs or after it was interrupted)
//   kvscope-models/<id>.json  {key, name, total, sha256, complete, stored}: `complete` is set only
//                             after every byte is written and its SHA-256 checked
// `id` is the first 32 hex digits of the SHA-256 of the model's key (its URL, or a local-models/
// URL for a file opened from disk).

const DIR = 'kvscope-models';

/** Whether this browser has the Origin Private File System (and its sync access handles in
 * workers: every browser that has `getDirectory` has both). */
export const hasOpfs = () => !!(globalThis.navigator && navigator.storage && navigator.storage.getDirectory);

export async function modelsDir() {
  return (await navigator.storage.getDirectory()).getDirectoryHandle(DIR, { create: true });
}

export async function idOf(key) {
  const d = new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(key)));
  return Array.from(d.subarray(0, 16), (b) => b.toString(16).padStart(2, '0')).join('');
}

/** The record of `id`, or null (none, or unreadable: an entry without a record is not stored). */
export async function readMeta(dir, id) {
  try {
    const f = await (await dir.getFileHandle(`${id}.json`)).getFile();
    return JSON.parse(await f.text());
  } catch {
    return null;
  }
}

export async function writeMeta(dir, id, meta) {
  const w = await (await dir.getFileHandle(`${id}.json`, { create: true })).createWritable();
  await w.write(JSON.stringify(meta));
  await w.close();
}

/** Removes `id`'s bytes and record; true if there was anything. */
export async function removeEntry(dir, id) {
  let removed = false;
  for (const name of [`${id}.json`, `${id}.gguf`]) {
    try {
      await dir.removeEntry(name);
      removed = true;
    } catch (e) {
      if (!(e && e.name === 'NotFoundError')) throw e;
    }
  }
  return removed;
}

/** The stored bytes of `id` as a File (read from disk slice by slice as it is used), or null. */
export async function entryFile(dir, id) {
  try {
    return await (await dir.getFileHandle(`${id}.gguf`)).getFile();
  } catch (e) {
    if (e && e.name === 'NotFoundError') return null;
    throw e;
  }
}

/** An Error whose `name` is `name`: the page acts on the kind, the user reads the message. */
export function named(name, message) {
  return Object.assign(new Error(message), { name });
}

/** Digests of a stored copy's chunks computed at once while it is checked. */
const IN_FLIGHT = 4;

export const hex = (buf) => Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, '0')).join('');

/** `blob`'s bytes read into `buffer` (an ArrayBuffer at least as long), with a BYOB reader:
 * no buffer is made for the read. The reads move the memory to a new ArrayBuffer each time;
 * returns the bytes as a view on the last, which the next call takes as its `buffer`. */
async function readInto(blob, buffer) {
  const reader = blob.stream().getReader({ mode: 'byob' });
  let at = 0;
  while (at < blob.size) {
    const { done, value } = await reader.read(new Uint8Array(buffer, at, blob.size - at));
    if (done) break;
    buffer = value.buffer;
    at += value.byteLength;
  }
  reader.releaseLock();
  return new Uint8Array(buffer, 0, at);
}

/**
 * Checks `file`, the stored copy of `id`, against the chunk digests its record `meta` keeps
 * (`meta.chunk` bytes each, SHA-256 by WebCrypto, IN_FLIGHT chunks at once, each read as a slice
 * of the file). `progress(checked, total)`. A damaged copy is removed and rejects with
 * `CorruptModel`, saying which chunk differs.
 */
export async function checkStored(dir, id, meta, file, progress = () => {}, signal = null) {
  let bad = file.size === meta.total ? null : `${file.size} bytes, expected ${meta.total}`;
  if (!bad && !(Array.isArray(meta.chunks) && meta.chunk > 0 && meta.chunks.length === Math.ceil(meta.total / meta.chunk))) bad = 'its record has no digests to check it against';
  let next = 0;
  let checked = 0;
  const lane = async () => {
    // One buffer per lane, filled again for each chunk (`digest` copies its input at the call).
    let buffer = new ArrayBuffer(meta.chunk);
    while (!bad && next < meta.chunks.length) {
      if (signal?.aborted) throw new DOMException('cancelled', 'AbortError');
      const i = next++;
      const slice = file.slice(i * meta.chunk, Math.min(file.size, (i + 1) * meta.chunk));
      const bytes = await readInto(slice, buffer);
      buffer = bytes.buffer;
      const d = hex(await crypto.subtle.digest('SHA-256', bytes));
      if (d !== meta.chunks[i]) bad = `chunk ${i + 1} of ${meta.chunks.length} has sha256 ${d.slice(0, 12)}…, expected ${meta.chunks[i].slice(0, 12)}…`;
      checked += slice.size;
      progress(checked, file.size);
    }
  };
  if (!bad) await Promise.all(Array.from({ length: IN_FLIGHT }, lane));
  if (bad) {
    await removeEntry(dir, id);
    throw named('CorruptModel', `the stored copy is damaged (${bad})`);
  }
}
