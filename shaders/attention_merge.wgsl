// Pass 2 of attention.wgsl: merges the splits of each (token, head). With split maxima m_s, sums
// l_s and unnormalised outputs o_s over the splits s0 .. ⌈(p+1)/S⌉ − 1 holding the positions
// lo..=p that token t at position p attends (s0 = ⌊lo/S⌋; lo > 0 on a sliding-window layer):
//   M = max_s m_s,   L = Σ_s l_s · e^(m_s − M)
//   out = Σ_s o_s · e^(m_s − M) / L
// and, for the chunk's last token, (M, L) beside its scores in `att`: its softmax weights are
// e^(s_j − M) / L (`ops::softmax_weights`, when a view reads them).
// One workgroup of 64 per (head, token).

struct Params {
    n_heads: u32,         // h
    head_dim: u32,        // d_h
    stats_offset: u32,    // elements: this layer's [h × 2] (M, L) in `att`
    split: u32,           // S
    n_splits: u32,        // ⌈T / S⌉, at most MAX_SPLITS
    window: u32,          // W, or 0: every position
}

@group(0) @binding(0) var<storage, read_write> out: array<vec4<f32>>;  // [B × h · d_h / 4]
@group(0) @binding(1) var<storage, read_write> att: array<f32>;        // [L × h × T] scores, then [L × h × 2]
@group(0) @binding(2) var<storage, read> part: array<vec4<f32>>;       // [B × h × n_splits × (1 + d_h/4)]
@group(0) @binding(3) var<uniform> p: Params;
@group(0) @binding(4) var<uniform> step: Step;

var<workgroup> scale: array<f32, MAX_SPLITS>;  // e^(m_s − M) / L per split

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) i: u32) {
    let h = wg.x;
    let t = wg.z;
    if (t >= step.n) { return; }
    let splits = split_range(step.pos + t + 1u);
    let hd4 = p.head_dim / 4u;
    let rec = 1u + hd4;
    let base = (t * p.n_heads + h) * p.n_splits * rec;

    let ml = merged_stats(base, splits, rec);
    if (i >= splits.x && i < splits.y) { scale[i] = exp(part[base + i * rec].x - ml.x) / ml.y; }
    workgroupBarrier();

    for (var d4 = i; d4 < hd4; d4 += 64u) {
        var o = vec4<f32>(0.0);
        for (var s = splits.x; s < splits.y; s++) { o += part[base + s * rec + 1u + d4] * scale[s]; }
        out[(t * p.n_heads + h) * hd4 + d4] = o;
    }
    if (t + 1u == step.n && i == 0u) {
        att[p.stats_offset + 2u * h] = ml.x;
        att[p.stats_offset + 2u * h + 1u] = ml.y;
    }
}
