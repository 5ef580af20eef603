// Quantised matrix × token vectors: for every token t < n of a prefill chunk, or the one token
// of a decode step (n = 1: the mat-vec, a tile of TILE_ROWS rows × 1 token),
//   Y[t, out_offset + r] = Σ_c W[r, c] · X[t, c]   (+ Y[t, out_offset + r] when accumulate = 1,
//   which fuses the residual add x ← x + W·h into the projection)
// W is [rows × cols] in ggml blocks of type WTYPE; X is [B × x_stride], Y is [B × y_stride].
//
// Register-tiled: one invocation owns a tile of TILE_ROWS weight rows × TILE_TOKENS tokens and
// keeps their sums in named scalars — the `//#for` blocks are repeated for each row r, token t,
// or pair, with $r and $t replaced (`shader::expand_tiles`), so the tile lives in registers
// instead of an indexed array. Per 8 columns it decodes TILE_ROWS pairs of weight quads (one
// 4-bit word per row) and loads TILE_TOKENS pairs of input quads, so each decoded weight feeds
// every token of the tile and each input load every row. Invocations along x take consecutive
// row tiles; workgroup z takes the token tiles. Rows past the end and tokens past n are clamped
// to the last one: computed, not stored.
//
// Fused forms of a decode step (one token), each a flag:
//   staged — the input comes through workgroup memory `xs`, filled by a prologue `stage` from a
//            file prepended to this one (`project_norm.wgsl`: RMSNorm, with Gemma's post-norm
//            residual add before it; `project_merge.wgsl`: attention's split merge);
//   bias   — Y[r] = W·x + bias[out_offset + r] (Qwen 2's q, k, v biases);
//   glu    — rows r of the gate and r + rows of the up projection in one invocation:
//            Y[r] = act(W_gate[r]·x) · (W_up[r]·x), the gated FFN's activation.

override WTYPE: u32;

struct Params {
    rows: u32,          // output elements per token (glu: the gate's rows f; the up rows follow)
    cols: u32,          // input elements per token, a multiple of the block (32, or 256)
    row_bytes: u32,     // encoded bytes per row of W
    out_offset: u32,    // elements, within a token's row of Y
    accumulate: u32,    // 0: Y = W·X; 1: Y += W·X
    y_stride: u32,      // elements per token row of Y
    x_stride: u32,      // elements per token row of X, a multiple of 4
    eps: f32,           // staged norm: RMSNorm's epsilon
    act: u32,           // glu: `Act::code`
    n_heads: u32,       // staged merge: h
    head_dim: u32,      // staged merge: d_h
    stats_offset: u32,  // staged merge: where this layer's [h × 2] (M, L) go in `att`
    split: u32,         // staged merge: S, positions per split
    n_splits: u32,      // staged merge: ⌈T / S⌉
    window: u32,        // staged merge: W, or 0
}

@group(0) @binding(0) var<storage, read_write> y: array<f32>;    // [B × y_stride]
@group(0) @binding(1) var<storage, read> w: array<u32>;          // [rows · row_bytes / 4] (glu: 2 · rows)
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;    // [B × x_stride / 4]
@group(0) @binding(3) var<uniform> p: Params;
@group(0) @binding(4) var<uniform> step: Step;
//#if bias
@group(0) @binding(5) var<storage, read> bias: array<f32>;       // [y_stride]
//#endif

//#if staged
var<workgroup> xs: array<vec4<f32>, X_VEC4S>;  // [cols / 4] the token's input, after `stage`
fn load_x(row: u32, i: u32) -> vec4<f32> { return xs[i]; }
//#else
fn load_x(row: u32, i: u32) -> vec4<f32> { return x[row + i]; }
//#endif

fn store(r: u32, t: u32, sum: f32) {
    if (r >= p.rows || t >= step.n) { return; }
    let i = t * p.y_stride + p.out_offset + r;
    var v = sum;
    //#if bias
    v += bias[p.out_offset + r];
    //#endif
    if (p.accumulate != 0u) { v += y[i]; }
    y[i] = v;
}

@compute @workgroup_size(64)
fn main(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    lanes: Lanes,
) {
    //#if staged
    // Every invocation takes part (the prologue reduces over the workgroup), before any leaves.
    enter(lanes);
    stage(lanes.i, wg.x == 0u && wg.y == 0u);
    //#endif
    let r0 = (gid.x + gid.y * nwg.x * 64u) * TILE_ROWS;
    let t0 = wg.z * TILE_TOKENS;
    if (r0 >= p.rows || t0 >= step.n) { return; }
    // Byte offset of each row of the tile, vec4 offset of each token's input row.
    //#for r
    let w$r = min(r0 + $ru, p.rows - 1u) * p.row_bytes;
    //#if glu
    let wu$r = (min(r0 + $ru, p.rows - 1u) + p.rows) * p.row_bytes;
    //#endif
    //#end
    //#for t
    let x$t = min(t0 + $tu, step.n - 1u) * (p.x_stride / 4u);
    //#end
    //#for r t
    var a$r_$t = 0.0;
    //#if glu
    var b$r_$t = 0.0;
    //#endif
    //#end
    for (var blk = 0u; blk < p.cols / 32u; blk++) {
        //#for r
        let s$r = block_scales(w$r, blk);
        //#if glu
        let su$r = block_scales(wu$r, blk);
        //#endif
        //#end
        for (var k = 0u; k < 4u; k++) {
            // Columns 4k.. and 4k + 16.. of the block: one 4-bit word per row.
            //#for r
            let q$r = dequant_pair(w$r, blk, k, s$r);
            //#if glu
            let qu$r = dequant_pair(wu$r, blk, k, su$r);
            //#endif
            //#end
            //#for t
            let u$t = load_x(x$t, blk * 8u + k);
            let v$t = load_x(x$t, blk * 8u + 4u + k);
            //#end
            //#for r t
            a$r_$t += dot(q$r[0], u$t) + dot(q$r[1], v$t);
            //#if glu
            b$r_$t += dot(qu$r[0], u$t) + dot(qu$r[1], v$t);
            //#endif
            //#end
        }
    }
    //#for r t
    //#if glu
    store(r0 + $ru, t0 + $tu, activate(a$r_$t, p.act) * b$r_$t);
    //#else
    store(r0 + $ru, t0 + $tu, a$r_$t);
    //#endif
    //#end
}
