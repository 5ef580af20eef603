// Gated FFN activation for each token row (workgroup z is the token): out[t] = act(gate[t]) ⊙ up[t];
// gate and up share one row: gate_up[t] = [gate (f) | up (f)].
//   act = 0: silu(g) = g / (1 + e^−g)                                  (SwiGLU)
//   act = 1: gelu(g) = g/2 · (1 + tanh(√(2/π) · (g + 0.044715 g³)))    (GeGLU, tanh form)

struct Params {
    n: u32,    // f
    act: u32,  // 0 silu, 1 gelu (tanh)
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
    out[t * p.n + i] = activate(gate_up[t * 2u * p.n + i], p.act) * gate_up[t * 2u * p.n + p.n + i];
}
