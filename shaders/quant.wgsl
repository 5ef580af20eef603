// ggml block decoding, shared by every kernel that reads quantised weights.
// The including kernel declares `w: array<u32>` (the tensor's raw ggml bytes, zero-padded to a
// multiple of 4) and `override WTYPE: u32` (the ggml type id). Every format is decoded in blocks
// of 32 elements; F32 and F16 use 32-element "blocks" of 128 and 64 bytes.
//
//   Q4_0  18 B: d f16 | qs[16]        x = (q − 8)·d
//   Q4_1  20 B: d f16 | m f16 | qs[16] x = q·d + m
//   Q8_0  34 B: d f16 | qs[32] (i8)   x = q·d
// 4-bit: byte j of qs holds element j (low nibble) and element j + 16 (high nibble).

const T_F32: u32 = 0u;
const T_F16: u32 = 1u;
const T_Q4_0: u32 = 2u;
const T_Q4_1: u32 = 3u;
const T_Q8_0: u32 = 8u;

fn block_bytes() -> u32 {
    if (WTYPE == T_F32) { return 128u; }
    if (WTYPE == T_F16) { return 64u; }
    if (WTYPE == T_Q4_0) { return 18u; }
    if (WTYPE == T_Q4_1) { return 20u; }
    return 34u; // Q8_0
}

// The 4 bytes at byte address b (any alignment the formats produce: 0 or 2 mod 4).
fn w_u32(b: u32) -> u32 {
    let i = b >> 2u;
    let s = (b & 3u) * 8u;
    if (s == 0u) { return w[i]; }
    return (w[i] >> s) | (w[i + 1u] << (32u - s));
}

// The f16 at an even byte address b.
fn w_f16(b: u32) -> f32 {
    let word = w[b >> 2u];
    return unpack2x16float(select(word, word >> 16u, (b & 2u) != 0u)).x;
}

fn nibbles_lo(q: u32) -> vec4<f32> {
    return vec4<f32>(vec4<u32>(q, q >> 8u, q >> 16u, q >> 24u) & vec4<u32>(0xfu));
}

fn nibbles_hi(q: u32) -> vec4<f32> {
    return vec4<f32>(vec4<u32>(q >> 4u, q >> 12u, q >> 20u, q >> 28u) & vec4<u32>(0xfu));
}

fn bytes_i8(q: u32) -> vec4<f32> {
    let s = bitcast<vec4<i32>>(vec4<u32>(q << 24u, q << 16u, q << 8u, q));
    return vec4<f32>(s >> vec4<u32>(24u));
}

// The scales of the block at byte b, decoded once per block: (d, m) for Q4_1, (d, 0) for Q4_0
// and Q8_0; F16 and F32 have none.
fn block_scales(b: u32) -> vec2<f32> {
    if (WTYPE == T_Q4_1) { return vec2<f32>(w_f16(b), w_f16(b + 2u)); }
    if (WTYPE == T_Q4_0 || WTYPE == T_Q8_0) { return vec2<f32>(w_f16(b), 0.0); }
    return vec2<f32>(1.0, 0.0);
}

// Elements 4k .. 4k + 3 and 4k + 16 .. 4k + 19 of the block at byte b (k < 4) with its scales
// s: for the 4-bit types both come from one word of qs, the low and the high nibbles.
fn dequant_pair(b: u32, k: u32, s: vec2<f32>) -> array<vec4<f32>, 2> {
    if (WTYPE == T_Q4_1) {
        let q = w_u32(b + 4u + 4u * k);
        return array<vec4<f32>, 2>(nibbles_lo(q) * s.x + s.y, nibbles_hi(q) * s.x + s.y);
    } else if (WTYPE == T_Q4_0) {
        let q = w_u32(b + 2u + 4u * k);
        return array<vec4<f32>, 2>((nibbles_lo(q) - 8.0) * s.x, (nibbles_hi(q) - 8.0) * s.x);
    } else if (WTYPE == T_Q8_0) {
        return array<vec4<f32>, 2>(bytes_i8(w_u32(b + 2u + 4u * k)) * s.x, bytes_i8(w_u32(b + 18u + 4u * k)) * s.x);
    } else if (WTYPE == T_F16) {
        let lo = vec4<f32>(unpack2x16float(w_u32(b + 8u * k)), unpack2x16float(w_u32(b + 8u * k + 4u)));
        let hi = vec4<f32>(unpack2x16float(w_u32(b + 32u + 8u * k)), unpack2x16float(w_u32(b + 36u + 8u * k)));
        return array<vec4<f32>, 2>(lo, hi);
    }
    let i = (b >> 2u) + 4u * k;
    let lo = bitcast<vec4<f32>>(vec4<u32>(w[i], w[i + 1u], w[i + 2u], w[i + 3u]));
    let hi = bitcast<vec4<f32>>(vec4<u32>(w[i + 16u], w[i + 17u], w[i + 18u], w[i + 19u]));
    return array<vec4<f32>, 2>(lo, hi);
}

// The 32 elements of the block at byte b; element 4k + i is v[k][i]. The values of
// `dequant_pair`, written out for the 4-bit types (the mat-vec's hot path: through the pairs,
// decode measured 0.8× as fast on lavapipe).
fn dequant_block(b: u32) -> array<vec4<f32>, 8> {
    var v: array<vec4<f32>, 8>;
    let s = block_scales(b);
    if (WTYPE == T_Q4_1) {
        for (var k = 0u; k < 4u; k++) {
            let q = w_u32(b + 4u + 4u * k);
            v[k] = nibbles_lo(q) * s.x + s.y;
            v[k + 4u] = nibbles_hi(q) * s.x + s.y;
        }
    } else if (WTYPE == T_Q4_0) {
        for (var k = 0u; k < 4u; k++) {
            let q = w_u32(b + 2u + 4u * k);
            v[k] = (nibbles_lo(q) - 8.0) * s.x;
            v[k + 4u] = (nibbles_hi(q) - 8.0) * s.x;
        }
    } else {
        for (var k = 0u; k < 4u; k++) {
            let p = dequant_pair(b, k, s);
            v[k] = p[0];
            v[k + 4u] = p[1];
        }
    }
    return v;
}
