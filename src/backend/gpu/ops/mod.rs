//! One file per op: its params (checked against its WGSL `struct Params`), its kernel's spec, the
//! function that records it (bindings and grid together, as the model's forward pass and the
//! tests record it), and its test against the CPU reference. Each op's kernel is
//! `shaders/<op>.wgsl`. Bindings are passed outputs first, then inputs, as the shader declares
//! them.
//!
//! Glossary: B, the prefill chunk (token rows of the activation buffers); a token row is one
//! token's slice of an activation buffer; `Tokens` says which rows an op covers.

pub mod add_bias;
pub mod argmax;
pub mod attention;
pub mod embed;
pub mod glu;
pub mod head_norm;
pub mod kv_quantize;
pub mod project;
pub mod rms_norm;
pub mod rope_kv;
pub mod top_k;

/// Which tokens an op covers: one (decoding: mat-vec kernels, bound to the per-position step
/// table) or the rows of a prefill chunk of up to B tokens (mat-mul kernels; the chunk's step
/// uniform says how many are live).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tokens {
    One,
    Chunk(u32),
}

impl Tokens {
    /// Token rows a kernel spreads over workgroup z.
    pub fn rows(self) -> u32 {
        match self {
            Tokens::One => 1,
            Tokens::Chunk(b) => b,
        }
    }
}

/// Token rows in a buffer: row t of the chunk starts at element t · stride; an op reads or
/// writes `offset` elements into each row.
#[derive(Clone, Copy)]
pub struct Rows<'a> {
    pub buf: &'a wgpu::Buffer,
    pub stride: u32,
    pub offset: u32,
}

impl<'a> Rows<'a> {
    pub fn new(buf: &'a wgpu::Buffer, stride: u32) -> Self {
        Rows { buf, stride, offset: 0 }
    }

    pub fn at(self, offset: u32) -> Self {
        Rows { offset, ..self }
    }
}

/// Whether an op replaces its output or adds to it (the residual add x ← x + y fused).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    Set,
    Add,
}

impl Write {
    /// The `add`/`accumulate` flag of a kernel's params.
    pub fn flag(self) -> u32 {
        (self == Write::Add) as u32
    }
}

/// The heads of the model's attention, for `rope_kv`, `head_norm` and `attention`.
#[derive(Clone, Copy, Debug)]
pub struct Heads {
    /// h
    pub n_heads: u32,
    /// h_kv
    pub n_kv_heads: u32,
    /// d_h
    pub head_dim: u32,
}

impl Heads {
    pub fn of(cfg: &crate::core::config::Config) -> Self {
        Heads { n_heads: cfg.n_heads as u32, n_kv_heads: cfg.n_kv_heads as u32, head_dim: cfg.head_dim as u32 }
    }

    /// Elements of one token's qkv row: [q (h heads) | k (h_kv) | v (h_kv)].
    pub fn qkv_row(&self) -> u32 {
        (self.n_heads + 2 * self.n_kv_heads) * self.head_dim
    }
}
