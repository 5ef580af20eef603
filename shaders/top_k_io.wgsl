// What both passes of the next-token table share (top_k.wgsl, top_k_merge.wgsl), prepended to
// each: K (the entries kept, `backend::TOP_K`, emitted from Rust), the order of entries, and the
// merge of softmax statistics over a workgroup of 64.

const NONE: u32 = 0xffffffffu;
const LOWEST: f32 = -0x1.fffffep+127f;

// (v, i) beats (w, j) when larger, or equal with the lower index; a free slot (j = NONE) loses to
// everything real. NaN never wins.
fn better(v: f32, i: u32, w: f32, j: u32) -> bool {
    return i != NONE && (j == NONE || v > w || (v == w && i < j));
}

var<workgroup> red_m: array<f32, 64>;
var<workgroup> red_l: array<f32, 64>;

// Folds the 64 invocations' statistics (m_t, l_t) (l relative to its m) into
//   M = max_t m_t,   L = Σ_t l_t · e^(m_t − M)
// returned to every invocation; t = local_invocation_index.
fn merge_stats(m: f32, l: f32, t: u32) -> vec2<f32> {
    red_m[t] = m;
    red_l[t] = l;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if (t < s) {
            let m2 = max(red_m[t], red_m[t + s]);
            red_l[t] = red_l[t] * exp(red_m[t] - m2) + red_l[t + s] * exp(red_m[t + s] - m2);
            red_m[t] = m2;
        }
        workgroupBarrier();
    }
    let r = vec2<f32>(red_m[0], red_l[0]);
    workgroupBarrier();
    return r;
}
