// RMSNorm of each token row: out[t] = x[t] / sqrt(mean(x[t]²) + eps) ⊙ weight, one workgroup of
// 64 per token (workgroup z). With last = 1 only the chunk's last row is normed, into out row 0
// (the head: logits are wanted for the last position only). With add = 1 the normed row is added
// to out (a sublayer's output normed before the residual add, Gemma's post-norms: x += norm(y)). The sum of squares is reduced with
// subgroup operations where the device has them, else with a workgroup-memory tree.

struct Params {
    n: u32,     // elements per row
    eps: f32,
    last: u32,  // 1: read row step.n − 1, write row 0
    add: u32,   // 1: out += the normed row
}

@group(0) @binding(0) var<storage, read_write> out: array<f32>;  // [B × n]
@group(0) @binding(1) var<storage, read> x: array<f32>;          // [B × n]
@group(0) @binding(2) var<storage, read> weight: array<f32>;     // [n]
@group(0) @binding(3) var<uniform> p: Params;
@group(0) @binding(4) var<uniform> step: Step;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, lanes: Lanes) {
    enter(lanes);
    let t = lanes.i;
    if (wg.z >= step.n) { return; }
    let src = select(wg.z, step.n - 1u, p.last != 0u) * p.n;
    let dst = select(wg.z, 0u, p.last != 0u) * p.n;
    var ss = 0.0;
    for (var i = t; i < p.n; i += 64u) { ss += x[src + i] * x[src + i]; }
    let scale = rms_scale(ss, t, p.n, p.eps);
    for (var i = t; i < p.n; i += 64u) {
        let v = x[src + i] * scale * weight[i];
        out[dst + i] = select(v, out[dst + i] + v, p.add != 0u);
    }
}
