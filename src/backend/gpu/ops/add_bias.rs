//! y[t] += bias after a projection (Qwen 2's q, k and v biases; `shaders/add_bias.wgsl`).

use crate::backend::gpu::program::{Grid, Recorder};
use crate::backend::gpu::shader::Spec;
use crate::backend::gpu::weights::Tensor;
use crate::error::Result;
use crate::params;

use super::Tokens;

params! {
    pub struct AddBias {
        /// Elements per row.
        pub n: u32,
    }
}

/// y[t] += bias over rows of `bias.cols()` elements.
pub fn record(rec: &mut Recorder, tokens: Tokens, label: String, y: &wgpu::Buffer, bias: &Tensor) -> Result<()> {
    let n = bias.cols();
    let spec = Spec::new("add_bias", include_str!("../../../../shaders/add_bias.wgsl"));
    rec.push(label, &spec, &[y, &bias.buffer], &AddBias { n }, Grid::invocations(n).layers(tokens.rows()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu;
    use crate::backend::gpu::program::StepTable;
    use crate::testing::*;

    /// y[t] += bias on every live row of a chunk, and not past them.
    #[test]
    fn add_bias_matches_cpu() {
        let Some(ctx) = gpu() else { return };
        let (n, b) = (70usize, 3usize);
        let (y, bias) = (random(4 * n, 14, 1.0), random(n, 15, 1.0));
        let mut want = y.clone();
        for r in want.chunks_mut(n).take(b) {
            cpu::add(r, &bias);
        }
        let yb = buf(&ctx, "y", &y);
        let bt = vector(&ctx, "bias", &bias);
        let steps = StepTable::chunk(&ctx).unwrap();
        steps.set_chunk(&ctx.queue, 0, b);
        let mut rec = Recorder::new(&ctx);
        record(&mut rec, Tokens::Chunk(4), "bias".into(), &yb, &bt).unwrap();
        rec.finish("bias", Some(&steps)).unwrap().run(&ctx, &steps, 0);
        assert_eq!(read(&ctx, &yb), want);
    }
}
