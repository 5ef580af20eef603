// Pass 2 of attention.wgsl: merges the splits of each (token, head). With split maxima m_s, sums
// l_s and unnormalised outputs o_s over the splits s0 .. ⌈(p+1)/S⌉ − 1 holding the positions
// lo..=p that token t at position p attends (s0 = ⌊lo/S⌋; lo > 0 on a sliding-window layer):
//   M = max_s m_s,   L = Σ_s l_s · e^(m_s − M)
//   out = Σ_s o_s · e^(m_s − M) / L
//   att[j] ← att[j] · e^(m_s(j) − M) / L        (now softmax weights summing to 1), 0 for j < lo
// One workgroup of 64 per (head, token).

struct Params {
    n_heads: u32,         // h
    head_dim: u32,        // d_h
    att_stride: u32,      // T
    att_offset: u32,      // elements: this layer's slice, l · h · T
    scratch_offset: u32,  // elements: L · h · T
    split: u32,           // S
    n_splits: u32,        // ⌈T / S⌉, at most 64
    window: u32,          // W, or 0: every position
}

@group(0) @binding(0) var<storage, read_write> out: array<vec4<f32>>;  // [B × h · d_h / 4]
@group(0) @binding(1) var<storage, read_write> att: array<f32>;        // [L × h × T] + [B × h × T]
@group(0) @binding(2) var<storage, read> part: array<vec4<f32>>;       // [B × h × n_splits × (1 + d_h/4)]
@group(0) @binding(3) var<uniform> p: Params;
@group(0) @binding(4) var<uniform> step: Step;

var<workgroup> scale: array<f32, 64>;  // e^(m_s − M) / L per split

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) i: u32) {
    let h = wg.x;
    let t = wg.z;
    if (t >= step.n) { return; }
    let n = step.pos + t + 1u;
    let ns = (n + p.split - 1u) / p.split;
    let lo = select(0u, n - min(n, p.window), p.window > 0u);
    let s0 = lo / p.split;
    let hd4 = p.head_dim / 4u;
    let rec = 1u + hd4;
    let base = (t * p.n_heads + h) * p.n_splits * rec;

    var big_m = -3.4e38;
    for (var s = s0; s < ns; s++) { big_m = max(big_m, part[base + s * rec].x); }
    var big_l = 0.0;
    for (var s = s0; s < ns; s++) {
        let ml = part[base + s * rec];
        big_l += ml.y * exp(ml.x - big_m);
    }
    if (i >= s0 && i < ns) { scale[i] = exp(part[base + i * rec].x - big_m) / big_l; }
    workgroupBarrier();

    for (var d4 = i; d4 < hd4; d4 += 64u) {
        var o = vec4<f32>(0.0);
        for (var s = s0; s < ns; s++) { o += part[base + s * rec + 1u + d4] * scale[s]; }
        out[(t * p.n_heads + h) * hd4 + d4] = o;
    }
    let a = select(p.scratch_offset + (t * p.n_heads + h) * p.att_stride, p.att_offset + h * p.att_stride, t + 1u == step.n);
    for (var j = i; j < n; j += 64u) { att[a + j] = select(att[a + j] * scale[j / p.split], 0.0, j < lo); }
}
