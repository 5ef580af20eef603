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
