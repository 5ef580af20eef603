// The prologue of a staged projection (matmul.wgsl) whose input is the residual stream normed:
//   xs = x / sqrt(mean(x²) + eps) ⊙ w_norm
// for the one token of a decode step — or, with pre_add (a sublayer's post-norm before its
// residual add, Gemma), first
//   x' = x + sub / sqrt(mean(sub²) + eps) ⊙ w_post,
// which workgroup 0 also writes to x_next (the residual stream goes on there: other workgroups
// still read x), then xs = rmsnorm(x') ⊙ w_norm. Every workgroup computes it; at d = 576 that is
// 9 elements per invocation and a reduction.

@group(0) @binding(6) var<storage, read> norm_w: array<vec4<f32>>;          // [cols / 4]
//#if pre_add
@group(0) @binding(7) var<storage, read> sub: array<vec4<f32>>;             // [cols / 4] the sublayer's output
@group(0) @binding(8) var<storage, read> post_w: array<vec4<f32>>;          // [cols / 4]
@group(0) @binding(9) var<storage, read_write> x_next: array<vec4<f32>>;    // [cols / 4]
//#endif

fn stage(i: u32, first: bool) {
    let n4 = p.cols / 4u;
    //#if pre_add
    var sub_ss = 0.0;
    for (var c = i; c < n4; c += 64u) { sub_ss += dot(sub[c], sub[c]); }
    let sub_scale = rms_scale(sub_ss, i, p.cols, p.eps);
    for (var c = i; c < n4; c += 64u) {
        let v = x[c] + sub[c] * sub_scale * post_w[c];
        xs[c] = v;
        if (first) { x_next[c] = v; }
    }
    //#else
    for (var c = i; c < n4; c += 64u) { xs[c] = x[c]; }
    //#endif
    // Each invocation reads back only what it wrote: no barrier before the sum.
    var ss = 0.0;
    for (var c = i; c < n4; c += 64u) { ss += dot(xs[c], xs[c]); }
    let scale = rms_scale(ss, i, p.cols, p.eps);
    for (var c = i; c < n4; c += 64u) { xs[c] = xs[c] * scale * norm_w[c]; }
    workgroupBarrier();
}
