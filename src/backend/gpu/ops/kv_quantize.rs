//! The cache append of a block cache (Q8_0 or Q4_0): each token's k (turned by `rope_kv`) and v
//! coded from its qkv row into its cache row (`shaders/kv_quantize.wgsl`, which gives the layout).

use crate::backend::gpu::kv_cache::BlockLayout;
use crate::backend::gpu::program::{Grid, Recorder};
use crate::backend::gpu::shader::Spec;
use crate::core::config::KvType;
use crate::error::Result;
use crate::params;

use super::{Heads, Tokens};

params! {
    pub struct KvQuantize {
        /// h·d_h / 4: vec4s of q in a qkv row.
        pub q4: u32,
        /// h_kv·d_h / 4: vec4s of k (and of v) in a qkv row and a cache row.
        pub kv4: u32,
        /// R: cache rows (position p is row p mod R).
        pub rows: u32,
        /// The word where the blocks' scales start.
        pub scales: u32,
    }
}

fn spec(kv: KvType) -> Spec {
    Spec::new("kv_quantize", include_str!("../../../../shaders/kv_quantize.wgsl")).flag("kv_q8_0", kv == KvType::Q8_0)
}

/// Codes token t's k and v (from `qkv`, [B × qkv_row]) into row (pos + t) mod `rows` of the
/// block caches `k_cache` and `v_cache`, laid out as `layout` says.
pub fn record(
    rec: &mut Recorder,
    tokens: Tokens,
    label: String,
    caches: [&wgpu::Buffer; 2],
    qkv: &wgpu::Buffer,
    heads: Heads,
    layout: BlockLayout,
) -> Result<()> {
    let p = KvQuantize { q4: heads.n_heads * heads.head_dim / 4, kv4: layout.kv4, rows: layout.rows, scales: layout.scales };
    // One invocation per 64 values of k or v (two blocks: one word of scales).
    let grid = Grid::invocations(2 * layout.kv4 / 16).layers(tokens.rows());
    rec.push(label, &spec(layout.ty), &[caches[0], caches[1], qkv], &p, grid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::gpu::program::StepTable;
    use crate::core::quant::quantize;
    use crate::testing::*;

    /// ggml's blocks of a row (d, then the codes, per block) in the cache's layout: the codes of
    /// every row, then the scales.
    fn ggml_to_layout(ty: KvType, rows: &[Vec<u8>]) -> Vec<u32> {
        let g = ty.blocks().unwrap();
        let (block, code_bytes) = (g.block_bytes(), g.block_bytes() - 2);
        let mut codes = Vec::new();
        let mut scales = Vec::new();
        for row in rows {
            for b in row.chunks_exact(block) {
                scales.extend_from_slice(&b[..2]);
                codes.extend_from_slice(&b[2..2 + code_bytes]);
            }
        }
        codes.extend(scales);
        codes.chunks_exact(4).map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]])).collect()
    }

    /// Three tokens from position 5 into a ring of 4 rows, bit for bit as `core::quant::quantize`
    /// codes them: rows 1, 2 and 3 written (positions 5, 6, 7), row 0 left as it was. The blocks
    /// hold exact halves (Q8_0 rounds them away from zero) and a tie of largest magnitude ±m
    /// (Q4_0 takes the first).
    #[test]
    fn block_codes_match_ggml() {
        let Some(ctx) = gpu() else { return };
        let heads = Heads { n_heads: 4, n_kv_heads: 2, head_dim: 64 };
        let (row, kv, d) = (heads.qkv_row() as usize, 128usize, 256usize);
        let (b, pos, rows) = (3usize, 5usize, 4usize);
        let mut qkv = random(b * row, 17, 3.0);
        // Token 0's k block 0: max 127 (d = 1), halves 2.5 and −3.5; block 1: +6 first, −6 later.
        qkv[d..d + 32].iter_mut().enumerate().for_each(|(i, x)| *x = [127.0, 2.5, -3.5, 0.25][i % 4]);
        qkv[d + 32..d + 64].iter_mut().enumerate().for_each(|(i, x)| *x = [6.0, 1.0, -6.0, 0.0][i % 4]);
        for ty in [KvType::Q8_0, KvType::Q4_0] {
            let layout = BlockLayout::new(ty, rows as u32, kv as u32);
            let bytes = ty.row_bytes(kv) * rows as u64;
            let (kc, vc) = (ctx.storage("k", bytes).unwrap(), ctx.storage("v", bytes).unwrap());
            let qb = buf(&ctx, "qkv", &qkv);
            let mut rec = Recorder::new(&ctx);
            record(&mut rec, Tokens::Chunk(b as u32), "kv_quantize".into(), [&kc, &vc], &qb, heads, layout).unwrap();
            let steps = StepTable::chunk(&ctx).unwrap();
            steps.set_chunk(&ctx.queue, pos, b);
            rec.finish("kv_quantize", Some(&steps)).unwrap().run(&ctx, &steps, 0);
            for (name, cache, at) in [("k", &kc, d), ("v", &vc, d + kv)] {
                let want_rows: Vec<Vec<u8>> = (0..rows)
                    .map(|r| match (0..b).find(|t| (pos + t) % rows == r) {
                        Some(t) => quantize(ty.blocks().unwrap(), &qkv[t * row + at..][..kv]),
                        None => vec![0; ty.row_bytes(kv) as usize],
                    })
                    .collect();
                let got: Vec<u32> = read(&ctx, cache).iter().map(|x| x.to_bits()).collect();
                assert_eq!(got, ggml_to_layout(ty, &want_rows), "{} {name}", ty.name());
            }
        }
    }
}
