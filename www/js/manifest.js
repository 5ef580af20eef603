// The models this site ships: models/manifest.json, written at build time by
// scripts/post-build.py (part of the app shell, so the list is there offline too).

/** [{file, name, bytes, header_bytes, sha256, url}] once `loadManifest` has resolved. */
export const shipped = [];

/** Reads models/manifest.json into `shipped`; throws an error that names what is wrong. */
export async function loadManifest() {
  const res = await fetch('models/manifest.json');
  if (!res.ok) throw new Error(`models/manifest.json: HTTP ${res.status} ${res.statusText}`);
  let m;
  try {
    m = await res.json();
  } catch (e) {
    throw new Error(`models/manifest.json is not JSON: ${e.message}`);
  }
  if (!m || !Array.isArray(m.models)) throw new Error('models/manifest.json has no "models" list');
  for (const x of m.models) {
    if (typeof x.file !== 'string' || !Number.isSafeInteger(x.bytes) || !Number.isSafeInteger(x.header_bytes)) {
      throw new Error(`models/manifest.json: an entry without file, bytes or header_bytes (${JSON.stringify(x).slice(0, 80)})`);
    }
  }
  shipped.splice(0, shipped.length, ...m.models.map((x) => ({ ...x, name: x.name || x.file, url: `models/${x.file}` })));
  return shipped;
}

/** The shipped model at `url` (relative to the page or absolute), or undefined. */
export function shippedAt(url) {
  const abs = new URL(url, location.href).href;
  return shipped.find((m) => new URL(m.url, location.href).href === abs);
}
