// Quantised matrix-vector product, one row per invocation:
//   y[out_offset + r] = Σ_c W[r, c] · x[c]  (+ y[out_offset + r] when accumulate = 1, which
//   fuses the residual add x ← x + W·h into the projection)
// W is [rows × cols] in ggml blocks of type WTYPE, row r at byte r · row_bytes.
// Rows are spread over a 2D grid: r = gid.x + gid.y · (64 · num_workgroups.x).

override WTYPE: u32;

struct Params {
    rows: u32,        // output elements
    cols: u32,        // input elements, a multiple of 32
    row_bytes: u32,   // encoded bytes per row
    out_offset: u32,  // elements
    accumulate: u32,  // 0: y = W·x; 1: y += W·x
}

@group(0) @binding(0) var<storage, read_write> y: array<f32>;    // [out_offset + rows]
@group(0) @binding(1) var<storage, read> w: array<u32>;          // [rows · row_bytes / 4]
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;    // [cols / 4]
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = gid.x + gid.y * nwg.x * 64u;
    if (r >= p.rows) { return; }
    let bb = block_bytes();
    var acc = vec4<f32>(0.0);
    for (var blk = 0u; blk < p.cols / 32u; blk++) {
        let v = dequant_block(r * p.row_bytes + blk * bb);
        for (var k = 0u; k < 8u; k++) {
            acc += v[k] * x[blk * 8u + k];
        }
    }
    var sum = (acc.x + acc.y) + (acc.z + acc.w);
    if (p.accumulate != 0u) { sum += y[p.out_offset + r]; }
    y[p.out_offset + r] = sum;
}
