//! RMSNorm of each q and k head in place, before RoPE (Qwen 3, Gemma 3; `shaders/head_norm.wgsl`).

use crate::backend::gpu::program::{Grid, Recorder};
use crate::backend::gpu::shader::Spec;
use crate::backend::gpu::weights::Tensor;
use crate::error::Result;
use crate::params;

use super::{Heads, Tokens};

params! {
    pub struct HeadNorm {
        pub n_heads: u32,
        pub n_kv_heads: u32,
        pub head_dim: u32,
        pub eps: f32,
    }
}

/// RMSNorm of each q and k head of every token's qkv row, in place (q heads with `norms[0]`,
/// k heads with `norms[1]`, both [d_h]); one workgroup per (head, token).
pub fn record(
    rec: &mut Recorder,
    tokens: Tokens,
    label: String,
    qkv: &wgpu::Buffer,
    norms: [&Tensor; 2],
    heads: Heads,
    eps: f32,
) -> Result<()> {
    let p = HeadNorm { n_heads: heads.n_heads, n_kv_heads: heads.n_kv_heads, head_dim: heads.head_dim, eps };
    let grid = Grid::workgroups(heads.n_heads + heads.n_kv_heads).layers(tokens.rows());
    let spec = Spec::new("head_norm", include_str!("../../../../shaders/head_norm.wgsl"));
    rec.push(label, &spec, &[qkv, &norms[0].buffer, &norms[1].buffer], &p, grid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu;
    use crate::backend::gpu::program::StepTable;
    use crate::testing::*;

    /// Each q and k head of two token rows normed in place with its own weights; v untouched.
    #[test]
    fn head_norm_matches_cpu() {
        for ctx in gpus() {
            let (h, hkv, hd, b) = (4usize, 2usize, 48usize, 2usize);
            let row = (h + 2 * hkv) * hd;
            let qkv = random(b * row, 11, 3.0);
            let (qn, kn) = (random(hd, 12, 1.0), random(hd, 13, 1.0));
            let mut want = qkv.clone();
            for r in want.chunks_mut(row) {
                for (e, head) in r[..(h + hkv) * hd].chunks_mut(hd).enumerate() {
                    let x = head.to_vec();
                    cpu::rmsnorm(head, &x, if e < h { &qn } else { &kn }, 1e-6);
                }
            }
            let qb = buf(&ctx, "qkv", &qkv);
            let (qt, kt) = (vector(&ctx, "q norm", &qn), vector(&ctx, "k norm", &kn));
            let heads = Heads { n_heads: h as u32, n_kv_heads: hkv as u32, head_dim: hd as u32 };
            let steps = StepTable::chunk(&ctx).unwrap();
            steps.set_chunk(&ctx.queue, 0, b);
            let mut rec = Recorder::new(&ctx);
            record(&mut rec, Tokens::Chunk(4), "qk_norm".into(), &qb, [&qt, &kt], heads, 1e-6).unwrap();
            rec.finish("qk_norm", Some(&steps)).unwrap().run(&ctx, &steps, 0);
            assert_close("head norm", &read(&ctx, &qb), &want, 1e-5);
        }
    }
}
