//! What the engine is asked to do and what it reports: load and generate options (with their
//! defaults, the only place they are written), the per-token event, the summary of a run.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use crate::backend::gpu::GpuOptions;
use crate::backend::BackendKind;
use crate::core::config::KvType;
use crate::core::flaw::Flaw;
use crate::core::grammar::{Grammar, ResponseFormat};
use crate::core::kv_policy::{Eviction, KvPolicy};
use crate::core::logits::{Penalties, TokenLogprob, BAN};
use crate::core::sampler::{SamplerConfig, TokenProb};
use crate::error::{Error, Result};

/// Tokens a generation makes at most unless asked otherwise (the CLI, the page).
pub const MAX_TOKENS: usize = 64;
/// Rows of the next-token table reported with each token unless asked otherwise.
pub const REPORT_TOP: usize = 5;
/// Stop strings a generation takes at most (OpenAI's limit).
pub const MAX_STOP: usize = 4;
/// Alternatives a token's logprobs list at most (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: usize = 20;
/// Tokens the repetition penalty looks back over unless asked otherwise (llama.cpp's
/// `repeat_last_n`).
pub const REPEAT_LAST_N: usize = 64;

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
    /// Up to `MAX_STOP` strings: the generation stops where one appears in its text (matched
    /// across token boundaries; never emitted). From JavaScript, one string or an array.
    #[serde(deserialize_with = "one_or_many")]
    pub stop: Vec<String>,
    /// Report each token's log probability under the logits it was picked from (after the
    /// penalties, bias and grammar), with `top_logprobs` alternatives (0..=`MAX_TOP_LOGPROBS`).
    pub logprobs: bool,
    pub top_logprobs: usize,
    /// OpenAI's penalties (−2..=2) on the tokens this generation has picked, and llama.cpp's
    /// repetition penalty (1: none) on the last `repeat_last_n` tokens (`core::logits`).
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
    pub repetition_penalty: f32,
    pub repeat_last_n: usize,
    /// Token id (as a string, as a JSON object's keys are) → bias added to its logit
    /// (−100..=100; −100 bans it).
    pub logit_bias: BTreeMap<String, f32>,
    /// JSON output by constrained decoding (`core::grammar`).
    pub response_format: ResponseFormat,
    /// Set by a chat turn with tools: the grammar that forces a tool call.
    #[serde(skip)]
    pub tool_grammar: Option<Grammar>,
    /// Set by a chat turn with tools: where a tool call starts (the text is held back from
    /// there, to be parsed whole; `core::stop_strings`).
    #[serde(skip)]
    pub hold: Vec<String>,
}

/// A string or an array of strings, as OpenAI's `stop` takes.
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => Vec::new(),
        Some(OneOrMany::One(s)) => vec![s],
        Some(OneOrMany::Many(v)) => v,
    })
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
            stop: Vec::new(),
            logprobs: false,
            top_logprobs: 0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            repetition_penalty: 1.0,
            repeat_last_n: REPEAT_LAST_N,
            logit_bias: BTreeMap::new(),
            response_format: ResponseFormat::Text,
            tool_grammar: None,
            hold: Vec::new(),
        }
    }
}

/// `v` within `lo..=hi`, or an error naming `param`.
fn in_range(param: &str, v: f32, lo: f32, hi: f32) -> Result<()> {
    match v.is_finite() && (lo..=hi).contains(&v) {
        true => Ok(()),
        false => Err(Error::param(param, format!("{param} must be a number from {lo} to {hi}, not {v}"))),
    }
}

impl GenerateOptions {
    /// Refuses, by name, what cannot be honoured (`vocab`: the logits' length).
    pub fn check(&self, vocab: usize) -> Result<()> {
        if self.stop.len() > MAX_STOP || self.stop.iter().any(String::is_empty) {
            return Err(Error::param("stop", format!("stop takes at most {MAX_STOP} non-empty strings, not {:?}", self.stop)));
        }
        if self.top_logprobs > MAX_TOP_LOGPROBS {
            return Err(Error::param(
                "top_logprobs",
                format!("top_logprobs must be from 0 to {MAX_TOP_LOGPROBS}, not {}", self.top_logprobs),
            ));
        }
        if self.top_logprobs > 0 && !self.logprobs {
            return Err(Error::param("top_logprobs", "top_logprobs needs logprobs: true"));
        }
        in_range("frequency_penalty", self.frequency_penalty, -2.0, 2.0)?;
        in_range("presence_penalty", self.presence_penalty, -2.0, 2.0)?;
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return Err(Error::param(
                "repetition_penalty",
                format!("repetition_penalty must be above 0 (1: none), not {}", self.repetition_penalty),
            ));
        }
        if self.tool_grammar.is_some() && self.response_format != ResponseFormat::Text {
            return Err(Error::param("response_format", "response_format cannot be combined with a tool_choice that forces a call"));
        }
        self.bias(vocab).map(|_| ())
    }

    /// `logit_bias` as (id, bias) pairs, each id in the vocabulary and each bias in −100..=100.
    pub fn bias(&self, vocab: usize) -> Result<Vec<(u32, f32)>> {
        self.logit_bias
            .iter()
            .map(|(k, &b)| {
                let param = format!("logit_bias[{k}]");
                let id =
                    k.parse::<u32>().ok().filter(|&id| (id as usize) < vocab).ok_or_else(|| {
                        Error::param(&param, format!("logit_bias: `{k}` is not a token id of this vocabulary (0..{vocab})"))
                    })?;
                in_range(&param, b, BAN, -BAN).map(|_| (id, b))
            })
            .collect()
    }

    pub fn penalties(&self) -> Penalties {
        Penalties { frequency: self.frequency_penalty, presence: self.presence_penalty, repetition: self.repetition_penalty }
    }

    /// The grammar the text must match, and the request field it comes from.
    pub fn grammar(&self) -> Option<(Grammar, &'static str)> {
        match &self.tool_grammar {
            Some(g) => Some((g.clone(), "tools")),
            None => self.response_format.grammar().map(|g| (g, "response_format")),
        }
    }

    /// Whether the logits are changed before the pick (penalties, bias, grammar).
    pub fn changes_logits(&self) -> bool {
        self.penalties().is_active() || !self.logit_bias.is_empty() || self.grammar().is_some()
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
    /// With `logprobs`: log softmax of the logits this token was picked from, at this token,
    /// and at the `top_logprobs` most probable tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprob: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<Vec<TokenLogprob>>,
    /// Milliseconds of the step that produced this token (forward pass + pick); for the first
    /// token, the pick after the prefill (the prefill's time is the summary's `prefill_ms`).
    pub ms: f64,
    /// With `attention_layer`: that layer's attention weights for the query that produced this
    /// token, [h × pos] row-major (each row sums to 1). Past the context T (`past_context`):
    /// [h × T] over positions pos − T .. pos, a row summing to 1 less the share of older
    /// positions (a policy's sinks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attention: Option<Vec<f32>>,
    /// With `attention_all_layers`: every layer's weights for that query, [L × h × pos] (past
    /// the context, [L × h × T] as `attention`).
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
    /// A stop string appeared in the text.
    StopString,
    /// The grammar's end: no token could extend the text.
    GrammarEnd,
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
    /// The whole text (without a stop string that ended it).
    pub text: String,
    /// The end of `text` that no token event carried: held back as the possible start of a
    /// stop string, or as a tool call (`core::stop_strings`), or an incomplete character.
    pub tail: String,
    /// Milliseconds spent in the grammar's masks and advancing it (compiling it aside).
    pub grammar_ms: f64,
    /// Some when the text has run past the context the engine was loaded with: the cache policy
    /// that made it possible (null otherwise).
    pub past_context: Option<PastContext>,
}

/// A text past the context T: a cache policy that evicts holds at most `held` positions, so
/// positions run on past T (`Backend::passes_context`) where the exact cache stops.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PastContext {
    /// The cache policy's name, e.g. `sink-4-window-60`.
    pub policy: String,
    /// T: the context loaded; the text passed it at position T (0-based).
    pub context: usize,
    /// Positions the policy holds now (its budget, once the text is past T ≥ budget).
    pub held: usize,
}

impl std::fmt::Display for PastContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let PastContext { policy, context, held } = self;
        write!(f, "context {context} passed at position {context}: cache policy {policy} keeps {held} positions")
    }
}
