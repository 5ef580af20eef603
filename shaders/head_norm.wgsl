// RMSNorm of each q and k head in place, before RoPE (Qwen 3, Gemma 3): for token t of the chunk
// (workgroup z) and head e (workgroup x) of its qkv row [q (h heads) | k (h_kv) | v (h_kv)],
//   x ← x / sqrt(mean(x²) + eps) ⊙ w,   w = q_norm for the h query heads, k_norm for the h_kv key heads
// both [d_h]. One workgroup of 64 per (head, token).

struct Params {
    n_heads: u32,     // h
    n_kv_heads: u32,  // h_kv
    head_dim: u32,    // d_h
    eps: f32,
}

@group(0) @binding(0) var<storage, read_write> qkv: array<f32>;  // [B × (h + 2·h_kv) · d_h]
@group(0) @binding(1) var<storage, read> q_norm: array<f32>;     // [d_h]
@group(0) @binding(2) var<storage, read> k_norm: array<f32>;     // [d_h]
@group(0) @binding(3) var<uniform> p: Params;
@group(0) @binding(4) var<uniform> step: Step;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, lanes: Lanes) {
    enter(lanes);
    let i = lanes.i;
    let e = wg.x;
    if (wg.z >= step.n || e >= p.n_heads + p.n_kv_heads) { return; }
    let base = (wg.z * (p.n_heads + 2u * p.n_kv_heads) + e) * p.head_dim;
    var ss = 0.0;
    for (var j = i; j < p.head_dim; j += 64u) { ss += qkv[base + j] * qkv[base + j]; }
    let scale = rms_scale(ss, i, p.head_dim, p.eps);
    for (var j = i; j < p.head_dim; j += 64u) {
        let w = select(k_norm[j], q_norm[j], e < p.n_heads);
        qkv[base + j] = qkv[base + j] * scale * w;
    }
}
