//! RMSNorm of token rows: out[t] (+)= x[t] / sqrt(mean(x[t]²) + eps) ⊙ w (`shaders/rmsnorm.wgsl`).

use crate::backend::gpu::program::{Grid, Recorder};
use crate::backend::gpu::shader::Spec;
use crate::backend::gpu::weights::Tensor;
use crate::error::Result;
use crate::params;

use super::{Tokens, Write};

params! {
    pub struct RmsNorm {
        /// Elements per row.
        pub n: u32,
        pub eps: f32,
        /// 1: norm only the chunk's last row, into row 0 (the head).
        pub last: u32,
        /// 1: add the normed row to out.
        pub add: u32,
    }
}

/// Which token rows a norm covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormRows {
    /// Every live row of the chunk, each in place.
    Each,
    /// Only the chunk's last row, written into row 0 (the head: logits of the last position).
    LastIntoFirst,
}

/// out[t] (+)= x[t] / sqrt(mean(x[t]²) + eps) ⊙ weight for the token rows `rows` says; one
/// workgroup per row.
#[allow(clippy::too_many_arguments)]
pub fn record(
    rec: &mut Recorder,
    tokens: Tokens,
    label: String,
    out: &wgpu::Buffer,
    x: &wgpu::Buffer,
    (weight, eps): (&Tensor, f32),
    rows: NormRows,
    write: Write,
) -> Result<()> {
    let p = RmsNorm { n: weight.cols(), eps, last: (rows == NormRows::LastIntoFirst) as u32, add: write.flag() };
    let spec = Spec::new("rmsnorm", include_str!("../../../../shaders/rmsnorm.wgsl"));
    rec.push(label, &spec, &[out, x, &weight.buffer], &p, Grid::workgroups(1).layers(tokens.rows()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu;
    use crate::backend::gpu::program::StepTable;
    use crate::testing::*;

    /// out = rmsnorm(x) ⊙ w, and the post-norm form out += rmsnorm(x) ⊙ w.
    #[test]
    fn rmsnorm_matches_cpu() {
        for ctx in gpus() {
            eprintln!("subgroups: {}", ctx.subgroups);
            let n = 100;
            let (x, w, y) = (random(n, 3, 2.0), random(n, 4, 1.0), random(n, 5, 1.0));
            let mut want = vec![0.0; n];
            cpu::rmsnorm(&mut want, &x, &w, 1e-5);
            let xb = buf(&ctx, "x", &x);
            let wt = vector(&ctx, "w", &w);
            for write in [Write::Set, Write::Add] {
                let out = buf(&ctx, "out", &y);
                let mut rec = Recorder::new(&ctx);
                record(&mut rec, Tokens::One, "rmsnorm".into(), &out, &xb, (&wt, 1e-5), NormRows::Each, write).unwrap();
                let steps = StepTable::new(&ctx, 1).unwrap();
                rec.finish("rmsnorm", Some(&steps)).unwrap().run(&ctx, &steps, 0);
                let want: Vec<f32> = match write {
                    Write::Set => want.clone(),
                    Write::Add => want.iter().zip(&y).map(|(a, b)| a + b).collect(),
                };
                assert_close(&format!("rmsnorm {write:?}"), &read(&ctx, &out), &want, 1e-5);
            }
        }
    }
}
