//! Test support, shared by the unit tests of the ops and the integration tests under `tests/`:
//! the GPU contexts (a missing adapter fails under CI), seeded data, GPU buffers from slices, and
//! an error report that names the worst element. Native only.

use crate::backend::gpu::weights::Tensor;
use crate::backend::gpu::GpuContext;
use crate::core::quant::{quantize, GgmlType};

/// The GPU context as the adapter suggests (subgroups where it has them, rows per invocation by
/// adapter type), then the plain one (no subgroups, one row per invocation): both paths of every
/// specialised kernel are tested.
pub fn gpus() -> Vec<GpuContext> {
    let Some(full) = gpu() else { return Vec::new() };
    let plain = pollster::block_on(GpuContext::with_options(crate::backend::gpu::GpuOptions::plain())).expect("plain context");
    vec![full, plain]
}

/// The GPU, or None with a printed reason on a developer machine without one. Under CI (`CI` set)
/// a missing adapter is a failure: lavapipe is installed there.
pub fn gpu() -> Option<GpuContext> {
    match pollster::block_on(GpuContext::new()) {
        Ok(ctx) => Some(ctx),
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED: no GPU adapter ({e}); install mesa-vulkan-drivers to run GPU tests");
            None
        }
        Err(e) => panic!("no GPU adapter under CI: {e}"),
    }
}

pub fn random(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n).map(|_| (rng.f32() * 2.0 - 1.0) * scale).collect()
}

/// Max absolute error, where it is, and the same normalised by the reference's max magnitude.
pub fn max_err(got: &[f32], want: &[f32]) -> (f32, usize, f32) {
    assert_eq!(got.len(), want.len(), "lengths differ");
    let mut worst = (0.0f32, 0usize);
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        let e = (a - b).abs();
        if e.is_nan() || e > worst.0 {
            worst = (if e.is_nan() { f32::INFINITY } else { e }, i);
        }
    }
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-30);
    (worst.0, worst.1, worst.0 / scale)
}

pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    let (e, i, rel) = max_err(got, want);
    eprintln!("{what}: max abs error {e:.3e} at [{i}] (normalised {rel:.3e})");
    assert!(e <= tol, "{what}: max abs error {e:e} at index {i} (got {}, want {}) exceeds {tol:e}", got[i], want[i]);
}

/// `n` elements of type `ty` as seeded random ggml blocks: random bytes, so every code and
/// sub-block scale bit pattern occurs (negative Q3_K and Q6_K scales, set and clear high bits),
/// with each f16 field set to a random f16 of either sign whose size keeps the elements within
/// about ±`scale`, some subnormal. F32 and F16: random values in ±`scale`, encoded.
pub fn random_blocks(ty: GgmlType, n: usize, seed: u64, scale: f32) -> Vec<u8> {
    use GgmlType::*;
    // (byte offset of an f16 field in the block, the largest code (product) it multiplies)
    let halves: &[(usize, f32)] = match ty {
        F32 | F16 => return quantize(ty, &random(n, seed, scale)),
        Q4_0 => &[(0, 8.0)],
        Q4_1 => &[(0, 15.0), (2, 1.0)],
        Q5_0 => &[(0, 16.0)],
        Q5_1 => &[(0, 31.0), (2, 1.0)],
        Q8_0 => &[(0, 128.0)],
        Q2_K => &[(80, 15.0 * 3.0), (82, 15.0)],
        Q3_K => &[(108, 32.0 * 4.0)],
        Q4_K => &[(0, 63.0 * 15.0), (2, 63.0)],
        Q5_K => &[(0, 63.0 * 31.0), (2, 63.0)],
        Q6_K => &[(208, 128.0 * 32.0)],
    };
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut bytes: Vec<u8> = (0..ty.bytes_for(n)).map(|_| rng.u8(..)).collect();
    for block in bytes.chunks_exact_mut(ty.block_bytes()) {
        for &(at, codes) in halves {
            // One field in eight subnormal (below 2^-14), as most Q6_K scales of real models are.
            let v = if rng.u8(..8) == 0 { rng.f32() * 6.1e-5 } else { (rng.f32() * scale / codes).max(6.2e-5) };
            let v = if rng.bool() { v } else { -v };
            block[at..at + 2].copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
        }
    }
    bytes
}

/// Row length for a weight type's tests: 3 blocks of 32, or 2 super-blocks of 256 for the
/// K-quants (so blocks of the second super-block are addressed too).
pub fn cols_for(ty: GgmlType) -> usize {
    if ty.block_elems() > 32 {
        512
    } else {
        96
    }
}

/// A whole buffer read back as f32.
pub fn read(ctx: &GpuContext, b: &wgpu::Buffer) -> Vec<f32> {
    pollster::block_on(ctx.read_f32(b)).expect("readback")
}

/// A storage buffer holding `data`.
pub fn buf(ctx: &GpuContext, label: &str, data: &[f32]) -> wgpu::Buffer {
    ctx.storage_with(label, bytemuck::cast_slice(data)).expect("buffer")
}

/// A [rows × cols] weight tensor of type `ty` holding `bytes`.
pub fn tensor(ctx: &GpuContext, ty: GgmlType, bytes: &[u8], rows: usize, cols: usize) -> Tensor {
    Tensor { buffer: ctx.storage_with("w", bytes).expect("buffer"), ty, dims: vec![cols as u64, rows as u64] }
}

/// An F32 vector tensor (a norm's weights, a bias) holding `v`.
pub fn vector(ctx: &GpuContext, label: &str, v: &[f32]) -> Tensor {
    Tensor { buffer: buf(ctx, label, v), ty: GgmlType::F32, dims: vec![v.len() as u64] }
}
