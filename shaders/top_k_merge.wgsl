// Pass 2 of top_k.wgsl: one workgroup merges the S slices' records into
//   M = max_s m_s,   L = Σ_s l_s · e^(m_s − M)       (softmax: p_i = e^(x_i − M) / L)
// and the K largest (x_i, i) of all the slices' lists, ties to the lower index:
//   out = [M, L (f32 bits), K × (id, logit bits)]     (id = 0xffffffff past the V logits)

struct Params {
    slices: u32,  // S ≤ 64
}

@group(0) @binding(0) var<storage, read_write> out: array<u32>;  // [2 + 2K]
@group(0) @binding(1) var<storage, read> part: array<u32>;       // [S × (2 + 2K)]
@group(0) @binding(2) var<uniform> p: Params;

var<workgroup> win_v: array<f32, 64>;
var<workgroup> win_i: array<u32, 64>;

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) t: u32) {
    let rec = t * (2u + 2u * K);
    let live = t < p.slices;
    let m = select(LOWEST, bitcast<f32>(part[min(rec, arrayLength(&part) - 1u)]), live);
    let l = select(0.0, bitcast<f32>(part[min(rec + 1u, arrayLength(&part) - 1u)]), live);
    let ml = merge_stats(m, l, t);
    if (t == 0u) {
        out[0] = bitcast<u32>(ml.x);
        out[1] = bitcast<u32>(ml.y);
    }
    // Each slice's list is sorted: K rounds, each slice offering its first entry not taken yet.
    var next = 0u;
    for (var r = 0u; r < K; r++) {
        let at = rec + 2u + 2u * min(next, K - 1u);
        let ok = live && next < K;
        win_i[t] = select(NONE, part[min(at, arrayLength(&part) - 2u)], ok);
        win_v[t] = select(LOWEST, bitcast<f32>(part[min(at + 1u, arrayLength(&part) - 1u)]), ok);
        workgroupBarrier();
        // The winner's slice is found again by its id: ids are unique across slices.
        let mine = win_i[t];
        for (var s = 32u; s > 0u; s >>= 1u) {
            if (t < s && better(win_v[t + s], win_i[t + s], win_v[t], win_i[t])) {
                win_v[t] = win_v[t + s];
                win_i[t] = win_i[t + s];
            }
            workgroupBarrier();
        }
        let w = win_i[0];
        if (t == 0u) {
            out[2u + 2u * r] = w;
            out[3u + 2u * r] = bitcast<u32>(win_v[0]);
        }
        if (w != NONE && mine == w) { next++; }
        workgroupBarrier();
    }
}
