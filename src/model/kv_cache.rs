//! The KV cache: per layer, one K and one V buffer of [T × h_kv · d_h] f32 (or f16 pairs packed in
//! u32 words), allocated once for
//! the whole context. Row `pos` is written by the step that processes position `pos`; a step at
//! position `pos` reads rows 0..=pos. `len` is the fill counter.

use crate::config::Config;
use crate::error::Result;
use crate::gpu::GpuContext;

pub struct KvCache {
    pub k: Vec<wgpu::Buffer>,
    pub v: Vec<wgpu::Buffer>,
    /// T: rows per layer.
    pub capacity: usize,
    /// Rows in use (the same in every layer).
    pub len: usize,
    /// Bytes per cached value.
    pub elem_bytes: usize,
}

impl KvCache {
    pub fn new(ctx: &GpuContext, cfg: &Config, capacity: usize, f16: bool) -> Result<Self> {
        let elem_bytes = if f16 { 2 } else { 4 };
        let bytes = (capacity * cfg.kv_dim() * elem_bytes) as u64;
        let mut k = Vec::with_capacity(cfg.n_layers);
        let mut v = Vec::with_capacity(cfg.n_layers);
        for l in 0..cfg.n_layers {
            k.push(ctx.storage(&format!("L{l}.k_cache"), bytes)?);
            v.push(ctx.storage(&format!("L{l}.v_cache"), bytes)?);
        }
        Ok(KvCache { k, v, capacity, len: 0, elem_bytes })
    }

    /// Whether values are stored as f16 (else f32).
    pub fn f16(&self) -> bool {
        self.elem_bytes == 2
    }

    /// Bytes allocated for K and V over all layers.
    pub fn bytes_allocated(&self) -> u64 {
        self.k.iter().chain(&self.v).map(|b| b.size()).sum()
    }
}
