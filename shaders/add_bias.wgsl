// Bias after a projection, for each token row (workgroup z is the token):
//   y[t, i] += bias[i]     i < n   (Qwen 2's q, k and v biases over the qkv row)

struct Params {
    n: u32,  // elements per row
}

@group(0) @binding(0) var<storage, read_write> y: array<f32>;  // [B × n]
@group(0) @binding(1) var<storage, read> bias: array<f32>;     // [n]
@group(0) @binding(2) var<uniform> p: Params;
@group(0) @binding(3) var<uniform> step: Step;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    let t = gid.z;
    if (i >= p.n || t >= step.n) { return; }
    y[t * p.n + i] += bias[i];
}
