//! Projections: out[t, offset + r] (+)= Σ_c W[r, c] · x[t, c] for a weight tensor of any ggml
//! type, one kernel source (`shaders/matmul.wgsl`) tiled for one token (the mat-vec) or for a
//! chunk's rows (the mat-mul).

use bytemuck::Zeroable;

use crate::backend::gpu::ops::attention::{Shape, SPLIT_MERGE};
use crate::backend::gpu::program::{Grid, Recorder};
use crate::backend::gpu::shader::Spec;
use crate::backend::gpu::weights::Tensor;
use crate::core::config::Act;
use crate::core::quant::GgmlType;
use crate::error::{Error, Result};
use crate::params;

use super::{Rows, Tokens, Write};

params! {
    /// The mat-mul over a chunk's token rows, and the mat-vec (one token; the strides unused),
    /// with the fields of the fused decode forms (zero where unused).
    pub struct MatMul {
        pub rows: u32,
        pub cols: u32,
        pub row_bytes: u32,
        /// Elements, within a token's output row.
        pub out_offset: u32,
        /// 0: Y = W·X; 1: Y += W·X.
        pub accumulate: u32,
        /// Elements per token row of Y and of X.
        pub y_stride: u32,
        pub x_stride: u32,
        /// `Input::Norm`, `Input::PreAdd`: RMSNorm's epsilon.
        pub eps: f32,
        /// `Output::Glu`: `Act::code`.
        pub act: u32,
        /// `Input::Merge`: the attention's heads, and where its (M, L) go.
        pub n_heads: u32,
        pub head_dim: u32,
        pub stats_offset: u32,
        pub split: u32,
        pub n_splits: u32,
        pub window: u32,
    }
}

/// The most vec4s of input a staged projection keeps in workgroup memory (14 KiB of the 16 KiB a
/// workgroup may have, the rest for the reductions): d ≤ 3,584.
pub const STAGED_VEC4S: u32 = 896;

/// Whether a decode projection over `cols` inputs can stage them (`Input::Norm`, `PreAdd`,
/// `Merge`).
pub fn stages(cols: u32) -> bool {
    cols / 4 <= STAGED_VEC4S
}

/// Where a projection's input comes from. The staged forms are for one token (decode) and fold
/// the op before the projection into its prologue (`shaders/project_norm.wgsl`,
/// `shaders/project_merge.wgsl`).
#[derive(Clone, Copy)]
pub enum Input<'a> {
    /// X as its rows hold it.
    Rows(Rows<'a>),
    /// rmsnorm(x) ⊙ w: x [d].
    Norm { x: &'a wgpu::Buffer, weight: &'a Tensor, eps: f32 },
    /// A post-norm residual add first (Gemma): x' = x + rmsnorm(sub) ⊙ post, written to
    /// `x_next` (a buffer other than x), then rmsnorm(x') ⊙ w.
    PreAdd { x: &'a wgpu::Buffer, sub: &'a wgpu::Buffer, post: &'a Tensor, x_next: &'a wgpu::Buffer, weight: &'a Tensor, eps: f32 },
    /// Attention's output, merged from the splits of its first pass (`attention::Shape` of the
    /// layer), which also stores the softmax statistics in `att`.
    Merge { part: &'a wgpu::Buffer, att: &'a wgpu::Buffer, shape: &'a Shape },
}

/// What a projection writes.
#[derive(Clone, Copy)]
pub enum Output<'a> {
    /// out (+)= W·x.
    Store(Write),
    /// out = W·x + bias[offset + r].
    Bias(&'a Tensor),
    /// out[r] = act(W[r]·x) · (W[rows/2 + r]·x): a [gate | up] tensor's gated activation.
    Glu(Act),
}

/// The kernel for weights of type `t` with a register tile of `rows` weight rows × `tokens`.
fn spec(t: GgmlType, rows: u32, tokens: u32) -> Spec {
    let kind = if tokens == 1 { "matvec" } else { "matmul" };
    Spec::new(format!("{kind}_{}", t.name().to_lowercase()), include_str!("../../../../shaders/matmul.wgsl")).weights(t).tile(rows, tokens)
}

/// out[t, offset + r] (+)= Σ_c W[r, c] · x[t, c] for the tokens `tokens` covers, tiled as the
/// adapter's tuning says.
pub fn record(rec: &mut Recorder, tokens: Tokens, label: String, w: &Tensor, out: Rows, x: Rows, write: Write) -> Result<()> {
    record_fused(rec, tokens, label, w, out, Input::Rows(x), Output::Store(write))
}

/// A projection with its input's prologue and its output's epilogue (`Input`, `Output`).
pub fn record_fused(rec: &mut Recorder, tokens: Tokens, label: String, w: &Tensor, out: Rows, input: Input, output: Output) -> Result<()> {
    let tuning = rec.ctx().tuning;
    let (r, t) = match tokens {
        Tokens::One => (tuning.matvec_rows, 1),
        Tokens::Chunk(_) => (tuning.matmul_rows, tuning.matmul_tokens),
    };
    let staged = !matches!(input, Input::Rows(_));
    if staged && (tokens != Tokens::One || !stages(w.cols())) {
        return Err(Error::Gpu(format!("{label}: a staged input is for one token of at most {} elements", 4 * STAGED_VEC4S)));
    }
    let rows = if matches!(output, Output::Glu(_)) { w.rows() / 2 } else { w.rows() };
    let mut p =
        MatMul { rows, cols: w.cols(), row_bytes: w.row_bytes(), out_offset: out.offset, y_stride: out.stride, ..Zeroable::zeroed() };
    let mut spec = spec(w.ty, r, t).flag("staged", staged).define("X_VEC4S", if staged { w.cols() / 4 } else { 1 });
    let mut buffers: Vec<&wgpu::Buffer> = vec![out.buf, &w.buffer];
    match output {
        Output::Store(write) => p.accumulate = write.flag(),
        Output::Bias(_) => spec = spec.flag("bias", true),
        Output::Glu(act) => {
            p.act = act.code();
            spec = spec.flag("glu", true);
        }
    }
    match input {
        Input::Rows(x) => {
            if x.offset != 0 {
                return Err(Error::Gpu(format!("{label}: the projection kernels read x from the start of its row")));
            }
            p.x_stride = x.stride;
            buffers.push(x.buf);
        }
        Input::Norm { x, eps, .. } | Input::PreAdd { x, eps, .. } => {
            p.eps = eps;
            buffers.push(x);
            spec = spec
                .shared("project_norm.wgsl", include_str!("../../../../shaders/project_norm.wgsl"))
                .flag("pre_add", matches!(input, Input::PreAdd { .. }));
        }
        Input::Merge { part, shape, .. } => {
            let a = shape;
            (p.n_heads, p.head_dim, p.stats_offset) = (a.heads.n_heads, a.heads.head_dim, a.stats_offset);
            (p.split, p.n_splits, p.window) = (a.split, a.n_splits, a.window);
            // The x binding is unused: bound to `part` (read twice, never written).
            buffers.push(part);
            let (name, src) = SPLIT_MERGE;
            spec = spec.shared(name, src).shared("project_merge.wgsl", include_str!("../../../../shaders/project_merge.wgsl"));
        }
    }
    if let Output::Bias(b) = output {
        buffers.push(&b.buffer);
    }
    match input {
        Input::Norm { weight, .. } => buffers.push(&weight.buffer),
        Input::PreAdd { sub, post, x_next, weight, .. } => buffers.extend([&weight.buffer, sub, &post.buffer, x_next]),
        Input::Merge { part, att, .. } => buffers.extend([part, att]),
        Input::Rows(_) => {}
    }
    let grid = Grid::invocations(rows.div_ceil(r));
    let grid = if let Tokens::Chunk(b) = tokens { grid.layers(b.div_ceil(t)) } else { grid };
    rec.push(label, &spec, &buffers, &p, grid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu;
    use crate::backend::gpu::program::StepTable;
    use crate::core::quant::dequantize_vec;
    use crate::testing::*;

    /// y = W·x (and y += W·x at an offset) for every weight type, against CPU
    /// dequantise-then-multiply of the same random blocks, with the adapter's rows per
    /// invocation and with one.
    #[test]
    fn matvec_matches_cpu_for_every_type() {
        for ctx in gpus() {
            eprintln!("rows per invocation: {:?}", ctx.tuning);
            // 101 rows: not a multiple of the 64-invocation workgroup nor of the rows per invocation.
            let rows = 101usize;
            for (i, ty) in GgmlType::ALL.into_iter().enumerate() {
                let cols = cols_for(ty);
                let x = random(cols, 1, 1.0);
                let w_bytes = random_blocks(ty, rows * cols, 10 + i as u64, 0.5);
                let w_deq = dequantize_vec(ty, &w_bytes, rows * cols);
                let mut want = vec![0.0; rows];
                cpu::matvec(&mut want, &w_deq, &x);

                let w = tensor(&ctx, ty, &w_bytes, rows, cols);
                let xb = buf(&ctx, "x", &x);
                // y = [3 old values | W·x written at offset 3]; then the accumulate form adds W·x again.
                let y = buf(&ctx, "y", &vec![7.0; rows + 3]);
                let (out, x_rows) = (Rows::new(&y, 0).at(3), Rows::new(&xb, 0));
                let steps = StepTable::new(&ctx, 1).unwrap();
                let mut rec = Recorder::new(&ctx);
                record(&mut rec, Tokens::One, "mv".into(), &w, out, x_rows, Write::Set).unwrap();
                let prog = rec.finish("mv", Some(&steps)).unwrap();
                prog.run(&ctx, &steps, 0);
                let got = read(&ctx, &y);
                assert_eq!(&got[..3], &[7.0, 7.0, 7.0], "{ty:?}: wrote before out_offset");
                assert_close(&format!("matvec {ty:?}"), &got[3..], &want, 1e-4);

                let mut rec = Recorder::new(&ctx);
                record(&mut rec, Tokens::One, "mv+".into(), &w, out, x_rows, Write::Add).unwrap();
                rec.finish("mv+", Some(&steps)).unwrap().run(&ctx, &steps, 0);
                let twice: Vec<f32> = want.iter().map(|v| 2.0 * v).collect();
                assert_close(&format!("matvec+ {ty:?}"), &read(&ctx, &y)[3..], &twice, 2e-4);
            }
            ctx.check_errors().unwrap();
        }
    }

    /// The fused decode forms against the CPU for every weight type: the norm in the prologue
    /// (y += W · rmsnorm(x) ⊙ w_n), the post-norm residual add before it (x' = x + rmsnorm(s) ⊙
    /// w_p written to x_next, y = W · rmsnorm(x') ⊙ w_n), the bias (y = W·x + b[offset + r]) and
    /// the gated activation of a [gate | up] tensor (both activations), each at an output offset.
    #[test]
    fn fused_inputs_and_outputs_match_cpu() {
        use crate::core::config::Act;
        for ctx in gpus() {
            eprintln!("rows per invocation: {:?}", ctx.tuning);
            let rows = 101usize;
            for (i, ty) in GgmlType::ALL.into_iter().enumerate() {
                // Wide enough for a prologue with several vec4s per invocation (and K-quants' 256).
                let cols = cols_for(ty).max(512);
                let eps = 1e-5;
                let (x, s) = (random(cols, 60 + i as u64, 1.0), random(cols, 61, 2.0));
                let (wn, wp) = (random(cols, 62, 0.3), random(cols, 63, 0.3));
                let (wn, wp): (Vec<f32>, Vec<f32>) = (wn.iter().map(|v| v + 1.0).collect(), wp.iter().map(|v| v + 1.0).collect());
                let w_bytes = random_blocks(ty, 2 * rows * cols, 70 + i as u64, 0.5);
                let w_deq = dequantize_vec(ty, &w_bytes, 2 * rows * cols);
                let mv = |x: &[f32], n: usize| {
                    let mut y = vec![0.0; n];
                    cpu::matvec(&mut y, &w_deq[..n * cols], x);
                    y
                };
                let mut xn = vec![0.0; cols];
                cpu::rmsnorm(&mut xn, &x, &wn, eps);
                let mut sn = vec![0.0; cols];
                cpu::rmsnorm(&mut sn, &s, &wp, eps);
                let x2: Vec<f32> = x.iter().zip(&sn).map(|(a, b)| a + b).collect();
                let mut x2n = vec![0.0; cols];
                cpu::rmsnorm(&mut x2n, &x2, &wn, eps);

                let w = tensor(&ctx, ty, &w_bytes[..w_bytes.len() / 2], rows, cols);
                let w2 = tensor(&ctx, ty, &w_bytes, 2 * rows, cols);
                let (xb, sb, x_next) = (buf(&ctx, "x", &x), buf(&ctx, "sub", &s), buf(&ctx, "x_next", &vec![0.0; cols]));
                let (wnt, wpt) = (vector(&ctx, "norm", &wn), vector(&ctx, "post", &wp));
                let bias = random(rows + 3, 64, 1.0);
                let bt = vector(&ctx, "bias", &bias);
                let steps = StepTable::new(&ctx, 1).unwrap();
                let run = |input: Input, output: Output, init: f32, n: usize| {
                    let y = buf(&ctx, "y", &vec![init; n + 3]);
                    let mut rec = Recorder::new(&ctx);
                    let wt = if matches!(output, Output::Glu(_)) { &w2 } else { &w };
                    record_fused(&mut rec, Tokens::One, "fused".into(), wt, Rows::new(&y, 0).at(3), input, output).unwrap();
                    rec.finish("fused", Some(&steps)).unwrap().run(&ctx, &steps, 0);
                    let got = read(&ctx, &y);
                    assert_eq!(&got[..3], &[init; 3], "{ty:?}: wrote before out_offset");
                    got[3..].to_vec()
                };
                let norm = Input::Norm { x: &xb, weight: &wnt, eps };
                let want: Vec<f32> = mv(&xn, rows).iter().map(|v| v + 7.0).collect();
                assert_close(&format!("{ty:?}: y += W · rmsnorm(x)"), &run(norm, Output::Store(Write::Add), 7.0, rows), &want, 2e-4);
                let pre = Input::PreAdd { x: &xb, sub: &sb, post: &wpt, x_next: &x_next, weight: &wnt, eps };
                assert_close(
                    &format!("{ty:?}: W · rmsnorm(x + rmsnorm(sub))"),
                    &run(pre, Output::Store(Write::Set), 7.0, rows),
                    &mv(&x2n, rows),
                    2e-4,
                );
                assert_close(&format!("{ty:?}: x_next"), &read(&ctx, &x_next), &x2, 1e-5);
                let want: Vec<f32> = mv(&x, rows).iter().zip(&bias[3..]).map(|(a, b)| a + b).collect();
                assert_close(
                    &format!("{ty:?}: W·x + bias"),
                    &run(Input::Rows(Rows::new(&xb, 0)), Output::Bias(&bt), 7.0, rows),
                    &want,
                    2e-4,
                );
                for act in [Act::Silu, Act::GeluTanh] {
                    let both = mv(&xn, 2 * rows);
                    let mut want = vec![0.0; rows];
                    cpu::glu(&mut want, &both[..rows], &both[rows..], act);
                    assert_close(&format!("{ty:?}: {act:?}(W_g · xn) ⊙ W_u · xn"), &run(norm, Output::Glu(act), 7.0, rows), &want, 2e-4);
                }
            }
            ctx.check_errors().unwrap();
        }
    }

    /// The staged forms refuse what they cannot take, by name: a chunk, and more inputs than
    /// workgroup memory holds.
    #[test]
    fn staged_inputs_refuse_shapes_they_cannot_take() {
        let Some(ctx) = crate::testing::gpu() else { return };
        let cols = 4 * STAGED_VEC4S as usize + 32;
        let w = tensor(&ctx, GgmlType::F32, bytemuck::cast_slice(&vec![0.0f32; 2 * cols]), 2, cols);
        let (x, y) = (buf(&ctx, "x", &vec![1.0; cols]), buf(&ctx, "y", &[0.0; 2]));
        let wn = vector(&ctx, "norm", &vec![1.0; cols]);
        let input = Input::Norm { x: &x, weight: &wn, eps: 1e-5 };
        let mut rec = Recorder::new(&ctx);
        let err = record_fused(&mut rec, Tokens::One, "wide".into(), &w, Rows::new(&y, 0), input, Output::Store(Write::Set))
            .expect_err("too wide");
        assert!(err.to_string().contains("wide") && err.to_string().contains("at most 3584"), "{err}");
        let err = record_fused(&mut rec, Tokens::Chunk(8), "chunk".into(), &w, Rows::new(&y, 0), input, Output::Store(Write::Set))
            .expect_err("a chunk");
        assert!(err.to_string().contains("chunk") && err.to_string().contains("one token"), "{err}");
    }

    /// Y = W·X over the rows of a chunk for every weight type: 11 tokens (not a multiple of the
    /// 8-token tile) into rows with a stride and offset, an odd number of weight rows, then the
    /// accumulate form; rows past the chunk are left alone.
    #[test]
    fn matmul_matches_cpu_for_every_type() {
        for ctx in gpus() {
            eprintln!("rows per invocation: {:?}", ctx.tuning);
            // 71 rows: the last invocation's second row lies past the end.
            let (rows, n, b) = (71usize, 11usize, 16usize);
            for (i, ty) in GgmlType::ALL.into_iter().enumerate() {
                let cols = cols_for(ty);
                let (y_stride, x_stride, off) = (rows + 5, cols + 4, 2usize);
                let x = random(b * x_stride, 31, 1.0);
                let w_bytes = random_blocks(ty, rows * cols, 40 + i as u64, 0.5);
                let w_deq = dequantize_vec(ty, &w_bytes, rows * cols);
                let mut want = vec![7.0; b * y_stride];
                for t in 0..n {
                    let mut y = vec![0.0; rows];
                    cpu::matvec(&mut y, &w_deq, &x[t * x_stride..][..cols]);
                    want[t * y_stride + off..][..rows].copy_from_slice(&y);
                }
                let w = tensor(&ctx, ty, &w_bytes, rows, cols);
                let (xb, y) = (buf(&ctx, "x", &x), buf(&ctx, "y", &vec![7.0; b * y_stride]));
                let steps = StepTable::chunk(&ctx).unwrap();
                steps.set_chunk(&ctx.queue, 5, n);
                let (out, x_rows) = (Rows::new(&y, y_stride as u32).at(off as u32), Rows::new(&xb, x_stride as u32));
                let mut rec = Recorder::new(&ctx);
                record(&mut rec, Tokens::Chunk(b as u32), "mm".into(), &w, out, x_rows, Write::Set).unwrap();
                rec.finish("mm", Some(&steps)).unwrap().run(&ctx, &steps, 0);
                assert_close(&format!("matmul {ty:?}"), &read(&ctx, &y), &want, 1e-4);

                let mut rec = Recorder::new(&ctx);
                record(&mut rec, Tokens::Chunk(b as u32), "mm+".into(), &w, out, x_rows, Write::Add).unwrap();
                rec.finish("mm+", Some(&steps)).unwrap().run(&ctx, &steps, 0);
                for t in 0..n {
                    for v in &mut want[t * y_stride + off..][..rows] {
                        *v *= 2.0;
                    }
                }
                assert_close(&format!("matmul+ {ty:?}"), &read(&ctx, &y), &want, 2e-4);
            }
            ctx.check_errors().unwrap();
        }
    }
}
