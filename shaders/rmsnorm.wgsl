// RMSNorm of each token row: out[t] = x[t] / sqrt(mean(x[t]²) + eps) ⊙ weight, one workgroup of
// 64 per token (workgroup z). With last = 1 only the chunk's last row is normed, into out row 0
// (the head: logits are wanted for the last position only). The sum of squares is reduced with
// subgroup operations where the device has them, else with a workgroup-memory tree.

struct Params {
    n: u32,     // elements per row
    eps: f32,
    last: u32,  // 1: read row step.n − 1, write row 0
}

struct Step {
    pos: u32,
    n: u32,  // tokens in the chunk
}

@group(0) @binding(0) var<storage, read_write> out: array<f32>;  // [B × n]
@group(0) @binding(1) var<storage, read> x: array<f32>;          // [B × n]
@group(0) @binding(2) var<storage, read> weight: array<f32>;     // [n]
@group(0) @binding(3) var<uniform> p: Params;
@group(0) @binding(4) var<uniform> step: Step;

var<workgroup> partial: array<f32, 64>;

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
//#if subgroups
    @builtin(subgroup_invocation_id) sg_id: u32,
    @builtin(subgroup_size) sg_n: u32,
//#endif
) {
    if (wg.z >= step.n) { return; }
    let src = select(wg.z, step.n - 1u, p.last != 0u) * p.n;
    let dst = select(wg.z, 0u, p.last != 0u) * p.n;
    var ss = 0.0;
    for (var i = t; i < p.n; i += 64u) { ss += x[src + i] * x[src + i]; }
//#if subgroups
    // Subgroup totals, one slot per subgroup (its first invocation); each subgroup then folds
    // the 64 slots lane-strided and reduces once more.
    let s = subgroupAdd(ss);
    partial[t] = select(0.0, s, sg_id == 0u);
    workgroupBarrier();
    var sum = 0.0;
    for (var k = sg_id; k < 64u; k += sg_n) { sum += partial[k]; }
    sum = subgroupAdd(sum);
//#else
    partial[t] = ss;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if (t < s) { partial[t] += partial[t + s]; }
        workgroupBarrier();
    }
    let sum = partial[0];
//#endif
    let scale = inverseSqrt(sum / f32(p.n) + p.eps);
    for (var i = t; i < p.n; i += 64u) { out[dst + i] = x[src + i] * scale * weight[i]; }
}
