//! kvscope: a small language model on WebGPU (wgpu), with its KV cache on show.
//!
//! The engine reads a GGUF file, builds the tokenizer from its vocabulary, uploads the weights
//! once, and runs each token through WGSL kernels against a KV cache that lives on the GPU. The
//! logits come back once per token and the next token is picked on the CPU:
//! ŷ = argmax_y Pr(y | cache). A plain-f32 CPU forward pass is the reference for it all.
//!
//! The modules, in the order data flows through them:
//! - `core`: what every backend shares — the GGUF reader, the ggml block formats, the model's
//!   config, the tokenizer, the sampler, and the teaching flaws;
//! - `backend`: one interface (`backend::Backend`) over the forward passes: `backend::gpu` (WGSL
//!   kernels on wgpu) and `backend::cpu` (the reference, and the CPU backend);
//! - `engine`: the generation API over a backend: the cache's bookkeeping, feeding, decoding,
//!   per-token events;
//! - `bench`, and `web` (the wasm32 exports) and the CLI (`main.rs`) around it.

pub mod backend;
pub mod bench;
pub mod clock;
pub mod core;
pub mod engine;
pub mod error;
#[cfg(not(target_arch = "wasm32"))]
#[doc(hidden)]
pub mod testing;
#[cfg(target_arch = "wasm32")]
pub mod web;

pub use crate::backend::gpu::GpuOptions;
pub use crate::backend::BackendKind;
pub use crate::core::config::KvType;
pub use crate::core::flaw::Flaw;
pub use crate::engine::{Engine, GenerateOptions, LoadOptions, PastContext, StopReason, Summary, TokenEvent};
pub use crate::error::{Error, ErrorKind, Result};

/// Where the default model lives, relative to the repository root (and to the site's root).
pub const DEFAULT_MODEL: &str = "www/models/SmolLM2-135M-Instruct.Q4_1.gguf";
/// KV-cache positions allocated at load unless asked otherwise (the CLI, the page, the JS API).
pub const DEFAULT_CONTEXT: usize = 2048;
