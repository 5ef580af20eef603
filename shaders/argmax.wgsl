// Greedy pick on the GPU: out = (argmax_i logits[i], logits[argmax]) with ties going to the lowest
// index, so that only 8 bytes are read back instead of the whole [V] row.
// One workgroup of 256: each invocation scans a strided slice, then a tree reduction.

struct Params {
    n: u32,  // V
}

@group(0) @binding(0) var<storage, read_write> out: array<u32>;  // [2]: index, f32 bits of the value
@group(0) @binding(1) var<storage, read> logits: array<f32>;     // [V]
@group(0) @binding(2) var<uniform> p: Params;

var<workgroup> best_v: array<f32, 256>;
var<workgroup> best_i: array<u32, 256>;

// (v, i) beats (w, j) when larger, or equal with the lower index. NaN never wins.
fn better(v: f32, i: u32, w: f32, j: u32) -> bool {
    return v > w || (v == w && i < j);
}

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) t: u32) {
    // Start below every finite logit; -inf and NaN never win, and if nothing does, index 0 is
    // reported (as the CPU argmax does).
    var v = -0x1.fffffep+127f;  // the lowest finite f32
    var i = 0xffffffffu;
    for (var k = t; k < p.n; k += 256u) {
        let x = logits[k];
        if (better(x, k, v, i)) { v = x; i = k; }
    }
    best_v[t] = v;
    best_i[t] = i;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (t < s && better(best_v[t + s], best_i[t + s], best_v[t], best_i[t])) {
            best_v[t] = best_v[t + s];
            best_i[t] = best_i[t + s];
        }
        workgroupBarrier();
    }
    if (t == 0u) {
        let found = best_i[0] != 0xffffffffu;
        out[0] = select(0u, best_i[0], found);
        out[1] = bitcast<u32>(select(logits[0], best_v[0], found));
    }
}
