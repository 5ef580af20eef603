// RMSNorm: out = x / sqrt(mean(x²) + eps) ⊙ weight, one workgroup of 64.

struct Params {
    n: u32,    // elements
    eps: f32,
}

@group(0) @binding(0) var<storage, read_write> out: array<f32>;  // [n]
@group(0) @binding(1) var<storage, read> x: array<f32>;          // [n]
@group(0) @binding(2) var<storage, read> weight: array<f32>;     // [n]
@group(0) @binding(3) var<uniform> p: Params;

var<workgroup> partial: array<f32, 64>;

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) t: u32) {
    var ss = 0.0;
    for (var i = t; i < p.n; i += 64u) { ss += x[i] * x[i]; }
    partial[t] = ss;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if (t < s) { partial[t] += partial[t + s]; }
        workgroupBarrier();
    }
    let scale = inverseSqrt(partial[0] / f32(p.n) + p.eps);
    for (var i = t; i < p.n; i += 64u) { out[i] = x[i] * scale * weight[i]; }
}
