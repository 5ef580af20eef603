//! The KV cache: per layer, one K and one V buffer of [R × h_kv · d_h] values, allocated once for
//! the whole context: R = T rows, or on a sliding-window layer (and under a `window-N` policy) a
//! ring of rows. Position `pos` lives in row pos mod R, written by the step that processes it; a
//! step at position `pos` reads the rows of the positions it attends. Which positions are filled
//! is the engine's to know (`Engine::position`).
//!
//! Values are kept as f32, f16 (pairs packed in u32 words), or ggml's Q8_0 / Q4_0 blocks of 32
//! (`BlockLayout`): the bytes of ggml's blocks, with the codes of every row first and the blocks'
//! f16 scales after them, so that a vec4 of values is one word of codes (Q8_0) or half of one
//! (Q4_0) and the kernels read whole words.

use crate::backend::gpu::GpuContext;
use crate::core::config::{ring_rows, Config, KvType};
use crate::core::kv_policy::{Eviction, KvPolicy};
use crate::error::Result;

pub struct KvCache {
    pub k: Vec<wgpu::Buffer>,
    pub v: Vec<wgpu::Buffer>,
    /// T: positions.
    pub capacity: usize,
    /// R per layer: T, or the ring of a sliding-window layer or a `window-N` policy.
    pub rows: Vec<usize>,
    /// W per layer: the positions a query attends (0: every one).
    pub windows: Vec<usize>,
    pub ty: KvType,
}

/// Where a block cache's parts lie in one layer's K (or V) buffer of R rows, in u32 words:
/// codes [R × kv4] (Q8_0: four bytes a word) or [R × kv4 / 2] (Q4_0: eight nibbles), then the
/// scales [R × kv4 / 16] (two f16 a word: the row's blocks 2i and 2i + 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockLayout {
    pub ty: KvType,
    /// R
    pub rows: u32,
    /// h_kv · d_h / 4: vec4s of a row.
    pub kv4: u32,
    /// The word where the scales start.
    pub scales: u32,
}

impl BlockLayout {
    /// The layout of `rows` rows of `kv_dim` values (a multiple of 64: a word of scales holds two
    /// blocks of one row).
    pub fn new(ty: KvType, rows: u32, kv_dim: u32) -> Self {
        debug_assert!(ty.blocks().is_some() && kv_dim.is_multiple_of(64));
        let kv4 = kv_dim / 4;
        let code_words = if ty == KvType::Q8_0 { kv4 } else { kv4 / 2 };
        BlockLayout { ty, rows, kv4, scales: rows * code_words }
    }

    /// Byte ranges (start, length) of rows `from..R`: their codes, then their scales.
    pub fn row_ranges(&self, from: u32) -> [(u64, u64); 2] {
        let (code_row, scale_row) = (self.scales as u64 * 4 / self.rows as u64, self.kv4 as u64 / 16 * 4);
        let n = (self.rows - from.min(self.rows)) as u64;
        [(from as u64 * code_row, n * code_row), (self.scales as u64 * 4 + from as u64 * scale_row, n * scale_row)]
    }
}

impl KvCache {
    pub fn new(ctx: &GpuContext, cfg: &Config, capacity: usize, policy: KvPolicy) -> Result<Self> {
        let (rows, windows) = Self::rings(cfg, capacity, policy.eviction);
        let ty = policy.precision;
        let mut k = Vec::with_capacity(cfg.n_layers);
        let mut v = Vec::with_capacity(cfg.n_layers);
        for (l, &r) in rows.iter().enumerate() {
            let bytes = cfg.kv_layer_bytes(r, ty);
            k.push(ctx.storage(&format!("L{l}.k_cache"), bytes)?);
            v.push(ctx.storage(&format!("L{l}.v_cache"), bytes)?);
        }
        Ok(KvCache { k, v, capacity, rows, windows, ty })
    }

    /// Per layer, R and W: a sliding-window layer's own window, narrowed to N under `window-N`
    /// (every layer then attends the last N positions, each key turned at its own position, as
    /// the CPU's evicting cache holds them), with the ring a prefill chunk needs past it.
    pub fn rings(cfg: &Config, capacity: usize, eviction: Eviction) -> (Vec<usize>, Vec<usize>) {
        let n = match eviction {
            Eviction::Window { n } => Some(n),
            _ => None,
        };
        (0..cfg.n_layers)
            .map(|l| {
                let own = cfg.is_sliding(l).then_some(cfg.sliding_window);
                match own.into_iter().chain(n).min() {
                    Some(w) => (ring_rows(w, capacity), w),
                    None => (capacity, 0),
                }
            })
            .unzip()
    }

    /// Whether values are stored as f16 (else f32 or blocks).
    pub fn f16(&self) -> bool {
        self.ty == KvType::F16
    }

    /// Layer `l`'s block layout, for a block cache.
    pub fn blocks(&self, l: usize, kv_dim: usize) -> Option<BlockLayout> {
        self.ty.blocks().map(|_| BlockLayout::new(self.ty, self.rows[l] as u32, kv_dim as u32))
    }
}
