// Quantised matrix-vector product for one token:
//   y[out_offset + r] = Σ_c W[r, c] · x[c]  (+ y[out_offset + r] when accumulate = 1, which
//   fuses the residual add x ← x + W·h into the projection)
// W is [rows × cols] in ggml blocks of type WTYPE, row r at byte r · row_bytes. Each invocation
// owns ROWS consecutive rows (1 to 4, fixed when the pipeline is built), so each load of x feeds
// ROWS rows; invocations are spread over a 2D grid: i = gid.x + gid.y · (64 · num_workgroups.x).
// Rows past the end are clamped to the last row: computed, not stored.

override WTYPE: u32;
override ROWS: u32 = 1u;

struct Params {
    rows: u32,        // output elements
    cols: u32,        // input elements, a multiple of the block (32, or 256)
    row_bytes: u32,   // encoded bytes per row
    out_offset: u32,  // elements
    accumulate: u32,  // 0: y = W·x; 1: y += W·x
}

@group(0) @binding(0) var<storage, read_write> y: array<f32>;    // [out_offset + rows]
@group(0) @binding(1) var<storage, read> w: array<u32>;          // [rows · row_bytes / 4]
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;    // [cols / 4]
@group(0) @binding(3) var<uniform> p: Params;

fn store(r: u32, acc: vec4<f32>) {
    if (r >= p.rows) { return; }
    var sum = (acc.x + acc.y) + (acc.z + acc.w);
    if (p.accumulate != 0u) { sum += y[p.out_offset + r]; }
    y[p.out_offset + r] = sum;
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = (gid.x + gid.y * nwg.x * 64u) * ROWS;
    if (r >= p.rows) { return; }
    let last = p.rows - 1u;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var blk = 0u; blk < p.cols / 32u; blk++) {
        let v0 = dequant_block(r * p.row_bytes, blk);
        var v1: array<vec4<f32>, 8>;
        var v2: array<vec4<f32>, 8>;
        var v3: array<vec4<f32>, 8>;
        if (ROWS > 1u) { v1 = dequant_block(min(r + 1u, last) * p.row_bytes, blk); }
        if (ROWS > 2u) { v2 = dequant_block(min(r + 2u, last) * p.row_bytes, blk); }
        if (ROWS > 3u) { v3 = dequant_block(min(r + 3u, last) * p.row_bytes, blk); }
        for (var k = 0u; k < 8u; k++) {
            let xv = x[blk * 8u + k];
            acc0 += v0[k] * xv;
            if (ROWS > 1u) { acc1 += v1[k] * xv; }
            if (ROWS > 2u) { acc2 += v2[k] * xv; }
            if (ROWS > 3u) { acc3 += v3[k] * xv; }
        }
    }
    store(r, acc0);
    if (ROWS > 1u) { store(r + 1u, acc1); }
    if (ROWS > 2u) { store(r + 2u, acc2); }
    if (ROWS > 3u) { store(r + 3u, acc3); }
}
