//! Token embedding: X[t] = E[tokens[pos + t]] · scale (`shaders/embed.wgsl`).

use crate::backend::gpu::program::{Grid, Recorder};
use crate::backend::gpu::shader::Spec;
use crate::backend::gpu::weights::Part;
use crate::core::quant::GgmlType;
use crate::error::Result;
use crate::params;

use super::Tokens;

params! {
    pub struct Embed {
        /// d
        pub dim: u32,
        pub row_bytes: u32,
        /// The row is multiplied by this (√d for Gemma).
        pub scale: f32,
        /// The part of the table this dispatch holds: rows first_row .. first_row + rows.
        pub first_row: u32,
        pub rows: u32,
    }
}

fn spec(t: GgmlType) -> Spec {
    Spec::new(format!("embed_{}", t.name().to_lowercase()), include_str!("../../../../shaders/embed.wgsl")).weights(t)
}

/// X[t] = E[tokens[pos + t]] · scale into `out` ([B × d]), one invocation per 32-element block
/// of a row; one dispatch per part of the table, each writing the tokens whose rows it holds.
pub fn record(rec: &mut Recorder, tokens: Tokens, out: &wgpu::Buffer, table: &[Part], ids: &wgpu::Buffer, scale: f32) -> Result<()> {
    for (i, part) in table.iter().enumerate() {
        let t = &part.tensor;
        let (dim, row_bytes) = (t.cols(), t.row_bytes());
        let p = Embed { dim, row_bytes, scale, first_row: part.first_row, rows: t.rows() };
        let grid = Grid::invocations(dim / 32).layers(tokens.rows());
        let label = if table.len() == 1 { "embed".to_string() } else { format!("embed part {i}") };
        rec.push(label, &spec(t.ty), &[out, &t.buffer, ids], &p, grid)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::gpu::program::StepTable;
    use crate::core::quant::dequantize_vec;
    use crate::testing::*;

    /// x = E[tokens[pos]] for every type: decoding is exact (the same f32 operations in the same
    /// order as the CPU), so the rows must be bit-identical.
    #[test]
    fn embed_matches_dequantised_row() {
        let Some(ctx) = gpu() else { return };
        let vocab = 40usize;
        let tokens: Vec<u32> = vec![5, 39, 0, 17];
        for (i, ty) in GgmlType::ALL.into_iter().enumerate() {
            let dim = cols_for(ty);
            let e_bytes = random_blocks(ty, vocab * dim, 20 + i as u64, 1.0);
            let e = dequantize_vec(ty, &e_bytes, vocab * dim);
            let table = tensor(&ctx, ty, &e_bytes, vocab, dim);
            let tok = ctx.storage_with("tokens", bytemuck::cast_slice(&tokens)).unwrap();
            let x = ctx.storage("x", dim as u64 * 4).unwrap();
            let steps = StepTable::new(&ctx, tokens.len()).unwrap();
            let mut rec = Recorder::new(&ctx);
            let table = [Part { first_row: 0, tensor: table }];
            record(&mut rec, Tokens::One, &x, &table, &tok, 1.0).unwrap();
            let prog = rec.finish("embed", Some(&steps)).unwrap();
            for (pos, &t) in tokens.iter().enumerate() {
                prog.run(&ctx, &steps, pos);
                let want = &e[t as usize * dim..][..dim];
                assert_eq!(read(&ctx, &x), want, "{ty:?} row {t} at pos {pos}");
            }
        }
    }
}
