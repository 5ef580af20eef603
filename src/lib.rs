//! kvscope: a small language model on WebGPU (wgpu), with its KV cache on show.
//!
//! The engine reads a GGUF file, builds the tokenizer from its vocabulary, uploads the weights
//! once, and runs each token through WGSL kernels against a KV cache that lives on the GPU. The
//! logits come back once per token and the next token is picked on the CPU:
//! ŷ = argmax_y Pr(y | cache). A plain-f32 CPU forward pass (`cpu`) is the reference for it all.

pub mod bench;
pub mod clock;
pub mod config;
pub mod cpu;
pub mod engine;
pub mod error;
pub mod flaw;
pub mod gguf;
pub mod gpu;
pub mod model;
pub mod quant;
pub mod sampler;
pub mod tokenizer;
#[cfg(target_arch = "wasm32")]
pub mod web;

pub use config::KvType;
pub use engine::{Backend, Engine, GenerateOptions, LoadOptions, StopReason, Summary, TokenEvent};
pub use error::{Error, ErrorKind, Result};
pub use flaw::Flaw;
pub use gpu::GpuOptions;

/// Where the default model lives, relative to the repository root (and to the site's root).
pub const DEFAULT_MODEL: &str = "www/models/SmolLM2-135M-Instruct.Q4_1.gguf";
pub const DEFAULT_CONTEXT: usize = 2048;
