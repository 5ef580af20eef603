//! The KV cache: per layer, one K and one V buffer of [T × h_kv · d_h] f32 (or f16 pairs packed in
//! u32 words), allocated once for the whole context. Row `pos` is written by the step that
//! processes position `pos`; a step at position `pos` reads rows 0..=pos. Which rows are filled
//! is the engine's to know (`Engine::position`).

use crate::config::{Config, KvType};
use crate::error::Result;
use crate::gpu::GpuContext;

pub struct KvCache {
    pub k: Vec<wgpu::Buffer>,
    pub v: Vec<wgpu::Buffer>,
    /// T: rows per layer.
    pub capacity: usize,
    pub ty: KvType,
}

impl KvCache {
    pub fn new(ctx: &GpuContext, cfg: &Config, capacity: usize, ty: KvType) -> Result<Self> {
        let bytes = cfg.kv_layer_bytes(capacity, ty);
        let mut k = Vec::with_capacity(cfg.n_layers);
        let mut v = Vec::with_capacity(cfg.n_layers);
        for l in 0..cfg.n_layers {
            k.push(ctx.storage(&format!("L{l}.k_cache"), bytes)?);
            v.push(ctx.storage(&format!("L{l}.v_cache"), bytes)?);
        }
        Ok(KvCache { k, v, capacity, ty })
    }

    /// Whether values are stored as f16 (else f32).
    pub fn f16(&self) -> bool {
        self.ty == KvType::F16
    }
}
