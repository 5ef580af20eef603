// The cache append of a block cache (ggml's Q8_0 or Q4_0, as llama.cpp's `--cache-type-k/v`):
// after rope_kv.wgsl has turned k in place, token t's k and v (from its qkv row) are coded into
// cache row r = (pos + t) mod R. Each block of 32 values x keeps one f16 scale d and 32 codes:
//   Q8_0: d = max|x| / 127,              q = round(x / d) (halves away from 0)   x ≈ d · q
//   Q4_0: d = m / −8 (m: the x of largest magnitude, the first on a tie),
//         q = min(15, ⌊x / d + 8.5⌋)                                             x ≈ d · (q − 8)
// as ggml's reference quantisers (and `core::quant::quantize`) code them, 1/d first and then
// x · (1/d). The layout per K (or V) buffer, [R × h_kv·d_h] values:
//   codes  [R × h_kv·d_h / 4 words]: Q8_0 four signed bytes a word, in order; Q4_0 a block's 16
//          bytes as four words, byte i holding value i (low nibble) and value i + 16 (high);
//   scales [R × h_kv·d_h / 64 words] from word `scales`: two blocks' f16 d a word.
// An invocation codes two blocks (64 values: one scale word) of k or of v of one token.

struct Params {
    q4: u32,      // vec4s of q in a qkv row: h·d_h / 4
    kv4: u32,     // vec4s of k (and of v) in a qkv row and in a cache row: h_kv·d_h / 4
    rows: u32,    // R: cache rows; position p is row p mod R
    scales: u32,  // the word where the scales start: R · kv4 (Q8_0), R · kv4 / 2 (Q4_0)
}

@group(0) @binding(0) var<storage, read_write> k_cache: array<u32>;  // codes, then scales
@group(0) @binding(1) var<storage, read_write> v_cache: array<u32>;
@group(0) @binding(2) var<storage, read> qkv: array<vec4<f32>>;        // [B × (q4 + 2·kv4)]
@group(0) @binding(3) var<uniform> p: Params;
@group(0) @binding(4) var<uniform> step: Step;

// Rust's f32::round: to nearest, halves away from zero (WGSL's round takes halves to even).
fn round_away(x: vec4<f32>) -> vec4<f32> {
    let t = trunc(x);
    return select(round(x), t + sign(x), abs(x - t) == vec4<f32>(0.5));
}

// Block b (0 or 1) of the 64 values from qkv[src]: its scale d, and its 8 code words written
// to `codes` (Q8_0: word j = vec4 j's bytes; Q4_0: words 0..3, word j = vec4 j's nibbles with
// vec4 j + 4's above them).
fn code_block(src: u32, codes: ptr<function, array<u32, 8>>) -> f32 {
    var x: array<vec4<f32>, 8>;
    for (var j = 0u; j < 8u; j++) { x[j] = qkv[src + j]; }
//#if kv_q8_0
    var amax = 0.0;
    for (var j = 0u; j < 8u; j++) { let a = abs(x[j]); amax = max(amax, max(max(a.x, a.y), max(a.z, a.w))); }
    let d = amax / 127.0;
    let id = select(0.0, 1.0 / d, d != 0.0);
    for (var j = 0u; j < 8u; j++) {
        let q = vec4<u32>(vec4<i32>(round_away(x[j] * id))) & vec4<u32>(255u);
        (*codes)[j] = q.x | (q.y << 8u) | (q.z << 16u) | (q.w << 24u);
    }
    return d;
//#else
    var m = 0.0;
    for (var j = 0u; j < 8u; j++) {
        for (var c = 0u; c < 4u; c++) { if (abs(x[j][c]) > abs(m)) { m = x[j][c]; } }
    }
    let d = m / -8.0;
    let id = select(0.0, 1.0 / d, d != 0.0);
    for (var j = 0u; j < 4u; j++) {
        let lo = min(vec4<u32>(15u), vec4<u32>(x[j] * id + 8.5));
        let hi = min(vec4<u32>(15u), vec4<u32>(x[j + 4u] * id + 8.5));
        let b = lo | (hi << vec4<u32>(4u));
        (*codes)[j] = b.x | (b.y << 8u) | (b.z << 16u) | (b.w << 24u);
    }
    return d;
//#endif
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let pairs = p.kv4 / 16u;  // 64-value units of a k (or v) row
    let u = gid.x;
    let t = gid.z;
    if (u >= 2u * pairs || t >= step.n || step.flaw == FLAW_NO_APPEND) { return; }
    let is_v = u >= pairs;
    let c = u % pairs;
    let src = t * (p.q4 + 2u * p.kv4) + p.q4 + select(0u, p.kv4, is_v) + 16u * c;
    let row = (step.pos + t) % p.rows;
//#if kv_q8_0
    let words = 8u;  // code words a block
//#else
    let words = 4u;
//#endif
    let at = (row * pairs + c) * 2u * words;
    var d: vec2<f32>;
    for (var b = 0u; b < 2u; b++) {
        var codes: array<u32, 8>;
        d[b] = code_block(src + 8u * b, &codes);
        for (var j = 0u; j < words; j++) {
            if (is_v) { v_cache[at + b * words + j] = codes[j]; } else { k_cache[at + b * words + j] = codes[j]; }
        }
    }
    let s = p.scales + row * pairs + c;
    if (is_v) { v_cache[s] = pack2x16float(d); } else { k_cache[s] = pack2x16float(d); }
}
