//! What the engine is asked to do and what it reports: load and generate options (with their
//! defaults, the only place they are written), the per-token event, the summary of a run.

use serde::{Deserialize, Serialize};

use crate::backend::gpu::GpuOptions;
use crate::backend::BackendKind;
use crate::core::config::KvType;
use crate::core::flaw::Flaw;
use crate::core::kv_policy::{Eviction, KvPolicy};
use crate::core::sampler::{SamplerConfig, TokenProb};

/// Tokens a generation makes at most unless asked otherwise (the CLI, the page).
pub const MAX_TOKENS: usize = 64;
/// Rows of the next-token table reported with each token unless asked otherwise.
pub const REPORT_TOP: usize = 5;

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub backend: BackendKind,
    /// KV-cache capacity in positions.
    pub context: usize,
    /// Optional device features the GPU kernels may use.
    pub gpu: GpuOptions,
    /// How K and V are kept in the cache: f32, or f16 (half the memory and bandwidth; values
    /// rounded to nearest-even f16 on both backends).
    pub kv: KvType,
    /// What the cache evicts (`core::kv_policy`; the CPU backends only).
    pub eviction: Eviction,
}

impl LoadOptions {
    /// The cache policy: `kv` and `eviction`.
    pub fn policy(&self) -> KvPolicy {
        KvPolicy { precision: self.kv, eviction: self.eviction }
    }

    /// These options with cache policy `p`.
    pub fn with_policy(self, p: KvPolicy) -> Self {
        LoadOptions { kv: p.precision, eviction: p.eviction, ..self }
    }
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            backend: BackendKind::Gpu,
            context: crate::DEFAULT_CONTEXT,
            gpu: GpuOptions::default(),
            kv: KvType::F32,
            eviction: Eviction::None,
        }
    }
}

/// A generation's settings. From JavaScript every field is optional and the defaults apply
/// (`serde(default)`); the sampler's fields sit beside the others.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    #[serde(flatten)]
    pub sampler: SamplerConfig,
    /// Rows of the next-token table reported with each token.
    pub report_top: usize,
    /// Read back this layer's attention weights after every step (for the attention view; off
    /// by default so that decoding does no extra readback).
    pub attention_layer: Option<usize>,
    /// Read back every layer's attention weights for the newest query after every step (the
    /// overview of layers × heads).
    pub attention_all_layers: bool,
    /// With `attention_layer`: prefill the prompt one token at a time and report that layer's
    /// weights for each prompt position's query too (the rows of the attention matrix that a
    /// batched prefill does not keep).
    pub attention_prompt: bool,
    /// Decode without the cache: re-run the whole sequence at every step (for comparison).
    pub no_cache: bool,
    /// Greedy only: let the backend pick the argmax (the GPU reads back 8 bytes instead of the
    /// logits row); with a `report_top` of at most `backend::TOP_K`, the next-token table is
    /// made there too (136 bytes read back), a larger one is left empty on the GPU.
    pub gpu_argmax: bool,
    /// Feed each generated token back through a deliberately broken cache (teaching; see
    /// `crate::core::flaw`). The rows the flaw wrote are then never reused (a next chat turn
    /// keeps only the rows before them).
    pub flaw: Flaw,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: MAX_TOKENS,
            sampler: SamplerConfig::default(),
            report_top: REPORT_TOP,
            attention_layer: None,
            attention_all_layers: false,
            attention_prompt: false,
            no_cache: false,
            gpu_argmax: false,
            flaw: Flaw::None,
        }
    }
}

/// One generated token, as the UI and `--json` see it.
#[derive(Debug, Clone, Serialize)]
pub struct TokenEvent {
    pub id: u32,
    /// The text this token completes (empty while a UTF-8 character is still split).
    pub text: String,
    /// The most probable next tokens under the logits this token was picked from.
    pub top: Vec<TokenProb>,
    /// Position of the token in the sequence; the cache holds rows 0..pos when it is reported,
    /// and the token's K and V go into row pos when it is fed back.
    pub pos: usize,
    /// Milliseconds of the step that produced this token (forward pass + pick); for the first
    /// token, the pick after the prefill (the prefill's time is the summary's `prefill_ms`).
    pub ms: f64,
    /// With `attention_layer`: that layer's attention weights for the query that produced this
    /// token, [h × pos] row-major (each row sums to 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attention: Option<Vec<f32>>,
    /// With `attention_all_layers`: every layer's weights for that query, [L × h × pos].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attention_layers: Option<Vec<f32>>,
    /// First token of a generation with `attention_prompt`: for each prompt position i fed in
    /// this call, `attention_layer`'s weights of its query, [h × (start + i + 1)].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_attention: Option<Vec<Vec<f32>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    Eos,
    MaxTokens,
    ContextFull,
    Stopped,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub ttft_ms: f64,
    pub prefill_ms: f64,
    pub prefill_tps: f64,
    pub decode_ms: f64,
    pub decode_tps: f64,
    pub stop: StopReason,
    pub backend: String,
    pub text: String,
}
