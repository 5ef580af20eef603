// The page's fixed settings and the URL parameters that change them (documented in the README).
import { $ } from './dom.js';
import { pickedPolicy } from './kv-policy.js';

export const params = new URLSearchParams(location.search);

export const DEFAULT_MODEL = 'models/SmolLM2-135M-Instruct.Q4_1.gguf';

/** The context chosen in #context (tokens of KV cache the next load allocates). */
export function contextTokens() {
  return Number($('context').value);
}

/** Published hashes of models the site ships, checked after every download. */
export const KNOWN_SHA256 = { 'SmolLM2-135M-Instruct.Q4_1.gguf': 'b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53' };

/** The cache policy the address asks for: ?kv_policy=NAME, or ?kv=f16 (the older form), else
 * the exact f32 cache. */
export function initialPolicy() {
  if (params.has('kv_policy')) return params.get('kv_policy');
  return params.get('kv') === 'f16' ? 'f16' : 'f32';
}

/** Options for `inspectModel` and `WebEngine.load`: the backend the worker chose, the cache
 * policy chosen in #kv-policy (kv-policy.js), and ?rows=M,N: weight rows per invocation of the
 * mat-vec and mat-mul kernels (default: by adapter). */
export function loadOptions(backend) {
  const o = { kv_policy: pickedPolicy() };
  if (backend) o.backend = backend;
  if (params.has('rows')) o.rows = params.get('rows').split(',').map(Number);
  // ?fuse=N: the decode step's fusions (bits; 0: one dispatch per op); ?subgroups=0: no
  // subgroup operations.
  if (params.has('fuse')) o.fuse = Number(params.get('fuse'));
  if (params.get('subgroups') === '0') o.subgroups = false;
  return o;
}
