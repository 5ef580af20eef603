// Appends this token's key and value to the cache: k_cache[pos] = k, v_cache[pos] = v.
// k and v sit after the query in the qkv buffer: qkv = [q (q_dim) | k (kv_dim) | v (kv_dim)].
// The cache row is the only copy; "append" is this one write.

struct Params {
    q_dim: u32,   // d
    kv_dim: u32,  // h_kv · d_h
}

struct Step {
    pos: u32,
}

@group(0) @binding(0) var<storage, read_write> k_cache: array<f32>;  // [T × kv_dim]
@group(0) @binding(1) var<storage, read_write> v_cache: array<f32>;  // [T × kv_dim]
@group(0) @binding(2) var<storage, read> qkv: array<f32>;            // [q_dim + 2·kv_dim]
@group(0) @binding(3) var<uniform> p: Params;
@group(0) @binding(4) var<uniform> step: Step;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= p.kv_dim) { return; }
    k_cache[step.pos * p.kv_dim + i] = qkv[p.q_dim + i];
    v_cache[step.pos * p.kv_dim + i] = qkv[p.q_dim + p.kv_dim + i];
}
