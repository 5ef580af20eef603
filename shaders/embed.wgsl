// Token embedding for the n tokens of a chunk: X[t] = E[tokens[pos + t]] · scale, E is [V × d] in
// ggml blocks of type WTYPE (scale: √d for Gemma, else 1). One invocation decodes one 32-element
// block; workgroup z is the token. A table too large for one binding comes in parts of whole rows,
// one dispatch each: a part writes only the tokens whose rows it holds.

override WTYPE: u32;

struct Params {
    dim: u32,        // d, a multiple of the block (32, or 256 for the K-quants)
    row_bytes: u32,  // encoded bytes per row of E
    scale: f32,
    first_row: u32,  // the part's first row of E
    rows: u32,       // rows in this part
}

@group(0) @binding(0) var<storage, read_write> x: array<vec4<f32>>;  // [B × d / 4]
@group(0) @binding(1) var<storage, read> w: array<u32>;              // E's rows of this part, [rows · row_bytes / 4]
@group(0) @binding(2) var<storage, read> tokens: array<u32>;         // [T] token id per position
@group(0) @binding(3) var<uniform> p: Params;
@group(0) @binding(4) var<uniform> step: Step;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let blk = gid.x;
    let t = gid.z;
    if (blk >= p.dim / 32u || t >= step.n) { return; }
    let id = tokens[step.pos + t];
    if (id < p.first_row || id - p.first_row >= p.rows) { return; }
    let v = dequant_block((id - p.first_row) * p.row_bytes, blk);
    let o = t * p.dim / 4u + blk * 8u;
    for (var k = 0u; k < 8u; k++) {
        x[o + k] = v[k] * p.scale;
    }
}
