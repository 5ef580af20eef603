//! `#[repr(C)]` mirrors of each kernel's WGSL `Params` struct (same field order and units),
//! plus `Step`, the per-pass uniform (first position and token count).

use bytemuck::{Pod, Zeroable};

/// The mat-mul over a chunk's token rows, and the mat-vec (one token; the strides unused).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
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

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct Embed {
    pub dim: u32,
    pub row_bytes: u32,
    /// The row is multiplied by this (√d for Gemma).
    pub scale: f32,
    /// The part of the table this dispatch holds: rows first_row .. first_row + rows.
    pub first_row: u32,
    pub rows: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct RmsNorm {
    pub n: u32,
    pub eps: f32,
    /// 1: norm only the chunk's last row, into row 0 (the head).
    pub last: u32,
    /// 1: add the normed row to out.
    pub add: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct HeadNorm {
    pub n_heads: u32,
    pub n_kv_heads: u32,
    pub head_dim: u32,
    pub eps: f32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct AddBias {
    /// Elements per row.
    pub n: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct RopeKv {
    pub n_heads: u32,
    pub n_kv_heads: u32,
    pub head_dim: u32,
    /// R: cache rows (position p is row p mod R).
    pub rows: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct Attention {
    pub n_heads: u32,
    pub n_kv_heads: u32,
    /// Row length of the attention-weights buffer (the context length T).
    pub att_stride: u32,
    /// Elements: where this layer's [h × T] slice starts.
    pub att_offset: u32,
    /// Multiplies q·k (1 / sqrt(head_dim)).
    pub scale: f32,
    /// Positions per split, and the number of splits covering T.
    pub split: u32,
    pub n_splits: u32,
    /// W: positions attended on a sliding-window layer; 0: all.
    pub window: u32,
    /// R: cache rows (position p is row p mod R).
    pub rows: u32,
}

/// Pass 2 of attention: merges the splits.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct AttentionMerge {
    pub n_heads: u32,
    pub head_dim: u32,
    /// Elements: where this layer's [h × 2] softmax statistics (M, L) start in `att`.
    pub stats_offset: u32,
    pub split: u32,
    pub n_splits: u32,
    pub window: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct Glu {
    pub n: u32,
    /// `Act::code`.
    pub act: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct Argmax {
    /// Logits to scan (V).
    pub n: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct TopK {
    /// V
    pub n: u32,
    /// Logits per workgroup.
    pub chunk: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct TopKMerge {
    /// Workgroups of pass 1.
    pub slices: u32,
}

/// Where a pass runs: `n` tokens at positions pos..pos + n. Decoding binds one 256-byte slot per
/// cache row (n = 1) by dynamic offset; prefill writes one slot per chunk.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct Step {
    pub pos: u32,
    pub n: u32,
    /// 0, or a teaching flaw's code (`Flaw::kernel_code`).
    pub flaw: u32,
    pub _pad: u32,
}
