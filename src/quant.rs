//! ggml block formats: sizes and CPU dequantisation, bit for bit as in ggml-quants.c.
//!
//! | type | elems/block | bytes/block | layout                                   | value                   |
//! |------|-------------|-------------|------------------------------------------|-------------------------|
//! | F32  | 1           | 4           | f32                                      | x                       |
//! | F16  | 1           | 2           | f16                                      | x                       |
//! | Q4_0 | 32          | 18          | d: f16, qs: [u8; 16]                     | (q - 8) · d             |
//! | Q4_1 | 32          | 20          | d: f16, m: f16, qs: [u8; 16]             | q · d + m               |
//! | Q8_0 | 32          | 34          | d: f16, qs: [i8; 32]                     | q · d                   |
//!
//! In the 4-bit formats byte `j` of `qs` holds element `j` in its low nibble and element `j + 16`
//! in its high nibble.

use half::f16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q8_0,
}

pub const QK: usize = 32;

impl GgmlType {
    pub fn from_u32(t: u32) -> Option<Self> {
        Some(match t {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            8 => GgmlType::Q8_0,
            _ => return None,
        })
    }

    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q8_0 => 8,
        }
    }

    pub fn block_elems(self) -> usize {
        match self {
            GgmlType::F32 | GgmlType::F16 => 1,
            _ => QK,
        }
    }

    pub fn block_bytes(self) -> usize {
        match self {
            GgmlType::F32 => 4,
            GgmlType::F16 => 2,
            GgmlType::Q4_0 => 18,
            GgmlType::Q4_1 => 20,
            GgmlType::Q8_0 => 34,
        }
    }

    /// Encoded bytes of `n` elements (`n` a multiple of the block size).
    pub fn bytes_for(self, n: usize) -> usize {
        n / self.block_elems() * self.block_bytes()
    }

    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
            GgmlType::Q8_0 => "Q8_0",
        }
    }
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

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Decodes `src` (whole blocks of `ty`) into `out` (one f32 per element).
pub fn dequantize(ty: GgmlType, src: &[u8], out: &mut [f32]) {
    assert_eq!(src.len(), ty.bytes_for(out.len()), "dequantize: {} bytes do not hold {} {} elements", src.len(), out.len(), ty.name());
    match ty {
        GgmlType::F32 => {
            for (o, c) in out.iter_mut().zip(src.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        GgmlType::F16 => {
            for (o, c) in out.iter_mut().zip(src.chunks_exact(2)) {
                *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        GgmlType::Q4_0 => {
            for (y, b) in out.chunks_exact_mut(QK).zip(src.chunks_exact(18)) {
                let d = f16_at(b, 0);
                for j in 0..16 {
                    let q = b[2 + j];
                    y[j] = ((q & 0x0f) as i32 - 8) as f32 * d;
                    y[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
                }
            }
        }
        GgmlType::Q4_1 => {
            for (y, b) in out.chunks_exact_mut(QK).zip(src.chunks_exact(20)) {
                let d = f16_at(b, 0);
                let m = f16_at(b, 2);
                for j in 0..16 {
                    let q = b[4 + j];
                    y[j] = (q & 0x0f) as f32 * d + m;
                    y[j + 16] = (q >> 4) as f32 * d + m;
                }
            }
        }
        GgmlType::Q8_0 => {
            for (y, b) in out.chunks_exact_mut(QK).zip(src.chunks_exact(34)) {
                let d = f16_at(b, 0);
                for j in 0..QK {
                    y[j] = (b[2 + j] as i8) as f32 * d;
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

/// Encodes `x` (a multiple of the block size) as ggml's reference quantisers do.
/// Used to build synthetic models for tests.
pub fn quantize(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ty.bytes_for(x.len()));
    match ty {
        GgmlType::F32 => x.iter().for_each(|v| out.extend(v.to_le_bytes())),
        GgmlType::F16 => x.iter().for_each(|v| out.extend(f16::from_f32(*v).to_le_bytes())),
        GgmlType::Q4_0 => {
            for b in x.chunks_exact(QK) {
                // d = (the value of largest magnitude) / -8, so that value maps to q = 0.
                let max = b.iter().copied().fold(0.0f32, |m, v| if v.abs() > m.abs() { v } else { m });
                let d = max / -8.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend(f16::from_f32(d).to_le_bytes());
                for j in 0..16 {
                    let q0 = ((b[j] * id + 8.5) as i32).min(15) as u8;
                    let q1 = ((b[j + 16] * id + 8.5) as i32).min(15) as u8;
                    out.push(q0 | (q1 << 4));
                }
            }
        }
        GgmlType::Q4_1 => {
            for b in x.chunks_exact(QK) {
                let min = b.iter().copied().fold(f32::INFINITY, f32::min);
                let max = b.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let d = (max - min) / 15.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend(f16::from_f32(d).to_le_bytes());
                out.extend(f16::from_f32(min).to_le_bytes());
                for j in 0..16 {
                    let q0 = (((b[j] - min) * id + 0.5) as i32).min(15) as u8;
                    let q1 = (((b[j + 16] - min) * id + 0.5) as i32).min(15) as u8;
                    out.push(q0 | (q1 << 4));
                }
            }
        }
        GgmlType::Q8_0 => {
            for b in x.chunks_exact(QK) {
                let amax = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let d = amax / 127.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend(f16::from_f32(d).to_le_bytes());
                for v in b {
                    out.push(((v * id).round() as i8) as u8);
                }
            }
        }
    }
    out
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

    #[test]
    fn quantize_round_trips_within_one_step() {
        let x: Vec<f32> = (0..64).map(|i| ((i * 37 % 64) as f32 - 31.5) / 10.0).collect();
        for ty in [GgmlType::F16, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0] {
            let y = dequantize_vec(ty, &quantize(ty, &x), x.len());
            let step = match ty {
                GgmlType::Q8_0 => 3.2 / 127.0,
                GgmlType::F16 => 0.01,
                _ => 6.4 / 15.0,
            };
            for (a, b) in x.iter().zip(&y) {
                assert!((a - b).abs() <= step, "{ty:?}: {a} vs {b}");
            }
        }
    }
}
