//! A weight matrix on the CPU, either expanded to f32 (the reference) or kept in its GGUF blocks
//! (the CPU backend: memory ≈ the file, each block decoded while it is used).
//!
//! Shapes: W is [rows × cols] row-major (ggml's dims are [cols, rows]); x is [n × cols] (n
//! tokens), out is [n × rows]: out[t, r] = Σ_c W[r, c] · x[t, c].

use crate::core::quant::{dequantize, unpack, GgmlType, GROUP, QK, QK_K};

/// Lanes of the partial sums in `dot`: two 128-bit SIMD vectors of f32.
const LANES: usize = 8;

pub enum Matrix {
    /// [rows × cols] f32.
    F32 { rows: usize, cols: usize, w: Vec<f32> },
    /// The tensor's bytes as in the file: each row is `cols / block_elems` blocks of `ty`.
    Blocks { rows: usize, cols: usize, ty: GgmlType, row_bytes: usize, data: Vec<u8> },
}

/// Working memory of `Matrix::matmul`, sized at load for the widest matrix and the batch.
pub struct Scratch {
    /// x in 16-bit integers: x[t, c] ≈ xq[t, c] · xs[t, c / 16].                 [B × cols]
    xq: Vec<i16>,
    /// The step of each group of 16 elements of x: max |x| / 32767.              [B × cols / 16]
    xs: Vec<f32>,
    /// Σ x over each group of 16 elements (for the types with an offset).         [B × cols / 16]
    xsum: Vec<f32>,
    /// One weight row unpacked: integers and each group's (scale, offset).        [cols], [cols / 16]
    q: Vec<i8>,
    dm: Vec<(f32, f32)>,
}

impl Scratch {
    pub fn new(cols: usize, batch: usize) -> Scratch {
        let cols = cols.next_multiple_of(QK_K);
        Scratch {
            xq: vec![0; batch * cols],
            xs: vec![0.0; batch * cols / GROUP],
            xsum: vec![0.0; batch * cols / GROUP],
            q: vec![0; cols],
            dm: vec![(0.0, 0.0); cols / GROUP],
        }
    }

    /// Fills xq, xs and xsum from x ([n × cols], cols a multiple of 16).
    fn quantise(&mut self, x: &[f32], cols: usize) {
        let n = x.len() / cols;
        let xq = self.xq[..n * cols].chunks_exact_mut(GROUP);
        for ((xb, qb), s) in x.chunks_exact(GROUP).zip(xq).zip(&mut self.xs) {
            let max = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            *s = max / 32767.0;
            let inv = if max > 0.0 { 32767.0 / max } else { 0.0 };
            for (q, v) in qb.iter_mut().zip(xb) {
                *q = (v * inv).round_ties_even() as i16;
            }
        }
        for (sum, xg) in self.xsum.iter_mut().zip(x.chunks_exact(GROUP)) {
            *sum = xg.iter().sum();
        }
    }
}

impl Matrix {
    /// A matrix of `rows` rows from a tensor's bytes: dequantised to f32 when `expand`.
    pub fn new(ty: GgmlType, rows: usize, cols: usize, data: Vec<u8>, expand: bool) -> Matrix {
        if expand || !ty.is_quantised() {
            let mut w = vec![0.0; rows * cols];
            dequantize(ty, &data, &mut w);
            Matrix::F32 { rows, cols, w }
        } else {
            Matrix::Blocks { rows, cols, ty, row_bytes: ty.bytes_for(cols), data }
        }
    }

    pub fn rows(&self) -> usize {
        match self {
            Matrix::F32 { rows, .. } | Matrix::Blocks { rows, .. } => *rows,
        }
    }

    pub fn cols(&self) -> usize {
        match self {
            Matrix::F32 { cols, .. } | Matrix::Blocks { cols, .. } => *cols,
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        match self {
            Matrix::F32 { w, .. } => w.len() * 4,
            Matrix::Blocks { data, .. } => data.len(),
        }
    }

    /// out = W[r, :] as f32 (an embedding lookup).          out: [cols]
    pub fn row(&self, r: usize, out: &mut [f32]) {
        match self {
            Matrix::F32 { cols, w, .. } => out.copy_from_slice(&w[r * cols..][..*cols]),
            Matrix::Blocks { ty, row_bytes, data, .. } => dequantize(*ty, &data[r * row_bytes..][..*row_bytes], out),
        }
    }

    /// out[t, r] = W[r, :] · x[t, :] for the n = x.len() / cols tokens of x.
    /// x: [n × cols], out: [n × rows]; scratch from `Scratch::new` for at least cols and n.
    pub fn matmul(&self, out: &mut [f32], x: &[f32], scratch: &mut Scratch) {
        let (rows, cols) = (self.rows(), self.cols());
        let n = x.len() / cols;
        debug_assert_eq!(out.len(), n * rows);
        debug_assert!(cols.is_multiple_of(QK) || matches!(self, Matrix::F32 { .. }));
        match self {
            Matrix::F32 { w, .. } => {
                for (t, xt) in x.chunks_exact(cols).enumerate() {
                    for (r, wr) in w.chunks_exact(cols).enumerate() {
                        out[t * rows + r] = dot(wr, xt);
                    }
                }
            }
            Matrix::Blocks { ty, row_bytes, data, .. } => {
                // x in 16 bits (an error of at most 2^-16 of its group's largest value); each
                // weight row unpacked once for all n tokens and dotted with them exactly in i32:
                //   out[t, r] = Σ_g d_g · (s_t,g · Σ_{i∈g} q_i · xq_t,i) + m_g · Σ_{i∈g} x_t,i
                // (g: the groups of 16 of the row; s_t,g: the step of x_t's group g).
                scratch.quantise(x, cols);
                let (be, bb) = (ty.block_elems(), ty.block_bytes());
                let groups = cols / GROUP;
                let offset = ty.has_offset();
                let Scratch { xq, xs, xsum, q, dm } = scratch;
                let (q, dm) = (&mut q[..cols], &mut dm[..groups]);
                if n == 1 && simd::fused(*ty) {
                    // Decode on wasm: the common 32-element types decoded in registers.
                    for (o, row) in out.iter_mut().zip(data.chunks_exact(*row_bytes)) {
                        *o = simd::row_dot(*ty, row, xq, xs, xsum);
                    }
                    return;
                }
                for (r, row) in data.chunks_exact(*row_bytes).enumerate() {
                    for ((blk, qb), dmb) in row.chunks_exact(bb).zip(q.chunks_exact_mut(be)).zip(dm.chunks_exact_mut(be / GROUP)) {
                        unpack(*ty, blk, qb, dmb);
                    }
                    for t in 0..n {
                        let (xq, xs, xsum) = (&xq[t * cols..][..cols], &xs[t * groups..][..groups], &xsum[t * groups..][..groups]);
                        let mut acc = Acc4::default();
                        let mut moff = 0.0f32;
                        for (g, ((qg, xg), &(d, m))) in q.chunks_exact(GROUP).zip(xq.chunks_exact(GROUP)).zip(dm.iter()).enumerate() {
                            group_dot(&mut acc, qg, xg, d * xs[g]);
                            if offset {
                                moff += m * xsum[g];
                            }
                        }
                        out[t * rows + r] = acc.total(moff);
                    }
                }
            }
        }
    }
}

/// a · b with LANES partial sums (the compiler keeps them in SIMD registers).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    dot_into(&mut acc, a, b);
    let tail = a.len() / LANES * LANES;
    sum(acc) + a[tail..].iter().zip(&b[tail..]).map(|(x, y)| x * y).sum::<f32>()
}

/// acc[k] += Σ_i a[LANES·i + k] · b[LANES·i + k]; a.len() is a multiple of LANES (a block).
#[inline(always)]
fn dot_into(acc: &mut [f32; LANES], a: &[f32], b: &[f32]) {
    for (a8, b8) in a.chunks_exact(LANES).zip(b.chunks_exact(LANES)) {
        for k in 0..LANES {
            acc[k] += a8[k] * b8[k];
        }
    }
}

#[inline(always)]
fn sum(a: [f32; LANES]) -> f32 {
    ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]))
}

/// Four f32 partial sums: a SIMD register on wasm32, an array elsewhere.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[derive(Clone, Copy)]
struct Acc4(core::arch::wasm32::v128);

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
impl Default for Acc4 {
    fn default() -> Self {
        Acc4(core::arch::wasm32::f32x4_splat(0.0))
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
impl Acc4 {
    fn get(self) -> [f32; 4] {
        use core::arch::wasm32::f32x4_extract_lane as lane;
        [lane::<0>(self.0), lane::<1>(self.0), lane::<2>(self.0), lane::<3>(self.0)]
    }

    /// acc += f · t for the exact i32 lanes t of a group's dot product (`group_dot`).
    #[inline(always)]
    fn add_scaled(&mut self, t: core::arch::wasm32::v128, f: f32) {
        use core::arch::wasm32::*;
        self.0 = f32x4_add(self.0, f32x4_mul(f32x4_convert_i32x4(t), f32x4_splat(f)));
    }
}

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
#[derive(Clone, Copy, Default)]
struct Acc4([f32; 4]);

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
impl Acc4 {
    fn get(self) -> [f32; 4] {
        self.0
    }
}

impl Acc4 {
    /// The row's sum: the four lanes, then the offsets' term `moff`, in this order on every target.
    fn total(self, moff: f32) -> f32 {
        let a = self.get();
        ((a[0] + a[2]) + (a[1] + a[3])) + moff
    }
}

/// The i32 lanes of a group's dot product, q's 16 integers (in a register) with x[16]:
/// lane k = Σ_{j ∈ {2k, 2k+1, 2k+8, 2k+9}} q[j] · x[j] (`i32x4.dot_i16x8_s` over each half).
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
fn group_lanes(q: core::arch::wasm32::v128, x: &[i16]) -> core::arch::wasm32::v128 {
    use core::arch::wasm32::*;
    assert!(x.len() >= 16);
    // SAFETY: x holds 16 values (checked above); v128_load has no alignment requirement.
    let (x0, x1) = unsafe { (v128_load(x.as_ptr() as *const v128), v128_load(x.as_ptr().add(8) as *const v128)) };
    i32x4_add(i32x4_dot_i16x8(i16x8_extend_low_i8x16(q), x0), i32x4_dot_i16x8(i16x8_extend_high_i8x16(q), x1))
}

/// acc[k] += f · t[k], t[k] = Σ_{j ∈ {2k, 2k+1, 2k+8, 2k+9}} q[j] · x[j] in exact i32: the lanes
/// of wasm's `i32x4.dot_i16x8_s` over the two halves of a group, so that both versions give the
/// same bits.                                                     q, x: [16]
#[inline(always)]
fn group_dot(acc: &mut Acc4, q: &[i8], x: &[i16], f: f32) {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        assert!(q.len() >= 16);
        // SAFETY: q holds 16 values (checked above); v128_load has no alignment requirement.
        let qv = unsafe { core::arch::wasm32::v128_load(q.as_ptr() as *const core::arch::wasm32::v128) };
        acc.add_scaled(group_lanes(qv, x), f);
    }
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    {
        let p = |j: usize| q[j] as i32 * x[j] as i32;
        for k in 0..4 {
            let t = p(2 * k) + p(2 * k + 1) + p(2 * k + 8) + p(2 * k + 9);
            acc.0[k] += t as f32 * f;
        }
    }
}

/// Decode's mat-vec row for Q4_0, Q4_1 and Q8_0 on wasm SIMD: each block's integers go from its
/// bytes into registers (no `unpack` buffer) and through `group_dot`'s operations (`group_lanes`,
/// `Acc4::add_scaled`, `Acc4::total`) in the same order, so the result has the same bits as the general path (which the native tests run).
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd {
    use super::{group_lanes, Acc4, GgmlType, GROUP};
    use core::arch::wasm32::*;

    pub fn fused(ty: GgmlType) -> bool {
        matches!(ty, GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0)
    }

    /// Σ over the row's blocks, as `Matrix::matmul` for one token.     row: one row's blocks;
    /// xq: [cols]; xs, xsum: [cols / 16].
    pub fn row_dot(ty: GgmlType, row: &[u8], xq: &[i16], xs: &[f32], xsum: &[f32]) -> f32 {
        let bb = ty.block_bytes();
        let mut acc = Acc4::default();
        let mut moff = 0.0f32;
        for (b, blk) in row.chunks_exact(bb).enumerate() {
            assert_eq!(blk.len(), bb);
            let d = crate::core::quant::f16_at(blk, 0);
            // SAFETY: a whole block (checked above): Q4_0's 16 quant bytes are 2..18 of 18, Q4_1's
            // 4..20 of 20, Q8_0's 2..34 of 34; v128_load has no alignment requirement.
            let (q0, q1, m) = unsafe {
                match ty {
                    GgmlType::Q4_0 => {
                        let v = v128_load(blk.as_ptr().add(2) as *const v128);
                        let eight = i8x16_splat(8);
                        (i8x16_sub(v128_and(v, u8x16_splat(0x0f)), eight), i8x16_sub(u8x16_shr(v, 4), eight), 0.0)
                    }
                    GgmlType::Q4_1 => {
                        let v = v128_load(blk.as_ptr().add(4) as *const v128);
                        (v128_and(v, u8x16_splat(0x0f)), u8x16_shr(v, 4), crate::core::quant::f16_at(blk, 2))
                    }
                    _ => (v128_load(blk.as_ptr().add(2) as *const v128), v128_load(blk.as_ptr().add(18) as *const v128), 0.0),
                }
            };
            for (g, q) in [q0, q1].into_iter().enumerate() {
                let gi = 2 * b + g;
                acc.add_scaled(group_lanes(q, &xq[GROUP * gi..]), d * xs[gi]);
                if ty == GgmlType::Q4_1 {
                    moff += m * xsum[gi];
                }
            }
        }
        acc.total(moff)
    }
}

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
mod simd {
    use super::GgmlType;

    pub fn fused(_: GgmlType) -> bool {
        false
    }

    pub fn row_dot(_: GgmlType, _: &[u8], _: &[i16], _: &[f32], _: &[f32]) -> f32 {
        unreachable!("the fused rows exist on wasm SIMD only")
    }
}
