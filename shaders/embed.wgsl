// Token embedding: x = E[token], E is [V × d] in ggml blocks of type WTYPE, token = tokens[pos].
// One invocation decodes one 32-element block of the row.

override WTYPE: u32;

struct Params {
    dim: u32,        // d, a multiple of 32
    row_bytes: u32,  // encoded bytes per row of E
}

struct Step {
    pos: u32,        // position of the token being processed
}

@group(0) @binding(0) var<storage, read_write> x: array<vec4<f32>>;  // [d / 4]
@group(0) @binding(1) var<storage, read> w: array<u32>;              // E, [V · row_bytes / 4]
@group(0) @binding(2) var<storage, read> tokens: array<u32>;         // [T] token id per position
@group(0) @binding(3) var<uniform> p: Params;
@group(0) @binding(4) var<uniform> step: Step;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let blk = gid.x;
    if (blk >= p.dim / 32u) { return; }
    let v = dequant_block(tokens[step.pos] * p.row_bytes + blk * block_bytes());
    for (var k = 0u; k < 8u; k++) {
        x[blk * 8u + k] = v[k];
    }
}
