// What the two merges of attention's splits share (attention_merge.wgsl, and project_merge.wgsl
// in the output projection's prologue): the splits a token attends, and the softmax statistics
// over them. Reads `part` and the params `split` (S) and `window` (W) of the kernel it joins.

// The splits s0 .. ns − 1 that hold the positions lo .. n − 1 a token at position n − 1 attends
// (lo = n − W on a sliding-window layer, else 0).
fn split_range(n: u32) -> vec2<u32> {
    let ns = (n + p.split - 1u) / p.split;
    let lo = select(0u, n - min(n, p.window), p.window > 0u);
    return vec2<u32>(lo / p.split, ns);
}

// (M, L) = (max_s m_s, Σ_s l_s · e^(m_s − M)) over the splits' records, part[base + s · rec] =
// (m_s, l_s, 0, 0).
fn merged_stats(base: u32, splits: vec2<u32>, rec: u32) -> vec2<f32> {
    var big_m = -3.4e38;
    for (var s = splits.x; s < splits.y; s++) { big_m = max(big_m, part[base + s * rec].x); }
    var big_l = 0.0;
    for (var s = splits.x; s < splits.y; s++) {
        let ml = part[base + s * rec];
        big_l += ml.y * exp(ml.x - big_m);
    }
    return vec2<f32>(big_m, big_l);
}
