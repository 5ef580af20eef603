// The prologue of a staged projection (matmul.wgsl) whose input is attention's output: the
// splits of attention's first pass merged here, for the one token of a decode step, as
// attention_merge.wgsl merges them. Head h over the splits s0 .. ns − 1 holding the positions
// lo..=pos it attends:
//   M = max_s m_s,   L = Σ_s l_s · e^(m_s − M),   xs_h = Σ_s o_s · e^(m_s − M) / L
// and workgroup 0 stores (M, L) beside the layer's scores in `att` (`ops::attention::softmax_weights`).

@group(0) @binding(6) var<storage, read> part: array<vec4<f32>>;    // [h × n_splits × (1 + d_h/4)] of token 0
@group(0) @binding(7) var<storage, read_write> att: array<f32>;     // [L × h × T] scores, then [L × h × 2]

fn stage(i: u32, first: bool) {
    let splits = split_range(step.pos + 1u);
    let hd4 = p.head_dim / 4u;
    let rec = 1u + hd4;
    for (var e = i; e < p.n_heads * hd4; e += 64u) {
        let h = e / hd4;
        let base = h * p.n_splits * rec;
        let ml = merged_stats(base, splits, rec);
        var o = vec4<f32>(0.0);
        for (var s = splits.x; s < splits.y; s++) { o += part[base + s * rec + 1u + e % hd4] * (exp(part[base + s * rec].x - ml.x) / ml.y); }
        xs[e] = o;
        if (first && e % hd4 == 0u) {
            att[p.stats_offset + 2u * h] = ml.x;
            att[p.stats_offset + 2u * h + 1u] = ml.y;
        }
    }
    workgroupBarrier();
}
