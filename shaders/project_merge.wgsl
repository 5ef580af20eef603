// The prologue of a staged projection (matmul.wgsl) whose input is attention's output: the
// splits of attention's first pass merged here, for the one token of a decode step, as
// attention_merge.wgsl merges them. Head h over the splits s0 .. ns − 1 holding the positions
// lo..=pos it attends:
//   M = max_s m_s,   L = Σ_s l_s · e^(m_s − M),   xs_h = Σ_s o_s · e^(m_s − M) / L
// and workgroup 0 stores (M, L) beside the layer's scores in `att` (`ops::attention::softmax_weights`).

@group(0) @binding(6) var<storage, read> part: array<vec4<f32>>;    // [h × n_splits × (1 + d_h/4)] of token 0
@group(0) @binding(7) var<storage, read_write> att: array<f32>;     // [L × h × T] scores, then [L × h × 2]

fn stage(i: u32, first: bool) {
    let n = step.pos + 1u;
    let ns = (n + p.split - 1u) / p.split;
    let lo = select(0u, n - min(n, p.window), p.window > 0u);
    let s0 = lo / p.split;
    let hd4 = p.head_dim / 4u;
    let rec = 1u + hd4;
    for (var e = i; e < p.n_heads * hd4; e += 64u) {
        let h = e / hd4;
        let base = h * p.n_splits * rec;
        var big_m = -3.4e38;
        for (var s = s0; s < ns; s++) { big_m = max(big_m, part[base + s * rec].x); }
        var big_l = 0.0;
        for (var s = s0; s < ns; s++) {
            let ml = part[base + s * rec];
            big_l += ml.y * exp(ml.x - big_m);
        }
        var o = vec4<f32>(0.0);
        for (var s = s0; s < ns; s++) { o += part[base + s * rec + 1u + e % hd4] * (exp(part[base + s * rec].x - big_m) / big_l); }
        xs[e] = o;
        if (first && e % hd4 == 0u) {
            att[p.stats_offset + 2u * h] = big_m;
            att[p.stats_offset + 2u * h + 1u] = big_l;
        }
    }
    workgroupBarrier();
}
