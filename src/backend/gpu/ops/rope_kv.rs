//! RoPE on each token's q (in place) and k (into its cache row), v copied to its cache row: the
//! cache append fused with the rotation (`shaders/rope_kv.wgsl`).

use crate::backend::gpu::program::{Grid, Recorder};
use crate::backend::gpu::shader::Spec;
use crate::core::config::KvType;
use crate::error::Result;
use crate::params;

use super::{Heads, Tokens};

params! {
    pub struct RopeKv {
        pub n_heads: u32,
        pub n_kv_heads: u32,
        pub head_dim: u32,
        /// R: cache rows (position p is row p mod R).
        pub rows: u32,
    }
}

/// What `rope_kv` reads and writes.
pub struct RopeKvBuffers<'a> {
    /// [B × qkv_row]: q turned in place.
    pub qkv: &'a wgpu::Buffer,
    /// [R × h_kv · d_h] each: row (pos + t) mod R receives token t's k (turned) and v.
    pub k_cache: &'a wgpu::Buffer,
    pub v_cache: &'a wgpu::Buffer,
    /// [T × d_h/2] (cos, sin) of the layer's RoPE.
    pub table: &'a wgpu::Buffer,
    /// R: the cache's rows.
    pub rows: u32,
}

fn spec(kv: KvType, neox: bool) -> Spec {
    Spec::new(if neox { "rope_kv_neox" } else { "rope_kv" }, include_str!("../../../../shaders/rope_kv.wgsl"))
        .flag("kv_f16", kv == KvType::F16)
        .flag("kv_blocks", kv.blocks().is_some())
        .constant("NEOX", neox as u32)
}

/// RoPE on each token's q (in place) and k (into cache row (pos + t) mod R), v copied to its cache
/// row; adjacent pairs, or with `neox` the halves of each head.
pub fn record(rec: &mut Recorder, tokens: Tokens, label: String, b: &RopeKvBuffers, heads: Heads, kv: KvType, neox: bool) -> Result<()> {
    let p = RopeKv { n_heads: heads.n_heads, n_kv_heads: heads.n_kv_heads, head_dim: heads.head_dim, rows: b.rows };
    // One invocation per adjacent pair; NeoX: per two pairs that turn together.
    let units = heads.qkv_row() / if neox { 4 } else { 2 };
    let grid = Grid::invocations(units).layers(tokens.rows());
    rec.push(label, &spec(kv, neox), &[b.qkv, b.k_cache, b.v_cache, b.table], &p, grid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::gpu::shader::{slots, Slot::*};

    /// The plain variant names no packed-f16 cache; the f16 one packs pairs.
    #[test]
    fn one_source_serves_both_caches() {
        for neox in [false, true] {
            let plain = spec(KvType::F32, neox).source(false);
            let code: String = plain.lines().map(|l| l.split("//").next().unwrap_or("")).collect();
            assert!(!code.contains("2x16float") && !plain.contains("//#"));
            assert!(spec(KvType::F16, neox).source(false).contains("pack2x16float"));
        }
        assert_eq!(slots(&spec(KvType::F16, true).source(false)), [Out, Out, Out, In, Params, Step]);
    }
}
