// Rotary position embedding and the cache append, fused, for the n tokens of a chunk (workgroup
// z is t, at position p = pos + t). Each token's qkv row is [q (h heads) | k (h_kv) | v (h_kv)];
// invocation i takes its i-th pair of elements (x0, x1):
//   q pair:  rotated in place                       (the query, read by attention)
//   k pair:  rotated into k_cache[p]                (the cache row is the only copy of k)
//   v pair:  copied into v_cache[p]
// where a pair at index j of its head turns by θ = p · base^(−2j/d_h):
//   (x0, x1) ← (x0·cos θ − x1·sin θ, x0·sin θ + x1·cos θ)
// cos θ and sin θ come from a table computed once on the CPU ([T × d_h/2] pairs).

struct Params {
    n_heads: u32,     // h
    n_kv_heads: u32,  // h_kv
    head_dim: u32,    // d_h
}

@group(0) @binding(0) var<storage, read_write> qkv: array<vec2<f32>>;      // [B × (h + 2·h_kv) · d_h / 2]
// The cache holds each pair as two f32, or (kv_f16) as two f16 packed in a u32, rounded to
// nearest even.
//#if kv_f16
@group(0) @binding(1) var<storage, read_write> k_cache: array<u32>;  // [T × h_kv · d_h / 2]
@group(0) @binding(2) var<storage, read_write> v_cache: array<u32>;  // [T × h_kv · d_h / 2]
fn cache_pair(v: vec2<f32>) -> u32 { return pack2x16float(v); }
//#else
@group(0) @binding(1) var<storage, read_write> k_cache: array<vec2<f32>>;  // [T × h_kv · d_h / 2]
@group(0) @binding(2) var<storage, read_write> v_cache: array<vec2<f32>>;  // [T × h_kv · d_h / 2]
fn cache_pair(v: vec2<f32>) -> vec2<f32> { return v; }
//#endif
@group(0) @binding(3) var<storage, read> table: array<vec2<f32>>;          // [T × d_h/2] (cos, sin)
@group(0) @binding(4) var<uniform> p: Params;
@group(0) @binding(5) var<uniform> step: Step;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let half = p.head_dim / 2u;
    let q_pairs = p.n_heads * half;
    let kv_pairs = p.n_kv_heads * half;
    let i = gid.x;
    let t = gid.z;
    if (i >= q_pairs + 2u * kv_pairs || t >= step.n) { return; }
    let at = step.pos + t;
    // The teaching flaws (src/flaw.rs; 0 in every correct pass): 1 leaves the cache unwritten,
    // 2 rotates as position 0.
    let append = step.flaw != 1u;
    let angle_at = select(at, 0u, step.flaw == 2u);
    let x = qkv[t * (q_pairs + 2u * kv_pairs) + i];
    if (i >= q_pairs + kv_pairs) {
        if (append) { v_cache[at * kv_pairs + i - q_pairs - kv_pairs] = cache_pair(x); }
        return;
    }
    let cs = table[angle_at * half + i % half];
    let r = vec2<f32>(x.x * cs.x - x.y * cs.y, x.x * cs.y + x.y * cs.x);
    if (i < q_pairs) {
        qkv[t * (q_pairs + 2u * kv_pairs) + i] = r;
    } else if (append) {
        k_cache[at * kv_pairs + i - q_pairs] = cache_pair(r);
    }
}
