// SwiGLU gate for each token row (workgroup z is the token): out[t] = silu(gate[t]) ⊙ up[t],
// silu(g) = g / (1 + e^−g); gate and up share one row: gate_up[t] = [gate (f) | up (f)].

struct Params {
    n: u32,  // f
}

@group(0) @binding(0) var<storage, read_write> out: array<f32>;  // [B × f]
@group(0) @binding(1) var<storage, read> gate_up: array<f32>;    // [B × 2f]
@group(0) @binding(2) var<uniform> p: Params;
@group(0) @binding(3) var<uniform> step: Step;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let t = gid.z;
    if (i >= p.n || t >= step.n) { return; }
    let g = gate_up[t * 2u * p.n + i];
    out[t * p.n + i] = g / (1.0 + exp(-g)) * gate_up[t * 2u * p.n + p.n + i];
}
