//! The next-token table on the GPU: the softmax statistics and the `TOP_K` largest logits, in
//! two passes (`shaders/top_k.wgsl` per slice of the logits, `shaders/top_k_merge.wgsl`), so that
//! a token reads back 136 bytes, not a [V] row. The two passes share their merge
//! (`shaders/top_k_io.wgsl`).

use crate::backend::gpu::program::{Grid, Recorder};
use crate::backend::gpu::shader::Spec;
use crate::backend::TOP_K;
use crate::core::sampler::TokenProb;
use crate::error::Result;
use crate::params;

params! {
    pub struct TopK {
        /// V
        pub n: u32,
        /// Logits per workgroup.
        pub chunk: u32,
    }
}

params! {
    pub struct TopKMerge {
        /// Workgroups of pass 1.
        pub slices: u32,
    }
}

/// Slices of the logits in pass 1 (at most the 64 invocations of the merge's workgroup).
pub const SLICES: u32 = 64;

/// u32 words of the result: [max, sum, TOP_K × (id, logit)].
pub const WORDS: usize = 2 + 2 * TOP_K;

fn spec(label: &str, file: &'static str) -> Spec {
    Spec::new(label, file).shared("top_k_io.wgsl", include_str!("../../../../shaders/top_k_io.wgsl")).define("K", TOP_K as u32)
}

/// The softmax statistics and the `TOP_K` largest of `n` logits into `out` (`WORDS`), through
/// `part` ([SLICES × WORDS] u32): one workgroup per slice, then one to merge.
pub fn record(rec: &mut Recorder, out: &wgpu::Buffer, part: &wgpu::Buffer, logits: &wgpu::Buffer, n: u32) -> Result<()> {
    let p = TopK { n, chunk: n.div_ceil(SLICES) };
    rec.push("top_k", &spec("top_k", include_str!("../../../../shaders/top_k.wgsl")), &[part, logits], &p, Grid::workgroups(SLICES))?;
    let merge = spec("top_k_merge", include_str!("../../../../shaders/top_k_merge.wgsl"));
    rec.push("top_k_merge", &merge, &[out, part], &TopKMerge { slices: SLICES }, Grid::workgroups(1))
}

/// The table from the result's words: (id, softmax probability) of each entry, most probable
/// first; entries past the vocabulary are left out.
pub fn decode(raw: &[u32; WORDS], out: &mut Vec<TokenProb>) {
    let (max, sum) = (f32::from_bits(raw[0]), f32::from_bits(raw[1]));
    out.clear();
    for e in raw[2..].chunks_exact(2).filter(|e| e[0] != u32::MAX) {
        out.push(TokenProb { id: e[0], p: (f32::from_bits(e[1]) - max).exp() / sum });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::gpu::program::StepTable;
    use crate::testing::*;

    /// The 16 largest logits in order (ties to the lower index, one tie straddling two slices)
    /// with their softmax probabilities, against `sampler::top_k`; vocabularies larger than,
    /// equal to and smaller than the 16 × 64 entries the passes hold.
    #[test]
    fn top_k_matches_cpu() {
        let Some(ctx) = gpu() else { return };
        for (seed, n) in [(4u64, 262_144usize), (5, 49152), (6, 1000), (7, 9)] {
            let mut logits = random(n, seed, 10.0);
            let hi = logits.iter().copied().fold(f32::MIN, f32::max);
            for i in [n / 3, n - 1, 1] {
                logits[i] = hi + 0.5;
            }
            let want = crate::core::sampler::top_k(&logits, TOP_K, 1.0);
            let out = ctx.storage("out", WORDS as u64 * 4).unwrap();
            let part = ctx.storage("part", (SLICES as usize * WORDS) as u64 * 4).unwrap();
            let l = buf(&ctx, "logits", &logits);
            let mut rec = Recorder::new(&ctx);
            record(&mut rec, &out, &part, &l, n as u32).unwrap();
            rec.finish("top_k", None).unwrap().run(&ctx, &StepTable::new(&ctx, 1).unwrap(), 0);
            let raw: Vec<u32> = read(&ctx, &out).iter().map(|v| v.to_bits()).collect();
            assert_eq!(f32::from_bits(raw[0]), hi + 0.5, "n = {n}: max");
            let mut got = Vec::new();
            decode(raw.as_slice().try_into().unwrap(), &mut got);
            assert_eq!(got.iter().map(|g| g.id).collect::<Vec<_>>(), want.iter().map(|w| w.id).collect::<Vec<_>>(), "n = {n}: ids");
            for (g, w) in got.iter().zip(&want) {
                assert!((g.p - w.p).abs() <= 1e-5 * w.p.max(1e-3), "n = {n}: p({}) = {} vs {}", w.id, g.p, w.p);
            }
        }
    }
}
