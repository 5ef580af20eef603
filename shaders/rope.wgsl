// Rotary position embedding, in place, for the n_heads query heads and n_kv_heads key heads that
// lie back to back in the qkv buffer: each adjacent pair (x[2i], x[2i+1]) of a head turns by
//   θ = pos · base^(−2i/d_h):  (x0, x1) ← (x0·cos θ − x1·sin θ, x0·sin θ + x1·cos θ)
// cos θ and sin θ come from a table computed once on the CPU ([T × d_h/2] pairs).

struct Params {
    n_rot_heads: u32,  // h + h_kv
    head_dim: u32,     // d_h
}

struct Step {
    pos: u32,
}

@group(0) @binding(0) var<storage, read_write> qkv: array<vec2<f32>>;  // [(h + 2·h_kv) · d_h / 2]
@group(0) @binding(1) var<storage, read> table: array<vec2<f32>>;      // [T × d_h/2] (cos, sin)
@group(0) @binding(2) var<uniform> p: Params;
@group(0) @binding(3) var<uniform> step: Step;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let half = p.head_dim / 2u;
    let idx = gid.x;  // pair index over all rotated heads
    if (idx >= p.n_rot_heads * half) { return; }
    let cs = table[step.pos * half + idx % half];
    let v = qkv[idx];
    qkv[idx] = vec2<f32>(v.x * cs.x - v.y * cs.y, v.x * cs.y + v.y * cs.x);
}
