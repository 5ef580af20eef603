// The next-token table on the GPU, pass 1 of 2 (top_k_merge.wgsl is pass 2): for a slice of the
// logits per workgroup, the softmax statistics and the K best logits, so that a token reads back
// K (id, logit) pairs and two numbers instead of the whole [V] row.
// Workgroup s covers logits [s·C, (s+1)·C), C = ⌈V / S⌉, and writes to part[s]:
//   m_s = max_i x_i,   l_s = Σ_i e^(x_i − m_s),   its K largest (x_i, i), ties to the lower index.
// Each invocation keeps its own K best in order while it scans (one insertion per element that
// beats its K-th), then K rounds of a workgroup argmax take the slice's K best from the 64 lists.

struct Params {
    n: u32,      // V
    chunk: u32,  // C: logits per workgroup
}

@group(0) @binding(0) var<storage, read_write> part: array<u32>;  // [S × (2 + 2K)]: m, l (f32 bits), then K × (id, logit bits)
@group(0) @binding(1) var<storage, read> logits: array<f32>;      // [V]
@group(0) @binding(2) var<uniform> p: Params;

var<workgroup> cand_v: array<f32, 64u * K>;  // [64 invocations × K]
var<workgroup> cand_i: array<u32, 64u * K>;
var<workgroup> win_v: array<f32, 64>;
var<workgroup> win_at: array<u32, 64>;   // where in cand_* the invocation's best still-free entry is

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let lo = wg.x * p.chunk;
    let hi = min(lo + p.chunk, p.n);
    var bv: array<f32, K>;
    var bi: array<u32, K>;
    for (var j = 0u; j < K; j++) { bv[j] = LOWEST; bi[j] = NONE; }
    var m = LOWEST;
    var l = 0.0;
    for (var k = lo + t; k < hi; k += 64u) {
        let x = logits[k];
        // Online softmax statistics: l stays relative to the running maximum m.
        if (x > m) { l = l * exp(m - x) + 1.0; m = x; } else { l += exp(x - m); }
        if (better(x, k, bv[K - 1u], bi[K - 1u])) {
            var j = K - 1u;
            while (j > 0u && better(x, k, bv[j - 1u], bi[j - 1u])) {
                bv[j] = bv[j - 1u];
                bi[j] = bi[j - 1u];
                j--;
            }
            bv[j] = x;
            bi[j] = k;
        }
    }
    for (var j = 0u; j < K; j++) { cand_v[t * K + j] = bv[j]; cand_i[t * K + j] = bi[j]; }
    let ml = merge_stats(m, l, t);
    let rec = wg.x * (2u + 2u * K);
    if (t == 0u) {
        part[rec] = bitcast<u32>(ml.x);
        part[rec + 1u] = bitcast<u32>(ml.y);
    }
    // K rounds: each invocation offers the first entry of its (sorted) list not taken yet.
    var next = 0u;
    for (var r = 0u; r < K; r++) {
        let at = t * K + min(next, K - 1u);
        let free = next < K;
        win_v[t] = cand_v[at];
        win_at[t] = select(NONE, at, free && cand_i[at] != NONE);
        workgroupBarrier();
        for (var s = 32u; s > 0u; s >>= 1u) {
            if (t < s) {
                let a = win_at[t + s];
                let b = win_at[t];
                let ia = select(NONE, cand_i[a], a != NONE);
                let ib = select(NONE, cand_i[b], b != NONE);
                if (better(win_v[t + s], ia, win_v[t], ib)) { win_v[t] = win_v[t + s]; win_at[t] = a; }
            }
            workgroupBarrier();
        }
        let w = win_at[0];
        if (t == 0u) {
            part[rec + 2u + 2u * r] = select(NONE, cand_i[w], w != NONE);
            part[rec + 3u + 2u * r] = bitcast<u32>(select(LOWEST, cand_v[w], w != NONE));
        }
        if (w != NONE && w / K == t) { next++; }
        workgroupBarrier();
    }
}
