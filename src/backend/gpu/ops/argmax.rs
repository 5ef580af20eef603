//! The greedy pick on the GPU: (argmax, its logit) of the logits, ties to the lowest index
//! (`shaders/argmax.wgsl`), so that a token reads back 8 bytes.

use crate::backend::gpu::program::{Grid, Recorder};
use crate::backend::gpu::shader::Spec;
use crate::error::Result;
use crate::params;

params! {
    pub struct Argmax {
        /// Logits to scan (V).
        pub n: u32,
    }
}

/// (argmax, its logit) of `n` logits into `out` ([2] u32), one workgroup.
pub fn record(rec: &mut Recorder, out: &wgpu::Buffer, logits: &wgpu::Buffer, n: u32) -> Result<()> {
    let spec = Spec::new("argmax", include_str!("../../../../shaders/argmax.wgsl"));
    rec.push("argmax", &spec, &[out, logits], &Argmax { n }, Grid::workgroups(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::gpu::program::StepTable;
    use crate::core::sampler::argmax;
    use crate::testing::*;

    /// The index of the largest logit, ties to the lowest index, as `sampler::argmax`.
    #[test]
    fn argmax_matches_cpu_with_ties() {
        let Some(ctx) = gpu() else { return };
        for (seed, n) in [(1u64, 49152usize), (2, 1000), (3, 7)] {
            let mut logits = random(n, seed, 10.0);
            // A tie for the maximum at two places: the lower index must win.
            let hi = logits.iter().copied().fold(f32::MIN, f32::max) + 1.0;
            logits[n / 3] = hi;
            logits[n - 1] = hi;
            let out = ctx.storage("out", 8).unwrap();
            let l = buf(&ctx, "logits", &logits);
            let mut rec = Recorder::new(&ctx);
            record(&mut rec, &out, &l, n as u32).unwrap();
            rec.finish("argmax", None).unwrap().run(&ctx, &StepTable::new(&ctx, 1).unwrap(), 0);
            let got = read(&ctx, &out);
            assert_eq!(got[0].to_bits(), argmax(&logits), "n = {n}");
            assert_eq!(got[1], hi);
        }
    }

    /// Logits that are all -inf: the GPU reports index 0, as the CPU argmax does.
    #[test]
    fn argmax_of_all_negative_infinity_is_zero() {
        let Some(ctx) = gpu() else { return };
        let logits = vec![f32::NEG_INFINITY; 300];
        let out = ctx.storage("out", 8).unwrap();
        let l = buf(&ctx, "logits", &logits);
        let mut rec = Recorder::new(&ctx);
        record(&mut rec, &out, &l, 300).unwrap();
        rec.finish("argmax", None).unwrap().run(&ctx, &StepTable::new(&ctx, 1).unwrap(), 0);
        assert_eq!(read(&ctx, &out)[0].to_bits(), argmax(&logits));
    }
}
