// Quantised matrix × a chunk of token vectors, for prefill: for every token t < n of the chunk,
//   Y[t, out_offset + r] = Σ_c W[r, c] · X[t, c]   (+ Y[t, out_offset + r] when accumulate = 1)
// W is [rows × cols] in ggml blocks of type WTYPE; X is [B × x_stride], Y is [B × y_stride].
// One invocation owns ROWS rows (1 or 2, fixed when the pipeline is built) and TB consecutive
// tokens (workgroup z picks the token tile): each weight block is decoded once per TB tokens
// instead of once per token, and with 2 rows each X load feeds both. Tokens past n in the last
// tile, and a second row past the end, are computed and not stored. (On lavapipe 2 rows × 8
// tokens ran 1.33× faster than 1 × 8; 4 rows, 16 tokens, or X staged in workgroup memory did not
// help.)

override WTYPE: u32;
override ROWS: u32 = 1u;
const TB: u32 = 8u;

struct Params {
    rows: u32,        // output elements per token
    cols: u32,        // input elements per token, a multiple of 32
    row_bytes: u32,   // encoded bytes per row of W
    out_offset: u32,  // elements, within a token's row of Y
    accumulate: u32,  // 0: Y = W·X; 1: Y += W·X
    y_stride: u32,    // elements per token row of Y
    x_stride: u32,    // elements per token row of X, a multiple of 4
}

@group(0) @binding(0) var<storage, read_write> y: array<f32>;    // [B × y_stride]
@group(0) @binding(1) var<storage, read> w: array<u32>;          // [rows · row_bytes / 4]
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;    // [B × x_stride / 4]
@group(0) @binding(3) var<uniform> p: Params;
@group(0) @binding(4) var<uniform> step: Step;

@compute @workgroup_size(64)
fn main(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let r = (gid.x + gid.y * nwg.x * 64u) * ROWS;
    let t0 = wg.z * TB;
    if (r >= p.rows || t0 >= step.n) { return; }
    let r1 = min(r + 1u, p.rows - 1u);
    let bb = block_bytes();
    let xs = p.x_stride / 4u;
    var acc0: array<vec4<f32>, TB>;
    var acc1: array<vec4<f32>, TB>;
    for (var blk = 0u; blk < p.cols / 32u; blk++) {
        let v0 = dequant_block(r * p.row_bytes + blk * bb);
        var v1: array<vec4<f32>, 8>;
        if (ROWS > 1u) { v1 = dequant_block(r1 * p.row_bytes + blk * bb); }
        for (var t = 0u; t < TB; t++) {
            let xb = (t0 + t) * xs + blk * 8u;
            var a0 = acc0[t];
            var a1 = acc1[t];
            for (var k = 0u; k < 8u; k++) {
                let xv = x[xb + k];
                a0 += v0[k] * xv;
                if (ROWS > 1u) { a1 += v1[k] * xv; }
            }
            acc0[t] = a0;
            acc1[t] = a1;
        }
    }
    for (var t = 0u; t < min(TB, step.n - t0); t++) {
        let i = (t0 + t) * p.y_stride + p.out_offset + r;
        var s0 = (acc0[t].x + acc0[t].y) + (acc0[t].z + acc0[t].w);
        if (p.accumulate != 0u) { s0 += y[i]; }
        y[i] = s0;
        if (ROWS > 1u && r + 1u < p.rows) {
            var s1 = (acc1[t].x + acc1[t].y) + (acc1[t].z + acc1[t].w);
            if (p.accumulate != 0u) { s1 += y[i + 1u]; }
            y[i + 1u] = s1;
        }
    }
}
