//! The KV cache: per layer, one K and one V buffer of [R × h_kv · d_h] f32 (or f16 pairs packed in
//! u32 words), allocated once for the whole context: R = T rows, or on a sliding-window layer a
//! ring of `Config::cache_rows` rows. Position `pos` lives in row pos mod R, written by the step
//! that processes it; a step at position `pos` reads the rows of the positions it attends. Which
//! positions are filled is the engine's to know (`Engine::position`).

use crate::backend::gpu::GpuContext;
use crate::core::config::{Config, KvType};
use crate::error::Result;

pub struct KvCache {
    pub k: Vec<wgpu::Buffer>,
    pub v: Vec<wgpu::Buffer>,
    /// T: positions.
    pub capacity: usize,
    /// R per layer: T, or the ring of a sliding-window layer.
    pub rows: Vec<usize>,
    pub ty: KvType,
}

impl KvCache {
    pub fn new(ctx: &GpuContext, cfg: &Config, capacity: usize, ty: KvType) -> Result<Self> {
        let rows = cfg.layer_rows(capacity);
        let mut k = Vec::with_capacity(cfg.n_layers);
        let mut v = Vec::with_capacity(cfg.n_layers);
        for (l, &r) in rows.iter().enumerate() {
            let bytes = cfg.kv_layer_bytes(r, ty);
            k.push(ctx.storage(&format!("L{l}.k_cache"), bytes)?);
            v.push(ctx.storage(&format!("L{l}.v_cache"), bytes)?);
        }
        Ok(KvCache { k, v, capacity, rows, ty })
    }

    /// Whether values are stored as f16 (else f32).
    pub fn f16(&self) -> bool {
        self.ty == KvType::F16
    }
}
