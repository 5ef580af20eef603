//! ggml block formats: sizes, CPU dequantisation bit for bit as ggml-quants.c's
//! `dequantize_row_*`, and simple quantisers for building test models.
//!
//! | type | elems/block | bytes/block | layout                                                   | value                     |
//! |------|-------------|-------------|----------------------------------------------------------|---------------------------|
//! | F32  | 1           | 4           | f32                                                      | x                         |
//! | F16  | 1           | 2           | f16                                                      | x                         |
//! | Q4_0 | 32          | 18          | d: f16, qs: [u8; 16]                                     | (q − 8) · d               |
//! | Q4_1 | 32          | 20          | d: f16, m: f16, qs: [u8; 16]                             | q · d + m                 |
//! | Q5_0 | 32          | 22          | d: f16, qh: u32, qs: [u8; 16]                            | (q − 16) · d              |
//! | Q5_1 | 32          | 24          | d: f16, m: f16, qh: u32, qs: [u8; 16]                    | q · d + m                 |
//! | Q8_0 | 32          | 34          | d: f16, qs: [i8; 32]                                     | q · d                     |
//! | Q2_K | 256         | 84          | scales: [u8; 16], qs: [u8; 64], d: f16, dmin: f16        | (d·sc)·q − dmin·m         |
//! | Q3_K | 256         | 110         | hmask: [u8; 32], qs: [u8; 64], scales: [u8; 12], d: f16  | (d·(sc − 32))·(q − 4)     |
//! | Q4_K | 256         | 144         | d: f16, dmin: f16, scales: [u8; 12], qs: [u8; 128]       | (d·sc)·q − dmin·m         |
//! | Q5_K | 256         | 176         | d: f16, dmin: f16, scales: [u8; 12], qh: [u8; 32], qs: [u8; 128] | (d·sc)·q − dmin·m |
//! | Q6_K | 256         | 210         | ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16    | (d·sc)·(q − 32)           |
//!
//! Q4_0, Q4_1, Q5_0, Q5_1: byte `j` of `qs` holds element `j` in its low nibble and element
//! `j + 16` in its high nibble; in Q5 bit `i` of `qh` is bit 4 of element `i`.
//!
//! The K-quants are super-blocks of 256 elements, read here as 8 sub-blocks of 32: sub-block
//! `s` holds elements 32s .. 32s + 31, and element `l` of it (`l < 32`) lives at
//! - Q2_K: bits 2(s % 4) of `qs[32(s / 4) + l]`; scale byte `scales[2s + l / 16]` = sc | m << 4;
//! - Q3_K: bits 2(s % 4) of `qs[32(s / 4) + l]`, bit `s` of `hmask[l]` (set: q + 4 ≥ 4, i.e. no
//!   −4); 16 six-bit scales, scale `i = 2s + l / 16` = low 4 bits from nibble `i / 8` of
//!   `scales[i % 8]`, high 2 bits from bits 2(i / 4) of `scales[8 + i % 4]`;
//! - Q4_K: nibble `s % 2` of `qs[32(s / 2) + l]`; six-bit (sc, m) of sub-block `s`, packed in
//!   `scales` as ggml's `get_scale_min_k4`;
//! - Q5_K: as Q4_K, plus bit `s` of `qh[l]` as bit 4;
//! - Q6_K: nibble `(s % 4) / 2` of `ql[64(s / 4) + 32(s % 2) + l]`, bits 2(s % 4) of
//!   `qh[32(s / 4) + l]` as bits 4–5; scale `scales[2s + l / 16]`.
//!
//! The value column gives ggml's float operation order: products in brackets are rounded first.

use half::f16;

/// A ggml tensor type, named as in ggml.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
}

/// Elements of a 32-element block (and of a K-quant sub-block).
pub const QK: usize = 32;
/// Elements of a K-quant super-block.
pub const QK_K: usize = 256;

/// Every supported type: (type, ggml id, name, elements per block, bytes per block).
const FORMATS: [(GgmlType, u32, &str, usize, usize); 12] = [
    (GgmlType::F32, 0, "F32", 1, 4),
    (GgmlType::F16, 1, "F16", 1, 2),
    (GgmlType::Q4_0, 2, "Q4_0", QK, 18),
    (GgmlType::Q4_1, 3, "Q4_1", QK, 20),
    (GgmlType::Q5_0, 6, "Q5_0", QK, 22),
    (GgmlType::Q5_1, 7, "Q5_1", QK, 24),
    (GgmlType::Q8_0, 8, "Q8_0", QK, 34),
    (GgmlType::Q2_K, 10, "Q2_K", QK_K, 84),
    (GgmlType::Q3_K, 11, "Q3_K", QK_K, 110),
    (GgmlType::Q4_K, 12, "Q4_K", QK_K, 144),
    (GgmlType::Q5_K, 13, "Q5_K", QK_K, 176),
    (GgmlType::Q6_K, 14, "Q6_K", QK_K, 210),
];

impl GgmlType {
    /// Every supported type, in ggml id order.
    pub const ALL: [GgmlType; 12] = {
        let mut all = [GgmlType::F32; 12];
        let mut i = 0;
        while i < 12 {
            all[i] = FORMATS[i].0;
            i += 1;
        }
        all
    };

    fn format(self) -> (GgmlType, u32, &'static str, usize, usize) {
        FORMATS[self as usize]
    }

    pub fn from_u32(t: u32) -> Option<Self> {
        FORMATS.iter().find(|f| f.1 == t).map(|f| f.0)
    }

    pub fn id(self) -> u32 {
        self.format().1
    }

    pub fn name(self) -> &'static str {
        self.format().2
    }

    pub fn block_elems(self) -> usize {
        self.format().3
    }

    pub fn block_bytes(self) -> usize {
        self.format().4
    }

    /// Encoded bytes of `n` elements (`n` a multiple of the block size).
    pub fn bytes_for(self, n: usize) -> usize {
        n / self.block_elems() * self.block_bytes()
    }
}

/// The supported type names, comma-separated, for error messages.
pub fn supported_names() -> String {
    FORMATS.iter().map(|f| f.2).collect::<Vec<_>>().join(", ")
}

/// The ggml name of any type id, supported or not (for error messages).
pub fn ggml_type_name(t: u32) -> String {
    const NAMES: [&str; 40] = [
        "F32",
        "F16",
        "Q4_0",
        "Q4_1",
        "Q4_2",
        "Q4_3",
        "Q5_0",
        "Q5_1",
        "Q8_0",
        "Q8_1",
        "Q2_K",
        "Q3_K",
        "Q4_K",
        "Q5_K",
        "Q6_K",
        "Q8_K",
        "IQ2_XXS",
        "IQ2_XS",
        "IQ3_XXS",
        "IQ1_S",
        "IQ4_NL",
        "IQ3_S",
        "IQ2_S",
        "IQ4_XS",
        "I8",
        "I16",
        "I32",
        "I64",
        "F64",
        "IQ1_M",
        "BF16",
        "Q4_0_4_4",
        "Q4_0_4_8",
        "Q4_0_8_8",
        "TQ1_0",
        "TQ2_0",
        "IQ4_NL_4_4",
        "IQ4_NL_4_8",
        "IQ4_NL_8_8",
        "MXFP4",
    ];
    match NAMES.get(t as usize) {
        Some(n) => n.to_string(),
        None => format!("unknown type {t}"),
    }
}

/// The f16 stored at b[i..i + 2], through a table of all 65,536 values (256 KiB, built on first
/// use): one load instead of a software conversion where the CPU has none (WebAssembly).
#[inline(always)]
pub fn f16_at(b: &[u8], i: usize) -> f32 {
    static TABLE: std::sync::OnceLock<Box<[f32]>> = std::sync::OnceLock::new();
    let t = TABLE.get_or_init(|| (0..=u16::MAX).map(|h| f16::from_bits(h).to_f32()).collect());
    t[u16::from_le_bytes([b[i], b[i + 1]]) as usize]
}

/// Q4_K and Q5_K: the six-bit (scale, min) of sub-block `j < 8` from the 12 packed bytes `q`
/// (ggml's `get_scale_min_k4`).
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// Q3_K: the six-bit scale `i < 16` (of elements 16i .. 16i + 15) from the 12 packed bytes `q`,
/// minus 32.
fn scale_q3_k(i: usize, q: &[u8]) -> i32 {
    let lo = (q[i % 8] >> (4 * (i / 8))) & 0xf;
    let hi = (q[8 + i % 4] >> (2 * (i / 4))) & 3;
    (lo | (hi << 4)) as i32 - 32
}

/// Elements that share one (scale, offset) in `unpack`'s output.
pub const GROUP: usize = 16;

impl GgmlType {
    /// A block type (not F32 / F16).
    pub fn is_quantised(self) -> bool {
        self.block_elems() > 1
    }

    /// Whether the value has an offset (q · d + m) besides its scale.
    pub fn has_offset(self) -> bool {
        matches!(self, GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q2_K | GgmlType::Q4_K | GgmlType::Q5_K)
    }
}

/// One block of a quantised type as integers and scales: element i is dm[i / 16].0 · q[i] +
/// dm[i / 16].1, in ggml's order of float operations (the offset is 0 where `!has_offset`).
/// q: [block_elems], dm: [block_elems / 16]. Not for F32 / F16.
#[inline(always)]
pub fn unpack(ty: GgmlType, b: &[u8], q: &mut [i8], dm: &mut [(f32, f32)]) {
    match ty {
        GgmlType::F32 | GgmlType::F16 => unreachable!("unpack: {} is not a block type", ty.name()),
        // The 32-element types go through fixed-size arrays, so that the loops have no bounds
        // checks and compile to SIMD.
        GgmlType::Q4_0 | GgmlType::Q4_1 => unpack_q4(ty, b, q, dm),
        GgmlType::Q5_0 | GgmlType::Q5_1 => unpack_q5(ty, b, q, dm),
        GgmlType::Q8_0 => unpack_q8_0(b, q, dm),
        GgmlType::Q2_K => unpack_q2_k(b, q, dm),
        GgmlType::Q3_K => unpack_q3_k(b, q, dm),
        GgmlType::Q4_K | GgmlType::Q5_K => unpack_q45_k(ty, b, q, dm),
        GgmlType::Q6_K => unpack_q6_k(b, q, dm),
    }
}

/// Q4_0 and Q4_1: 16 bytes of nibbles, elements j and j + 16 in byte j.
#[inline(always)]
fn unpack_q4(ty: GgmlType, b: &[u8], q: &mut [i8], dm: &mut [(f32, f32)]) {
    let at = if ty == GgmlType::Q4_0 { 2 } else { 4 };
    let qs: &[u8; 16] = b[at..at + 16].try_into().expect("16 bytes");
    let off = if ty == GgmlType::Q4_0 { 8 } else { 0 };
    let (lo, hi) = q.split_at_mut(16);
    let (lo, hi): (&mut [i8; 16], &mut [i8; 16]) = (lo.try_into().expect("16"), (&mut hi[..16]).try_into().expect("16"));
    for j in 0..16 {
        lo[j] = (qs[j] & 0x0f) as i8 - off;
        hi[j] = (qs[j] >> 4) as i8 - off;
    }
    let m = if ty == GgmlType::Q4_0 { 0.0 } else { f16_at(b, 2) };
    dm.fill((f16_at(b, 0), m));
}

/// Q5_0 and Q5_1: as Q4 with a fifth bit from qh.
#[inline(always)]
fn unpack_q5(ty: GgmlType, b: &[u8], q: &mut [i8], dm: &mut [(f32, f32)]) {
    let (dm0, at) = match ty {
        GgmlType::Q5_0 => ((f16_at(b, 0), 0.0), 2),
        _ => ((f16_at(b, 0), f16_at(b, 2)), 4),
    };
    let qh = u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let qs: &[u8; 16] = b[at + 4..at + 20].try_into().expect("16 bytes");
    let off = if ty == GgmlType::Q5_0 { 16 } else { 0 };
    let (lo, hi) = q.split_at_mut(16);
    let (lo, hi): (&mut [i8; 16], &mut [i8; 16]) = (lo.try_into().expect("16"), (&mut hi[..16]).try_into().expect("16"));
    for j in 0..16 {
        let h0 = (((qh >> j) << 4) & 0x10) as u8;
        let h1 = ((qh >> (j + 12)) & 0x10) as u8;
        lo[j] = (qs[j] & 0x0f | h0) as i8 - off;
        hi[j] = (qs[j] >> 4 | h1) as i8 - off;
    }
    dm.fill(dm0);
}

/// Q8_0: 32 signed bytes.
#[inline(always)]
fn unpack_q8_0(b: &[u8], q: &mut [i8], dm: &mut [(f32, f32)]) {
    let qs: &[u8; 32] = b[2..34].try_into().expect("32 bytes");
    let q: &mut [i8; 32] = (&mut q[..32]).try_into().expect("32");
    for j in 0..QK {
        q[j] = qs[j] as i8;
    }
    dm.fill((f16_at(b, 0), 0.0));
}

/// Q2_K: 2-bit codes, a 4-bit scale and min per 16 elements.
#[inline(always)]
fn unpack_q2_k(b: &[u8], q: &mut [i8], dm: &mut [(f32, f32)]) {
    let (scales, qs) = (&b[..16], &b[16..80]);
    let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
    for (s, q) in q.chunks_exact_mut(QK).enumerate() {
        let (src, shift) = (&qs[32 * (s / 4)..][..32], 2 * (s % 4));
        for (l, q) in q.iter_mut().enumerate() {
            *q = ((src[l] >> shift) & 3) as i8;
        }
    }
    for (i, dm) in dm.iter_mut().enumerate() {
        let sc = scales[i];
        *dm = (d * (sc & 0xf) as f32, -(dmin * (sc >> 4) as f32));
    }
}

/// Q3_K: 2-bit codes and a high bit from hmask, 6-bit scales per 16.
#[inline(always)]
fn unpack_q3_k(b: &[u8], q: &mut [i8], dm: &mut [(f32, f32)]) {
    let (hmask, qs, scales) = (&b[..32], &b[32..96], &b[96..108]);
    let d = f16_at(b, 108);
    for (s, q) in q.chunks_exact_mut(QK).enumerate() {
        let (src, shift) = (&qs[32 * (s / 4)..][..32], 2 * (s % 4));
        for (l, q) in q.iter_mut().enumerate() {
            let high = if hmask[l] & (1 << s) != 0 { 0 } else { 4 };
            *q = (((src[l] >> shift) & 3) as i32 - high) as i8;
        }
    }
    for (i, dm) in dm.iter_mut().enumerate() {
        *dm = (d * scale_q3_k(i, scales) as f32, 0.0);
    }
}

/// Q4_K and Q5_K: nibbles (and a fifth bit), 6-bit scale and min per 32.
#[inline(always)]
fn unpack_q45_k(ty: GgmlType, b: &[u8], q: &mut [i8], dm: &mut [(f32, f32)]) {
    let (d, dmin, scales) = (f16_at(b, 0), f16_at(b, 2), &b[4..16]);
    // Q5_K: qh[32] before qs[128]; bit s of qh[l] is bit 4 of element l of sub-block s.
    let (qh, qs) = if ty == GgmlType::Q5_K { (Some(&b[16..48]), &b[48..]) } else { (None, &b[16..]) };
    for (s, q) in q.chunks_exact_mut(QK).enumerate() {
        let (src, shift) = (&qs[32 * (s / 2)..][..32], 4 * (s % 2));
        for (l, q) in q.iter_mut().enumerate() {
            let high = qh.map_or(0, |h| ((h[l] >> s) & 1) << 4);
            *q = (((src[l] >> shift) & 0xf) | high) as i8;
        }
        let (sc, m) = scale_min_k4(s, scales);
        let pair = (d * sc as f32, -(dmin * m as f32));
        dm[2 * s] = pair;
        dm[2 * s + 1] = pair;
    }
}

/// Q6_K: 4 low bits from ql, 2 high from qh, an i8 scale per 16.
#[inline(always)]
fn unpack_q6_k(b: &[u8], q: &mut [i8], dm: &mut [(f32, f32)]) {
    let (ql, qh, scales) = (&b[..128], &b[128..192], &b[192..208]);
    let d = f16_at(b, 208);
    for (s, q) in q.chunks_exact_mut(QK).enumerate() {
        let (n, c) = (s / 4, s % 4);
        let lo = &ql[64 * n + 32 * (c % 2)..][..32];
        let hi = &qh[32 * n..][..32];
        for (l, q) in q.iter_mut().enumerate() {
            *q = (((lo[l] >> (4 * (c / 2))) & 0xf) | (((hi[l] >> (2 * c)) & 3) << 4)) as i8 - 32;
        }
    }
    for (i, dm) in dm.iter_mut().enumerate() {
        *dm = (d * scales[i] as i8 as f32, 0.0);
    }
}

/// Decodes `src` (whole blocks of `ty`) into `out` (one f32 per element).
pub fn dequantize(ty: GgmlType, src: &[u8], out: &mut [f32]) {
    assert_eq!(src.len(), ty.bytes_for(out.len()), "dequantize: {} bytes do not hold {} {} elements", src.len(), out.len(), ty.name());
    let blocks = out.chunks_exact_mut(ty.block_elems()).zip(src.chunks_exact(ty.block_bytes()));
    match ty {
        GgmlType::F32 => {
            for (o, c) in blocks {
                o[0] = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        GgmlType::F16 => {
            for (o, c) in blocks {
                o[0] = f16_at(c, 0);
            }
        }
        _ => {
            let (mut q, mut dm) = ([0i8; QK_K], [(0.0f32, 0.0f32); QK_K / GROUP]);
            let (q, dm) = (&mut q[..ty.block_elems()], &mut dm[..ty.block_elems() / GROUP]);
            for (y, b) in blocks {
                unpack(ty, b, q, dm);
                for ((y, q), &(d, m)) in y.chunks_exact_mut(GROUP).zip(q.chunks_exact(GROUP)).zip(dm.iter()) {
                    for (y, &q) in y.iter_mut().zip(q) {
                        // Without an offset, no `+ 0.0` (which would turn −0 into +0).
                        *y = if ty.has_offset() { d * q as f32 + m } else { d * q as f32 };
                    }
                }
            }
        }
    }
}

pub fn dequantize_vec(ty: GgmlType, src: &[u8], n: usize) -> Vec<f32> {
    let mut out = vec![0.0; n];
    dequantize(ty, src, &mut out);
    out
}

/// round(x / step) clamped to lo ..= hi; 0 where the step is 0.
fn nearest(x: f32, step: f32, lo: i32, hi: i32) -> i32 {
    if step == 0.0 {
        return 0;
    }
    ((x / step).round() as i32).clamp(lo, hi)
}

/// The f16 of `v` and its value.
fn half(v: f32) -> (f16, f32) {
    let h = f16::from_f32(v);
    (h, h.to_f32())
}

/// Min-and-scale codes of `groups` groups of `x` (each `x.len() / groups` elements, codes
/// 0 ..= `levels`), with the group scales and mins themselves coded 0 ..= `scale_max` against
/// one f16 `d` and one f16 `dmin`: x ≈ (d·sc)·q − dmin·m. Returns (d, dmin, sc, m, q).
#[allow(clippy::type_complexity)]
fn quantize_min_scale(x: &[f32], groups: usize, levels: i32, scale_max: i32) -> (f16, f16, Vec<u8>, Vec<u8>, Vec<u8>) {
    let len = x.len() / groups;
    // Per group: the lowest value (at most 0, so the min is subtracted) and the step.
    let (mins, steps): (Vec<f32>, Vec<f32>) = x
        .chunks_exact(len)
        .map(|g| {
            let lo = g.iter().copied().fold(0.0f32, f32::min);
            let hi = g.iter().copied().fold(lo, f32::max);
            (-lo, (hi - lo) / levels as f32)
        })
        .unzip();
    let (d16, d) = half(steps.iter().copied().fold(0.0, f32::max) / scale_max as f32);
    let (dmin16, dmin) = half(mins.iter().copied().fold(0.0, f32::max) / scale_max as f32);
    let sc: Vec<u8> = steps.iter().map(|&s| nearest(s, d, 0, scale_max) as u8).collect();
    let m: Vec<u8> = mins.iter().map(|&v| nearest(v, dmin, 0, scale_max) as u8).collect();
    let mut q = Vec::with_capacity(x.len());
    for (i, g) in x.chunks_exact(len).enumerate() {
        let (dl, ml) = (d * sc[i] as f32, dmin * m[i] as f32);
        q.extend(g.iter().map(|&v| nearest(v + ml, dl, 0, levels) as u8));
    }
    (d16, dmin16, sc, m, q)
}

/// Symmetric codes of `groups` groups of `x` (codes lo ..= hi, lo = −hi − 1), with the group
/// scales coded −smax − 1 ..= smax against one f16 `d`: x ≈ (d·sc)·q. Returns (d, sc, q).
fn quantize_symmetric(x: &[f32], groups: usize, hi: i32, smax: i32) -> (f16, Vec<i32>, Vec<i32>) {
    let len = x.len() / groups;
    let steps: Vec<f32> = x.chunks_exact(len).map(|g| g.iter().fold(0.0f32, |m, v| m.max(v.abs())) / hi as f32).collect();
    let (d16, d) = half(steps.iter().copied().fold(0.0, f32::max) / smax as f32);
    let sc: Vec<i32> = steps.iter().map(|&s| nearest(s, d, 0, smax)).collect();
    let mut q = Vec::with_capacity(x.len());
    for (i, g) in x.chunks_exact(len).enumerate() {
        q.extend(g.iter().map(|&v| nearest(v, d * sc[i] as f32, -hi - 1, hi)));
    }
    (d16, sc, q)
}

/// Q4_K and Q5_K: the 12 bytes holding eight six-bit (scale, min) pairs, as `scale_min_k4`
/// reads them.
fn pack_scale_min_k4(sc: &[u8], m: &[u8]) -> [u8; 12] {
    let mut q = [0u8; 12];
    for j in 0..4 {
        q[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
        q[j + 4] = m[j] | ((m[j + 4] >> 4) << 6);
        q[j + 8] = (sc[j + 4] & 0xf) | ((m[j + 4] & 0xf) << 4);
    }
    q
}

/// Encodes `x` (a multiple of the block size). F16 to Q8_0 as ggml's reference quantisers do;
/// the K-quants with plain round-to-nearest codes under max-based scales (not ggml's search
/// for the best scales). Used to build synthetic models and kernel inputs for tests.
pub fn quantize(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ty.bytes_for(x.len()));
    quantize_into(ty, x, &mut out);
    out
}

/// `quantize` into `out` (cleared first): with room for the bytes, F16, Q4_0, Q5_0 and Q8_0
/// allocate nothing (the CPU's block caches code each row through it).
pub fn quantize_into(ty: GgmlType, x: &[f32], out: &mut Vec<u8>) {
    out.clear();
    let out = &mut *out;
    match ty {
        GgmlType::F32 => x.iter().for_each(|v| out.extend(v.to_le_bytes())),
        GgmlType::F16 => x.iter().for_each(|v| out.extend(f16::from_f32(*v).to_le_bytes())),
        GgmlType::Q4_0 | GgmlType::Q5_0 => quantize_q45_0(ty, x, out),
        GgmlType::Q4_1 | GgmlType::Q5_1 => quantize_q45_1(ty, x, out),
        GgmlType::Q8_0 => quantize_q8_0(ty, x, out),
        GgmlType::Q2_K => quantize_q2_k(ty, x, out),
        GgmlType::Q3_K => quantize_q3_k(ty, x, out),
        GgmlType::Q4_K | GgmlType::Q5_K => quantize_q45_k(ty, x, out),
        GgmlType::Q6_K => quantize_q6_k(ty, x, out),
    }
}

/// Q4_0 and Q5_0: d = (the value of largest magnitude) / −2^(bits−1).
fn quantize_q45_0(ty: GgmlType, x: &[f32], out: &mut Vec<u8>) {
    // d = (the value of largest magnitude) / −2^(bits−1), so that value maps to q = 0.
    let (half_range, top) = if ty == GgmlType::Q4_0 { (8.0, 15) } else { (16.0, 31) };
    for b in x.chunks_exact(ty.block_elems()) {
        let max = b.iter().copied().fold(0.0f32, |m, v| if v.abs() > m.abs() { v } else { m });
        let d = max / -half_range;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut q = [0u32; 32];
        q.iter_mut().zip(b).for_each(|(q, v)| *q = ((v * id + (half_range + 0.5)) as i32).min(top) as u32);
        out.extend(f16::from_f32(d).to_le_bytes());
        push_nibbles(out, &q, ty == GgmlType::Q5_0);
    }
}

/// Q4_1 and Q5_1: d = (max − min) / (2^bits − 1), m = min.
fn quantize_q45_1(ty: GgmlType, x: &[f32], out: &mut Vec<u8>) {
    let top = if ty == GgmlType::Q4_1 { 15 } else { 31 };
    for b in x.chunks_exact(ty.block_elems()) {
        let min = b.iter().copied().fold(f32::INFINITY, f32::min);
        let max = b.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let d = (max - min) / top as f32;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let q: Vec<u32> = b.iter().map(|v| (((v - min) * id + 0.5) as i32).min(top) as u32).collect();
        out.extend(f16::from_f32(d).to_le_bytes());
        out.extend(f16::from_f32(min).to_le_bytes());
        push_nibbles(out, &q, ty == GgmlType::Q5_1);
    }
}

/// Q8_0: d = max |x| / 127.
fn quantize_q8_0(ty: GgmlType, x: &[f32], out: &mut Vec<u8>) {
    for b in x.chunks_exact(ty.block_elems()) {
        let amax = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend(f16::from_f32(d).to_le_bytes());
        for v in b {
            out.push(((v * id).round() as i8) as u8);
        }
    }
}

/// Q2_K: 16 groups of 16, codes 0..=3, four-bit scales and mins.
fn quantize_q2_k(ty: GgmlType, x: &[f32], out: &mut Vec<u8>) {
    for b in x.chunks_exact(ty.block_elems()) {
        // 16 groups of 16, codes 0..=3, four-bit scales and mins.
        let (d, dmin, sc, m, q) = quantize_min_scale(b, 16, 3, 15);
        out.extend((0..16).map(|i| sc[i] | (m[i] << 4)));
        for n in 0..2 {
            for l in 0..32 {
                out.push((0..4).fold(0u8, |acc, c| acc | (q[128 * n + 32 * c + l] << (2 * c))));
            }
        }
        out.extend(d.to_le_bytes());
        out.extend(dmin.to_le_bytes());
    }
}

/// Q3_K: 16 groups of 16, codes −4..=3, six-bit signed scales.
fn quantize_q3_k(ty: GgmlType, x: &[f32], out: &mut Vec<u8>) {
    for b in x.chunks_exact(ty.block_elems()) {
        // 16 groups of 16, codes −4..=3, six-bit signed scales.
        let (d, sc, q) = quantize_symmetric(b, 16, 3, 31);
        let code = |e: usize| (q[e] + 4) as u8;
        out.extend((0..32).map(|l| (0..8).fold(0u8, |acc, s| acc | ((code(32 * s + l) >> 2) << s))));
        for n in 0..2 {
            for l in 0..32 {
                out.push((0..4).fold(0u8, |acc, c| acc | ((code(128 * n + 32 * c + l) & 3) << (2 * c))));
            }
        }
        let s6: Vec<u8> = sc.iter().map(|&s| (s + 32) as u8).collect();
        out.extend((0..8).map(|i| (s6[i] & 0xf) | ((s6[i + 8] & 0xf) << 4)));
        out.extend((0..4).map(|i| (0..4).fold(0u8, |acc, k| acc | ((s6[i + 4 * k] >> 4) << (2 * k)))));
        out.extend(d.to_le_bytes());
    }
}

/// Q4_K and Q5_K: 8 groups of 32, codes 0..=15 (or 31), six-bit scales and mins.
fn quantize_q45_k(ty: GgmlType, x: &[f32], out: &mut Vec<u8>) {
    let five = ty == GgmlType::Q5_K;
    for b in x.chunks_exact(ty.block_elems()) {
        // 8 groups of 32, codes 0..=15 (or 31), six-bit scales and mins.
        let (d, dmin, sc, m, q) = quantize_min_scale(b, 8, if five { 31 } else { 15 }, 63);
        out.extend(d.to_le_bytes());
        out.extend(dmin.to_le_bytes());
        out.extend(pack_scale_min_k4(&sc, &m));
        if five {
            out.extend((0..32).map(|l| (0..8).fold(0u8, |acc, s| acc | ((q[32 * s + l] >> 4) << s))));
        }
        for p in 0..4 {
            out.extend((0..32).map(|l| (q[64 * p + l] & 0xf) | ((q[64 * p + 32 + l] & 0xf) << 4)));
        }
    }
}

/// Q6_K: 16 groups of 16, codes −32..=31, eight-bit signed scales.
fn quantize_q6_k(ty: GgmlType, x: &[f32], out: &mut Vec<u8>) {
    for b in x.chunks_exact(ty.block_elems()) {
        // 16 groups of 16, codes −32..=31, eight-bit signed scales.
        let (d, sc, q) = quantize_symmetric(b, 16, 31, 127);
        let code = |e: usize| (q[e] + 32) as u8;
        for n in 0..2 {
            for half in 0..2 {
                let e = 128 * n + 32 * half;
                out.extend((0..32).map(|l| (code(e + l) & 0xf) | ((code(e + 64 + l) & 0xf) << 4)));
            }
        }
        for n in 0..2 {
            out.extend((0..32).map(|l| (0..4).fold(0u8, |acc, c| acc | ((code(128 * n + 32 * c + l) >> 4) << (2 * c)))));
        }
        out.extend(sc.iter().map(|&s| s as i8 as u8));
        out.extend(d.to_le_bytes());
    }
}

/// The 32 codes of a Q4/Q5 block: for 5 bits, bit 4 of each as `qh` (u32, bit i = code i);
/// then `qs`, byte j = code j | code j + 16 << 4.
fn push_nibbles(out: &mut Vec<u8>, q: &[u32], five: bool) {
    if five {
        let qh = q.iter().enumerate().fold(0u32, |acc, (i, c)| acc | ((c >> 4) << i));
        out.extend(qh.to_le_bytes());
    }
    out.extend((0..16).map(|j| ((q[j] & 0xf) | ((q[j + 16] & 0xf) << 4)) as u8));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-built blocks, decoded by the formulas in ggml-quants.c.
    #[test]
    fn q4_1_block_by_hand() {
        let mut b = Vec::new();
        b.extend(f16::from_f32(0.5).to_le_bytes());
        b.extend(f16::from_f32(-1.0).to_le_bytes());
        for j in 0..16u8 {
            b.push(j | ((15 - j) << 4));
        }
        let y = dequantize_vec(GgmlType::Q4_1, &b, 32);
        for j in 0..16 {
            assert_eq!(y[j], j as f32 * 0.5 - 1.0);
            assert_eq!(y[j + 16], (15 - j) as f32 * 0.5 - 1.0);
        }
    }

    #[test]
    fn q4_0_and_q8_0_blocks_by_hand() {
        let mut b = Vec::new();
        b.extend(f16::from_f32(2.0).to_le_bytes());
        b.extend([0x80u8; 16]); // low nibble 0 → -8, high nibble 8 → 0
        let y = dequantize_vec(GgmlType::Q4_0, &b, 32);
        assert!(y[..16].iter().all(|&v| v == -16.0));
        assert!(y[16..].iter().all(|&v| v == 0.0));

        let mut b = Vec::new();
        b.extend(f16::from_f32(0.25).to_le_bytes());
        b.extend((0..32).map(|i| (i as i8 - 16) as u8));
        let y = dequantize_vec(GgmlType::Q8_0, &b, 32);
        for (i, v) in y.iter().enumerate() {
            assert_eq!(*v, (i as f32 - 16.0) * 0.25);
        }
    }

    /// Blocks of random bytes (f16 scale fields finite) and the values that the `gguf` Python
    /// package's dequantisers give for them, written by `tests/data/make_quant_blocks.py`.
    /// numpy evaluates the same operations in the same order on f32 (products such as d·sc
    /// rounded before the multiply by q, no fused multiply-add), so the values must be equal
    /// bit for bit.
    #[test]
    fn dequantize_matches_gguf_py_bit_for_bit() {
        let data: &[u8] = include_bytes!("../../tests/data/quant_blocks.bin");
        let u32_at = |i: usize| u32::from_le_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
        let (mut at, mut seen) = (0, Vec::new());
        while at < data.len() {
            let (id, n, m) = (u32_at(at), u32_at(at + 4) as usize, u32_at(at + 8) as usize);
            let ty = GgmlType::from_u32(id).unwrap_or_else(|| panic!("type id {id} in the test data"));
            let bytes = &data[at + 12..][..m];
            let want: Vec<f32> =
                data[at + 12 + m..][..4 * n].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            let got = dequantize_vec(ty, bytes, n);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g.to_bits(), w.to_bits(), "{ty:?} element {i} (block {}): {g} vs gguf-py {w}", i / ty.block_elems());
            }
            assert!(want.iter().any(|v| *v != 0.0), "{ty:?}: all zero");
            seen.push(ty);
            at += 12 + m + 4 * n;
        }
        assert_eq!(seen, GgmlType::ALL, "the test data covers every type, in id order");
    }

    #[test]
    fn type_table_is_consistent() {
        for (i, f) in FORMATS.iter().enumerate() {
            assert_eq!(f.0 as usize, i, "{} is at its enum index", f.2);
            assert_eq!(GgmlType::from_u32(f.1), Some(f.0));
            assert_eq!(ggml_type_name(f.1), f.2);
            assert_eq!(f.0.name(), f.2);
        }
        assert_eq!(GgmlType::from_u32(9), None, "Q8_1 is not supported");
        assert_eq!(supported_names(), "F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K");
    }

    /// Hand-built K-quant super-blocks: one sub-block's scale (and min) set, the rest zero.
    #[test]
    fn k_quant_blocks_by_hand() {
        // Q4_K: d = 0.5, dmin = 0.25; sub-block 5: sc = 3, m = 2; byte 32·2 + l = l & 15 in the
        // high nibble (sub-block 5 = pair 2, odd).
        let mut b = vec![0u8; 144];
        b[..2].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        b[2..4].copy_from_slice(&f16::from_f32(0.25).to_le_bytes());
        b[4 + 8 + 1] = 3 | (2 << 4); // scales[9]: low nibbles of sc and m of sub-block 5
        for l in 0..32 {
            b[16 + 64 + l] = ((l & 15) as u8) << 4;
        }
        let y = dequantize_vec(GgmlType::Q4_K, &b, 256);
        for (i, v) in y.iter().enumerate() {
            let want = if i / 32 == 5 { 1.5 * (i % 16) as f32 - 0.5 } else { 0.0 };
            assert_eq!(*v, want, "Q4_K element {i}");
        }

        // Q6_K: d = 2, scales[3] = −1 (elements 16..31 of sub-block 1); ql low nibble 5 and qh
        // bits 2..3 = 1 there: q = 5 + 16 − 32 = −11, value 22.
        let mut b = vec![0u8; 210];
        b[208..].copy_from_slice(&f16::from_f32(2.0).to_le_bytes());
        b[192 + 3] = (-1i8) as u8;
        for l in 16..32 {
            b[32 + l] = 5;
            b[128 + l] = 1 << 2;
        }
        let y = dequantize_vec(GgmlType::Q6_K, &b, 256);
        for (i, v) in y.iter().enumerate() {
            let want = if (48..64).contains(&i) { 22.0 } else { 0.0 };
            assert_eq!(*v, want, "Q6_K element {i}");
        }
    }

    /// dequantize(quantize(x)) is within one quantisation step of x for every type, and the
    /// root-mean-square error well below it. Step: the value range over the codes
    /// (2^bits − 1) for the min-and-scale formats, half the range for the symmetric ones.
    #[test]
    fn quantize_round_trips_within_one_step() {
        let x: Vec<f32> = (0..512).map(|i| ((i * 37 % 64) as f32 - 31.5) / 10.0 + ((i / 64) as f32 - 4.0) * 0.05).collect();
        let range = x.iter().copied().fold(f32::MIN, f32::max) - x.iter().copied().fold(f32::MAX, f32::min);
        for ty in GgmlType::ALL {
            let y = dequantize_vec(ty, &quantize(ty, &x), x.len());
            let bits = match ty {
                GgmlType::F32 | GgmlType::F16 => 11,
                GgmlType::Q2_K => 2,
                GgmlType::Q3_K => 3,
                GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q4_K => 4,
                GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q5_K => 5,
                GgmlType::Q6_K => 6,
                GgmlType::Q8_0 => 8,
            };
            let step = range / ((1 << bits) - 1) as f32;
            let mut sq = 0.0;
            for (i, (a, b)) in x.iter().zip(&y).enumerate() {
                assert!((a - b).abs() <= step, "{ty:?} element {i}: {a} vs {b} (step {step})");
                sq += (a - b) * (a - b);
            }
            let rms = (sq / x.len() as f32).sqrt();
            assert!(rms <= 0.4 * step, "{ty:?}: rms error {rms} of step {step}");
        }
    }
}
