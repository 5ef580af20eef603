//! `#[repr(C)]` mirrors of each kernel's WGSL `Params` struct (same field order and units),
//! plus `Step`, the per-position uniform.

use bytemuck::{Pod, Zeroable};

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct MatVec {
    pub rows: u32,
    pub cols: u32,
    pub row_bytes: u32,
    /// Elements.
    pub out_offset: u32,
    /// 0: y = W·x; 1: y += W·x.
    pub accumulate: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct Embed {
    pub dim: u32,
    pub row_bytes: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct RmsNorm {
    pub n: u32,
    pub eps: f32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct Rope {
    /// Query heads + key heads rotated in the qkv buffer.
    pub n_rot_heads: u32,
    pub head_dim: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct KvWrite {
    pub q_dim: u32,
    pub kv_dim: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct Attention {
    pub n_heads: u32,
    pub n_kv_heads: u32,
    pub head_dim: u32,
    /// Row length of the attention-weights buffer (the context length T).
    pub att_stride: u32,
    /// Elements: where this layer's [h × T] slice starts.
    pub att_offset: u32,
    /// 1 / sqrt(head_dim).
    pub scale: f32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct SwiGlu {
    pub n: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct Argmax {
    /// Logits to scan (V).
    pub n: u32,
}

/// The per-position uniform, one 256-byte slot per cache row, bound with a dynamic offset.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct Step {
    pub pos: u32,
    pub _pad: [u32; 3],
}
