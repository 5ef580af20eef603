// SwiGLU gate: out = silu(gate) ⊙ up, silu(g) = g / (1 + e^−g); gate and up share one buffer.

struct Params {
    n: u32,  // f
}

@group(0) @binding(0) var<storage, read_write> out: array<f32>;  // [f]
@group(0) @binding(1) var<storage, read> gate_up: array<f32>;    // [2f] = [gate | up]
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= p.n) { return; }
    let g = gate_up[i];
    out[i] = g / (1.0 + exp(-g)) * gate_up[p.n + i];
}
