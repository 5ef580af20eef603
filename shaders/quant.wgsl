// ggml block decoding, shared by every kernel that reads quantised weights.
// The including kernel declares `w: array<u32>` (the tensor's raw ggml bytes, zero-padded to a
// multiple of 4) and `override WTYPE: u32` (the ggml type id). Kernels address a row's elements
// in blocks of 32: (row, blk) = (the row's first byte, block index within the row), and element
// 32·blk + i of the row is element i of the block. F32 and F16 are 32-element "blocks" of 128
// and 64 bytes; the K-quants keep 8 such blocks (sub-blocks) in one 256-element super-block.
// Layouts and operation order as in src/quant.rs (its module doc has the full table):
//
//   Q4_0  18 B: d f16 | qs[16]                      x = (q − 8)·d
//   Q4_1  20 B: d f16 | m f16 | qs[16]              x = q·d + m
//   Q5_0  22 B: d f16 | qh u32 | qs[16]             x = (q − 16)·d
//   Q5_1  24 B: d f16 | m f16 | qh u32 | qs[16]     x = q·d + m
//   Q8_0  34 B: d f16 | qs[32] (i8)                 x = q·d
//   Q2_K  84 B: scales[16] | qs[64] | d | dmin      x = (d·sc)·q − dmin·m, per 16 elements
//   Q3_K 110 B: hmask[32] | qs[64] | scales[12] | d x = (d·(sc − 32))·q, q in −4..3, per 16
//   Q4_K 144 B: d | dmin | scales[12] | qs[128]     x = (d·sc)·q − dmin·m, per 32
//   Q5_K 176 B: d | dmin | scales[12] | qh[32] | qs[128]   as Q4_K with a fifth bit
//   Q6_K 210 B: ql[128] | qh[64] | scales[16] (i8) | d     x = (d·sc)·(q − 32), per 16
// Q4/Q5 _0/_1: byte j of qs holds element j (low nibble) and element j + 16 (high nibble); bit i
// of qh is bit 4 of element i.

// T_F32, T_F16, T_Q4_0, …: the ggml type ids, emitted from `GgmlType` (`Spec::weights`).

fn is_k_quant() -> bool {
    return WTYPE >= T_Q2_K;
}

// Bytes of one 32-element block, or of one 256-element super-block for the K-quants.
fn block_bytes() -> u32 {
    switch (WTYPE) {
        case T_F32: { return 128u; }
        case T_F16: { return 64u; }
        case T_Q4_0: { return 18u; }
        case T_Q4_1: { return 20u; }
        case T_Q5_0: { return 22u; }
        case T_Q5_1: { return 24u; }
        case T_Q2_K: { return 84u; }
        case T_Q3_K: { return 110u; }
        case T_Q4_K: { return 144u; }
        case T_Q5_K: { return 176u; }
        case T_Q6_K: { return 210u; }
        default: { return 34u; } // Q8_0
    }
}

// Byte address of the block (the super-block for K-quants) holding block blk of the row at
// byte `row`.
fn block_at(row: u32, blk: u32) -> u32 {
    if (is_k_quant()) { return row + (blk >> 3u) * block_bytes(); }
    return row + blk * block_bytes();
}

// The 4 bytes at byte address b (any alignment the formats produce: 0 or 2 mod 4).
fn w_u32(b: u32) -> u32 {
    let i = b >> 2u;
    let s = (b & 3u) * 8u;
    return (w[i] >> s) | select(0u, w[i + 1u] << (32u - s), s != 0u);
}

// The byte at byte address b.
fn w_u8(b: u32) -> u32 {
    return (w[b >> 2u] >> ((b & 3u) * 8u)) & 0xffu;
}

// The f16 at an even byte address b. Subnormals (|x| < 2^-14: mantissa · 2^-24) are decoded
// from the bits, since a driver may flush them in unpack2x16float; most Q6_K scales of real
// models are subnormal.
fn w_f16(b: u32) -> f32 {
    let word = w[b >> 2u];
    let h = select(word, word >> 16u, (b & 2u) != 0u) & 0xffffu;
    let sub = ldexp(f32(h & 0x3ffu), -24);
    let sign = (h & 0x8000u) != 0u;
    return select(unpack2x16float(h).x, select(sub, -sub, sign), (h & 0x7c00u) == 0u);
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

// Bits sh .. sh + width of each byte of q (mask = 2^width − 1).
fn fields(q: u32, sh: u32, mask: u32) -> vec4<u32> {
    return (vec4<u32>(q, q >> 8u, q >> 16u, q >> 24u) >> vec4<u32>(sh)) & vec4<u32>(mask);
}

// Bits i .. i + 3 of q, one per lane.
fn bits4(q: u32, i: u32) -> vec4<u32> {
    return (vec4<u32>(q) >> (vec4<u32>(0u, 1u, 2u, 3u) + i)) & vec4<u32>(1u);
}

// Q4_K and Q5_K: the six-bit (scale, min) of sub-block j < 8 from the 12 scale bytes at b
// (ggml's get_scale_min_k4).
fn scale_min_k4(b: u32, j: u32) -> vec2<u32> {
    if (j < 4u) { return vec2<u32>(w_u8(b + j) & 63u, w_u8(b + j + 4u) & 63u); }
    let lo = w_u8(b + j + 4u);
    return vec2<u32>((lo & 0xfu) | ((w_u8(b + j - 4u) >> 6u) << 4u), (lo >> 4u) | ((w_u8(b + j) >> 6u) << 4u));
}

// Q3_K: six-bit scale i < 16 (of elements 16i .. 16i + 15) from the 12 scale bytes at b, − 32.
fn scale_q3_k(b: u32, i: u32) -> f32 {
    let lo = (w_u8(b + (i & 7u)) >> (4u * (i >> 3u))) & 0xfu;
    let hi = (w_u8(b + 8u + (i & 3u)) >> (2u * (i >> 2u))) & 3u;
    return f32(i32(lo | (hi << 4u)) - 32);
}

// The scales of block blk of the row at byte `row`, decoded once per block:
// (d, m) of elements 0..15 and (d, m) of elements 16..31. Q4_1, Q5_1: x = q·d + m; Q4_0, Q5_0,
// Q8_0: m = 0; K-quants: x = q·d − m, with d = d·sc and m = dmin·m of the (sub-)block, m = 0
// for Q3_K and Q6_K. F16 and F32 have none.
fn block_scales(row: u32, blk: u32) -> vec4<f32> {
    let b = block_at(row, blk);
    let j = blk & 7u;
    switch (WTYPE) {
        case T_Q4_1, T_Q5_1: {
            let s = vec2<f32>(w_f16(b), w_f16(b + 2u));
            return vec4<f32>(s, s);
        }
        case T_Q4_0, T_Q5_0, T_Q8_0: {
            let d = w_f16(b);
            return vec4<f32>(d, 0.0, d, 0.0);
        }
        case T_Q2_K: { // scale byte 2j + h = sc | m << 4 for half h
            let d = w_f16(b + 80u);
            let dmin = w_f16(b + 82u);
            let lo = w_u8(b + 2u * j);
            let hi = w_u8(b + 2u * j + 1u);
            return vec4<f32>(d * f32(lo & 0xfu), dmin * f32(lo >> 4u), d * f32(hi & 0xfu), dmin * f32(hi >> 4u));
        }
        case T_Q3_K: {
            let d = w_f16(b + 108u);
            return vec4<f32>(d * scale_q3_k(b + 96u, 2u * j), 0.0, d * scale_q3_k(b + 96u, 2u * j + 1u), 0.0);
        }
        case T_Q4_K, T_Q5_K: {
            let sm = scale_min_k4(b + 4u, j);
            let s = vec2<f32>(w_f16(b) * f32(sm.x), w_f16(b + 2u) * f32(sm.y));
            return vec4<f32>(s, s);
        }
        case T_Q6_K: { // signed scale bytes 2j, 2j + 1
            let d = w_f16(b + 208u);
            let lo = f32(bitcast<i32>(w_u8(b + 192u + 2u * j) << 24u) >> 24u);
            let hi = f32(bitcast<i32>(w_u8(b + 193u + 2u * j) << 24u) >> 24u);
            return vec4<f32>(d * lo, 0.0, d * hi, 0.0);
        }
        default: { return vec4<f32>(1.0, 0.0, 1.0, 0.0); }
    }
}

// Elements 4k .. 4k + 3 and 4k + 16 .. 4k + 19 of block blk of the row at byte `row` (k < 4),
// with its scales s: for the 4-bit types both come from one word of qs, the low and the high
// nibbles.
fn dequant_pair(row: u32, blk: u32, k: u32, s: vec4<f32>) -> array<vec4<f32>, 2> {
    let b = block_at(row, blk);
    let j = blk & 7u;
    switch (WTYPE) {
        case T_Q4_1: { // 20-byte blocks, rows of whole blocks: qs is 4-aligned, one load
            let q = w[(b >> 2u) + 1u + k];
            return array<vec4<f32>, 2>(nibbles_lo(q) * s.x + s.y, nibbles_hi(q) * s.x + s.y);
        }
        case T_Q4_0: {
            let q = w_u32(b + 2u + 4u * k);
            return array<vec4<f32>, 2>((nibbles_lo(q) - 8.0) * s.x, (nibbles_hi(q) - 8.0) * s.x);
        }
        case T_Q5_0, T_Q5_1: { // qh after the scales, then qs
            let at = select(2u, 4u, WTYPE == T_Q5_1);
            let qh = w_u32(b + at);
            let q = w_u32(b + at + 4u + 4u * k);
            let lo = nibbles_lo(q) + 16.0 * vec4<f32>(bits4(qh, 4u * k));
            let hi = nibbles_hi(q) + 16.0 * vec4<f32>(bits4(qh, 4u * k + 16u));
            if (WTYPE == T_Q5_0) { return array<vec4<f32>, 2>((lo - 16.0) * s.x, (hi - 16.0) * s.z); }
            return array<vec4<f32>, 2>(lo * s.x + s.y, hi * s.z + s.w);
        }
        case T_Q8_0: {
            return array<vec4<f32>, 2>(bytes_i8(w_u32(b + 2u + 4u * k)) * s.x, bytes_i8(w_u32(b + 18u + 4u * k)) * s.x);
        }
        case T_Q2_K: { // bits 2(j % 4) of qs[32(j / 4) + l]
            let at = b + 16u + 32u * (j >> 2u) + 4u * k;
            let sh = 2u * (j & 3u);
            let lo = vec4<f32>(fields(w_u32(at), sh, 3u));
            let hi = vec4<f32>(fields(w_u32(at + 16u), sh, 3u));
            return array<vec4<f32>, 2>(lo * s.x - s.y, hi * s.z - s.w);
        }
        case T_Q3_K: { // bits 2(j % 4) of qs[32(j / 4) + l], minus 4 where bit j of hmask[l] is clear
            let at = b + 32u + 32u * (j >> 2u) + 4u * k;
            let sh = 2u * (j & 3u);
            let lo = vec4<i32>(fields(w_u32(at), sh, 3u)) - 4 * vec4<i32>(1u - fields(w_u32(b + 4u * k), j, 1u));
            let hi = vec4<i32>(fields(w_u32(at + 16u), sh, 3u)) - 4 * vec4<i32>(1u - fields(w_u32(b + 16u + 4u * k), j, 1u));
            return array<vec4<f32>, 2>(s.x * vec4<f32>(lo), s.z * vec4<f32>(hi));
        }
        case T_Q4_K, T_Q5_K: { // nibble j % 2 of qs[32(j / 2) + l] (+ 16 · bit j of qh[l])
            let five = WTYPE == T_Q5_K;
            let at = b + select(16u, 48u, five) + 32u * (j >> 1u) + 4u * k;
            let sh = 4u * (j & 1u);
            var lo = fields(w_u32(at), sh, 0xfu);
            var hi = fields(w_u32(at + 16u), sh, 0xfu);
            if (five) {
                lo |= fields(w_u32(b + 16u + 4u * k), j, 1u) << vec4<u32>(4u);
                hi |= fields(w_u32(b + 32u + 4u * k), j, 1u) << vec4<u32>(4u);
            }
            return array<vec4<f32>, 2>(s.x * vec4<f32>(lo) - s.y, s.z * vec4<f32>(hi) - s.w);
        }
        case T_Q6_K: { // nibble (j % 4) / 2 of ql[64(j / 4) + 32(j % 2) + l], bits 2(j % 4) of qh[32(j / 4) + l]
            let c = j & 3u;
            let at = b + 64u * (j >> 2u) + 32u * (c & 1u) + 4u * k;
            let ah = b + 128u + 32u * (j >> 2u) + 4u * k;
            let lo = fields(w_u32(at), 4u * (c >> 1u), 0xfu) | (fields(w_u32(ah), 2u * c, 3u) << vec4<u32>(4u));
            let hi = fields(w_u32(at + 16u), 4u * (c >> 1u), 0xfu) | (fields(w_u32(ah + 16u), 2u * c, 3u) << vec4<u32>(4u));
            return array<vec4<f32>, 2>(s.x * vec4<f32>(vec4<i32>(lo) - 32), s.z * vec4<f32>(vec4<i32>(hi) - 32));
        }
        case T_F16: {
            let lo = vec4<f32>(unpack2x16float(w_u32(b + 8u * k)), unpack2x16float(w_u32(b + 8u * k + 4u)));
            let hi = vec4<f32>(unpack2x16float(w_u32(b + 32u + 8u * k)), unpack2x16float(w_u32(b + 36u + 8u * k)));
            return array<vec4<f32>, 2>(lo, hi);
        }
        default: { // F32
            let i = (b >> 2u) + 4u * k;
            let lo = bitcast<vec4<f32>>(vec4<u32>(w[i], w[i + 1u], w[i + 2u], w[i + 3u]));
            let hi = bitcast<vec4<f32>>(vec4<u32>(w[i + 16u], w[i + 17u], w[i + 18u], w[i + 19u]));
            return array<vec4<f32>, 2>(lo, hi);
        }
    }
}

// The 32 elements of block blk of the row at byte `row`; element 4k + i is v[k][i].
fn dequant_block(row: u32, blk: u32) -> array<vec4<f32>, 8> {
    var v: array<vec4<f32>, 8>;
    let s = block_scales(row, blk);
    for (var k = 0u; k < 4u; k++) {
        let p = dequant_pair(row, blk, k, s);
        v[k] = p[0];
        v[k + 4u] = p[1];
    }
    return v;
}
