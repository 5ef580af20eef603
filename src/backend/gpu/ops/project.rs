//! Projections: out[t, offset + r] (+)= Σ_c W[r, c] · x[t, c] for a weight tensor of any ggml
//! type, one kernel source (`shaders/matmul.wgsl`) tiled for one token (the mat-vec) or for a
//! chunk's rows (the mat-mul).

use crate::backend::gpu::program::{Grid, Recorder};
use crate::backend::gpu::shader::Spec;
use crate::backend::gpu::weights::Tensor;
use crate::core::quant::GgmlType;
use crate::error::{Error, Result};
use crate::params;

use super::{Rows, Tokens, Write};

params! {
    /// The mat-mul over a chunk's token rows, and the mat-vec (one token; the strides unused).
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
    }
}

/// The kernel for weights of type `t` with a register tile of `rows` weight rows × `tokens`.
fn spec(t: GgmlType, rows: u32, tokens: u32) -> Spec {
    let kind = if tokens == 1 { "matvec" } else { "matmul" };
    Spec::new(format!("{kind}_{}", t.name().to_lowercase()), include_str!("../../../../shaders/matmul.wgsl")).weights(t).tile(rows, tokens)
}

/// out[t, offset + r] (+)= Σ_c W[r, c] · x[t, c] for the tokens `tokens` covers, tiled as the
/// adapter's tuning says.
pub fn record(rec: &mut Recorder, tokens: Tokens, label: String, w: &Tensor, out: Rows, x: Rows, write: Write) -> Result<()> {
    if x.offset != 0 {
        return Err(Error::Gpu(format!("{label}: the projection kernels read x from the start of its row")));
    }
    let (rows, cols, row_bytes) = (w.rows(), w.cols(), w.row_bytes());
    let tuning = rec.ctx().tuning;
    let buffers = [out.buf, &w.buffer, x.buf];
    let p = MatMul { rows, cols, row_bytes, out_offset: out.offset, accumulate: write.flag(), y_stride: out.stride, x_stride: x.stride };
    match tokens {
        Tokens::One => {
            let r = tuning.matvec_rows;
            rec.push(label, &spec(w.ty, r, 1), &buffers, &p, Grid::invocations(rows.div_ceil(r)))
        }
        Tokens::Chunk(b) => {
            let (r, t) = (tuning.matmul_rows, tuning.matmul_tokens);
            rec.push(label, &spec(w.ty, r, t), &buffers, &p, Grid::invocations(rows.div_ceil(r)).layers(b.div_ceil(t)))
        }
    }
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
