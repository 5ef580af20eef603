// Rotary position embedding and the cache append, fused, for the n tokens of a chunk (workgroup
// z is t, at position p = pos + t). Each token's qkv row is [q (h heads) | k (h_kv) | v (h_kv)];
//   q:  rotated in place                       (the query, read by attention)
//   k:  rotated into k_cache[p mod R]          (the cache row is the only copy of k)
//   v:  copied into v_cache[p mod R]
// R = rows: the context, or the ring of a sliding-window layer. Pair j of a head turns by
// θ_j(p) (cos θ and sin θ come from a table computed once on the CPU, [T × d_h/2]):
//   (x0, x1) ← (x0·cos θ − x1·sin θ, x0·sin θ + x1·cos θ)
// with (x0, x1) = (x[2j], x[2j+1]) ("normal"), or with NEOX = 1 (x[j], x[j + d_h/2]).
// An invocation owns one unit: normal, one adjacent pair; NeoX, the adjacent pairs at 2u and
// 2u + d_h/2 of a head (elements 2u, 2u+1 turn with 2u + d_h/2, 2u+1 + d_h/2), so that every
// invocation writes whole adjacent pairs (an f16 cache packs a pair in one u32).

override NEOX: u32 = 0u;

struct Params {
    n_heads: u32,     // h
    n_kv_heads: u32,  // h_kv
    head_dim: u32,    // d_h, a multiple of 4
    rows: u32,        // R: cache rows; position p is row p mod R
}

@group(0) @binding(0) var<storage, read_write> qkv: array<vec2<f32>>;      // [B × (h + 2·h_kv) · d_h / 2]
// The cache holds each pair as two f32, or (kv_f16) as two f16 packed in a u32, rounded to
// nearest even. A block cache (kv_blocks: Q8_0, Q4_0) is written by kv_quantize.wgsl after this
// pass, from the row: here k is turned in place like q, and the cache is not touched.
//#if kv_blocks
@group(0) @binding(1) var<storage, read> k_cache: array<u32>;
@group(0) @binding(2) var<storage, read> v_cache: array<u32>;
//#else
//#if kv_f16
@group(0) @binding(1) var<storage, read_write> k_cache: array<u32>;  // [R × h_kv · d_h / 2]
@group(0) @binding(2) var<storage, read_write> v_cache: array<u32>;  // [R × h_kv · d_h / 2]
fn cache_pair(v: vec2<f32>) -> u32 { return pack2x16float(v); }
//#else
@group(0) @binding(1) var<storage, read_write> k_cache: array<vec2<f32>>;  // [R × h_kv · d_h / 2]
@group(0) @binding(2) var<storage, read_write> v_cache: array<vec2<f32>>;  // [R × h_kv · d_h / 2]
fn cache_pair(v: vec2<f32>) -> vec2<f32> { return v; }
//#endif
//#endif
@group(0) @binding(3) var<storage, read> table: array<vec2<f32>>;          // [T × d_h/2] (cos, sin)
@group(0) @binding(4) var<uniform> p: Params;
@group(0) @binding(5) var<uniform> step: Step;

// Writes pair `pair` of token t's row (already turned where it is q or k) to its place.
fn put(t: u32, pair: u32, v: vec2<f32>, row: u32, q_pairs: u32, kv_pairs: u32, append: bool) {
    if (pair < q_pairs) {
        qkv[t * (q_pairs + 2u * kv_pairs) + pair] = v;
    } else if (!append) {
        return;
    }
//#if kv_blocks
    else if (pair < q_pairs + kv_pairs) {
        qkv[t * (q_pairs + 2u * kv_pairs) + pair] = v;
    }
//#else
    else if (pair < q_pairs + kv_pairs) {
        k_cache[row * kv_pairs + pair - q_pairs] = cache_pair(v);
    } else {
        v_cache[row * kv_pairs + pair - q_pairs - kv_pairs] = cache_pair(v);
    }
//#endif
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let half = p.head_dim / 2u;
    let q_pairs = p.n_heads * half;
    let kv_pairs = p.n_kv_heads * half;
    let row_pairs = q_pairs + 2u * kv_pairs;
    let i = gid.x;
    let t = gid.z;
    let units = select(row_pairs, row_pairs / 2u, NEOX == 1u);
    if (i >= units || t >= step.n) { return; }
    let at = step.pos + t;
    // The teaching flaws (`core::flaw`; FLAW_NONE in every correct pass).
    let append = step.flaw != FLAW_NO_APPEND;
    let angle_at = select(at, 0u, step.flaw == FLAW_ROPE_POS_0);
    let row = at % p.rows;
    let base = t * row_pairs;
    let is_v = i >= select(q_pairs + kv_pairs, (q_pairs + kv_pairs) / 2u, NEOX == 1u);
    if (NEOX == 0u) {
        let x = qkv[base + i];
        if (is_v) { put(t, i, x, row, q_pairs, kv_pairs, append); return; }
        let cs = table[angle_at * half + i % half];
        put(t, i, vec2<f32>(x.x * cs.x - x.y * cs.y, x.x * cs.y + x.y * cs.x), row, q_pairs, kv_pairs, append);
        return;
    }
    // NeoX: head e, unit u < d_h/4; pairs a (elements 2u, 2u+1) and b = a + d_h/4 (2u + d_h/2, …).
    let quarter = half / 2u;
    let e = i / quarter;
    let u = i % quarter;
    let pa = e * half + u;
    let pb = pa + quarter;
    let a = qkv[base + pa];
    let b = qkv[base + pb];
    if (is_v) {
        put(t, pa, a, row, q_pairs, kv_pairs, append);
        put(t, pb, b, row, q_pairs, kv_pairs, append);
        return;
    }
    let c0 = table[angle_at * half + 2u * u];
    let c1 = table[angle_at * half + 2u * u + 1u];
    put(t, pa, vec2<f32>(a.x * c0.x - b.x * c0.y, a.y * c1.x - b.y * c1.y), row, q_pairs, kv_pairs, append);
    put(t, pb, vec2<f32>(a.x * c0.y + b.x * c0.x, a.y * c1.y + b.y * c1.x), row, q_pairs, kv_pairs, append);
}
