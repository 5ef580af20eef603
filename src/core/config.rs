//! Model hyper-parameters read from GGUF metadata, and the tensor table checked against them.

use serde::Serialize;

use crate::core::gguf::{Gguf, TensorInfo};
use crate::core::quant::GgmlType;
use crate::error::{Error, Result};

/// The architectures the forward pass runs: one pass with the switches of `Config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// Llama 1–3, SmolLM, Mistral-style: the plain pre-norm SwiGLU decoder.
    Llama,
    /// Qwen 2 / 2.5: biases on q, k and v; NeoX RoPE.
    Qwen2,
    /// Qwen 3: RMSNorm of each q and k head before RoPE; NeoX RoPE.
    Qwen3,
    /// Gemma 3: embedding × √d, q/k head norms, norms after attention and after the FFN too,
    /// GELU (tanh) gate, sliding-window attention on 5 of every 6 layers with its own RoPE base.
    Gemma3,
}

impl Arch {
    pub const ALL: [Arch; 4] = [Arch::Llama, Arch::Qwen2, Arch::Qwen3, Arch::Gemma3];

    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Gemma3 => "gemma3",
        }
    }

    fn from_name(s: &str) -> Option<Self> {
        Arch::ALL.into_iter().find(|a| a.name() == s)
    }
}

/// The gate's activation in the gated FFN: act(W_gate · x) ⊙ (W_up · x).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Act {
    /// silu(g) = g / (1 + e^−g)  (SwiGLU)
    Silu,
    /// gelu(g) ≈ g/2 · (1 + tanh(√(2/π) · (g + 0.044715 g³)))  (GeGLU, tanh form)
    GeluTanh,
}

impl Act {
    /// The code the gate kernel reads.
    pub fn code(self) -> u32 {
        match self {
            Act::Silu => 0,
            Act::GeluTanh => 1,
        }
    }
}

/// How a layer's RoPE turns a head: pairs (x[2i], x[2i+1]) ("normal", Llama's GGUF layout) or
/// (x[i], x[i + d_h/2]) (NeoX: Qwen, Gemma), pair i by θ = pos · scale · base^(−2i/d_h) / factor_i.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RopeSpec {
    pub base: f32,
    /// Linear position scaling (1 / `rope.scaling.factor`), 1 without.
    pub scale: f32,
    pub neox: bool,
}

/// Decoder hyper-parameters. Shapes in the comments use these names.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    pub arch: Arch,
    pub name: String,
    /// d: width of the residual stream.
    pub dim: usize,
    /// f: hidden width of the SwiGLU MLP.
    pub ffn_dim: usize,
    pub n_layers: usize,
    /// h: query heads.
    pub n_heads: usize,
    /// h_kv: key/value heads; h / h_kv query heads share one KV head (grouped-query attention).
    pub n_kv_heads: usize,
    /// d_h: `attention.key_length`, else d / h. q is [h · d_h], which need not be d.
    pub head_dim: usize,
    /// V: vocabulary size (rows of the token embedding).
    pub vocab_size: usize,
    /// The context the model was trained for.
    pub train_context: usize,
    pub rms_eps: f32,
    /// True when there is no `output.weight` and the logits reuse `token_embd.weight`.
    pub tied_output: bool,
    /// RoPE of the full-attention layers.
    pub rope: RopeSpec,
    /// RoPE of the sliding-window layers (Gemma 3: base 10,000, no scaling); `rope` elsewhere.
    pub rope_local: RopeSpec,
    /// `rope_freqs.weight` [d_h/2] divides each pair's frequency (Llama 3.1+ long-context RoPE).
    pub rope_freqs: bool,
    /// q, k, v biases (`attn_{q,k,v}.bias`), added after the projections.
    pub qkv_bias: bool,
    /// RMSNorm of each q and k head before RoPE (`attn_{q,k}_norm.weight` [d_h]).
    pub qk_norm: bool,
    /// RMSNorm of the attention output and of the FFN output before each residual add
    /// (`post_attention_norm`, `post_ffw_norm`).
    pub post_norms: bool,
    pub act: Act,
    /// The embedding row is multiplied by this (Gemma: √d), 1 elsewhere.
    pub embed_scale: f32,
    /// Attention scores are q·k times this: 1/√d_h (Gemma 3: 1/√`key_length`, the same number).
    pub attn_scale: f32,
    /// W: a sliding-window layer attends over the last W positions only (0: no such layers).
    pub sliding_window: usize,
    /// Every `swa_pattern`-th layer (the last of each group) attends over the whole context.
    pub swa_pattern: usize,
}

/// B: the most tokens one prefill submit processes (the GPU's chunk), which also sizes the ring of
/// a sliding-window layer's cache.
pub const PREFILL_CHUNK: usize = 32;

/// How the KV cache stores each value: f32, f16 rounded to nearest even (half the memory), or
/// (the CPU backends; `core::kv_policy`) ggml's Q8_0 / Q4_0 blocks of 32 values and one f16 scale
/// each, as llama.cpp's `--cache-type-k/v`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub enum KvType {
    #[default]
    #[serde(rename = "f32")]
    F32,
    #[serde(rename = "f16")]
    F16,
    #[serde(rename = "q8_0")]
    Q8_0,
    #[serde(rename = "q4_0")]
    Q4_0,
}

impl KvType {
    pub const ALL: [KvType; 4] = [KvType::F32, KvType::F16, KvType::Q8_0, KvType::Q4_0];

    pub fn new(f16: bool) -> Self {
        if f16 {
            KvType::F16
        } else {
            KvType::F32
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            KvType::F32 => "f32",
            KvType::F16 => "f16",
            KvType::Q8_0 => "q8_0",
            KvType::Q4_0 => "q4_0",
        }
    }

    /// The ggml block layout of a quantised cache.
    pub fn blocks(self) -> Option<crate::core::quant::GgmlType> {
        use crate::core::quant::GgmlType;
        match self {
            KvType::Q8_0 => Some(GgmlType::Q8_0),
            KvType::Q4_0 => Some(GgmlType::Q4_0),
            KvType::F32 | KvType::F16 => None,
        }
    }

    /// Bytes of a cache row of `values` values (a multiple of 32 for the block types).
    pub fn row_bytes(self, values: usize) -> u64 {
        let n = values as u64;
        match self {
            KvType::F32 => 4 * n,
            KvType::F16 => 2 * n,
            KvType::Q8_0 => n / 32 * 34,
            KvType::Q4_0 => n / 32 * 18,
        }
    }

    /// Bytes per cached value, on average (1.0625 for Q8_0: 34 bytes a block of 32).
    pub fn value_bytes(self) -> f64 {
        self.row_bytes(32) as f64 / 32.0
    }
}

/// The architecture's metadata keys (`ARCH.KEY`).
struct Keys<'a> {
    g: &'a Gguf<'a>,
    arch: &'a str,
}

impl Keys<'_> {
    fn name(&self, k: &str) -> String {
        format!("{}.{k}", self.arch)
    }

    /// A size: 1..=2^20.
    fn size(&self, k: &str) -> Result<usize> {
        let v = self.g.u64(&self.name(k))?;
        if v == 0 || v > 1 << 20 {
            return Err(Error::Config(format!("`{}` = {v} is outside 1..=1048576", self.name(k))));
        }
        Ok(v as usize)
    }

    /// (h, h_kv, d_h): query heads, KV heads (h where absent) dividing them, and the head width
    /// (`key_length`, else d / h), even, with values as wide and RoPE over all of it.
    fn heads(&self, dim: usize) -> Result<(usize, usize, usize)> {
        let g = self.g;
        let n_heads = self.size("attention.head_count")?;
        let n_kv_heads = match g.get(&self.name("attention.head_count_kv")) {
            Some(_) => self.size("attention.head_count_kv")?,
            None => n_heads,
        };
        if n_heads % n_kv_heads != 0 {
            return Err(Error::Config(format!("head_count {n_heads} is not a multiple of head_count_kv {n_kv_heads}")));
        }
        let head_dim = match g.get(&self.name("attention.key_length")) {
            Some(_) => self.size("attention.key_length")?,
            None if dim.is_multiple_of(n_heads) => dim / n_heads,
            None => return Err(Error::Config(format!("embedding_length {dim} is not a multiple of head_count {n_heads}"))),
        };
        if let Some(v) = g.get(&self.name("attention.value_length")) {
            if v.as_u64() != Some(head_dim as u64) {
                return Err(Error::NotSupported(format!("value heads of {} dims beside key heads of {head_dim}", v.summary())));
            }
        }
        if head_dim % 2 != 0 {
            return Err(Error::Config(format!("head dimension {head_dim} is odd; RoPE needs pairs")));
        }
        if let Some(v) = g.get(&self.name("rope.dimension_count")) {
            if v.as_u64() != Some(head_dim as u64) {
                return Err(Error::NotSupported(format!("partial RoPE (`rope.dimension_count` = {})", v.summary())));
            }
        }
        Ok((n_heads, n_kv_heads, head_dim))
    }
}

/// `rope.freq_base` (10,000 where absent) and the linear position scale (1 / `rope.scaling.factor`,
/// 1 without scaling) of architecture `arch`; other scalings are refused by name.
fn rope_base_and_scale(g: &Gguf, arch: &str) -> Result<(f32, f32)> {
    let key = |k: &str| format!("{arch}.{k}");
    let f = |k: &str, default: f64| -> Result<f32> {
        match g.get(&key(k)) {
            Some(_) => Ok(g.f64(&key(k))? as f32),
            None => Ok(default as f32),
        }
    };
    let scale = match g.get(&key("rope.scaling.type")).and_then(|v| v.as_str().map(str::to_string)) {
        None => 1.0,
        Some(t) if t == "none" => 1.0,
        Some(t) if t == "linear" => 1.0 / f("rope.scaling.factor", 1.0)?,
        Some(t) => return Err(Error::NotSupported(format!("RoPE scaling `{t}` (`{}`)", key("rope.scaling.type")))),
    };
    Ok((f("rope.freq_base", 10000.0)?, scale))
}

/// Rows of a ring whose queries attend the last `window` positions: W + B (B = `PREFILL_CHUNK`:
/// while a chunk's last rows are written, its first token still reads the W − 1 rows before
/// it), at most the context.
pub fn ring_rows(window: usize, context: usize) -> usize {
    (window + PREFILL_CHUNK).min(context)
}

impl Config {
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// h · d_h: the width of q and of the attention output.
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    /// Whether layer `l` attends over a sliding window of the last W positions.
    pub fn is_sliding(&self, l: usize) -> bool {
        self.sliding_window > 0 && !(l + 1).is_multiple_of(self.swa_pattern)
    }

    /// The positions layer `l` attends to from position `pos`: the window's, or all of 0..=pos.
    pub fn attended(&self, l: usize, pos: usize) -> std::ops::Range<usize> {
        let lo = if self.is_sliding(l) { (pos + 1).saturating_sub(self.sliding_window) } else { 0 };
        lo..pos + 1
    }

    /// Layer `l`'s RoPE.
    pub fn rope_of(&self, l: usize) -> RopeSpec {
        if self.is_sliding(l) {
            self.rope_local
        } else {
            self.rope
        }
    }

    /// Cache rows layer `l` keeps for `context` positions: a sliding-window layer keeps a ring
    /// (`ring_rows`); other layers one row per position. Position p lives in row p mod rows.
    pub fn cache_rows(&self, l: usize, context: usize) -> usize {
        if self.is_sliding(l) {
            ring_rows(self.sliding_window, context)
        } else {
            context
        }
    }

    /// `cache_rows` of every layer, in order.
    pub fn layer_rows(&self, context: usize) -> Vec<usize> {
        (0..self.n_layers).map(|l| self.cache_rows(l, context)).collect()
    }

    /// Bytes of one layer's K (or V) cache at `context` positions: [T × h_kv · d_h] values.
    pub fn kv_layer_bytes(&self, context: usize, kv: KvType) -> u64 {
        context as u64 * kv.row_bytes(self.kv_dim())
    }

    /// Bytes of K and V for every layer at `context` positions (sliding-window layers keep
    /// `cache_rows`).
    pub fn kv_cache_bytes(&self, context: usize, kv: KvType) -> u64 {
        (0..self.n_layers).map(|l| 2 * self.kv_layer_bytes(self.cache_rows(l, context), kv)).sum()
    }

    pub fn from_gguf(g: &Gguf) -> Result<Self> {
        let arch_name = g.str("general.architecture")?;
        let arch = Arch::from_name(arch_name).ok_or_else(|| Error::UnsupportedArchitecture {
            name: arch_name.to_string(),
            supported: Arch::ALL.map(|a| a.name()).join(", "),
        })?;
        let keys = Keys { g, arch: arch_name };
        let key = |k: &str| keys.name(k);
        let us = |k: &str| keys.size(k);
        let dim = us("embedding_length")?;
        let (n_heads, n_kv_heads, head_dim) = keys.heads(dim)?;
        let rms_eps = g.f64(&key("attention.layer_norm_rms_epsilon"))? as f32;
        let (rope_base, rope_scale) = rope_base_and_scale(g, arch_name)?;
        // Written so that NaN fails too.
        let within = |v: f32, lo: f32, hi: f32| v > lo && v < hi;
        if !within(rms_eps, 0.0, 1.0) || !within(rope_base, 1.0, f32::INFINITY) || !within(rope_scale, 0.0, 1.0 + 1e-6) {
            return Err(Error::Config(format!("rms epsilon {rms_eps}, rope base {rope_base} or rope scale {rope_scale} is out of range")));
        }
        let neox = arch != Arch::Llama;
        let rope = RopeSpec { base: rope_base, scale: rope_scale, neox };
        let gemma = arch == Arch::Gemma3;
        let sliding_window = match g.get(&key("attention.sliding_window")) {
            Some(_) if gemma => us("attention.sliding_window")?,
            _ => 0,
        };
        // Gemma 3: layers 6k + 5 attend over everything, the others over the window (as llama.cpp).
        let swa_pattern = 6;
        let embd = g.tensor("token_embd.weight").ok_or_else(|| Error::MissingTensor("token_embd.weight".into()))?;
        let vocab_size = *embd.dims.get(1).unwrap_or(&0) as usize;
        if let Ok(n) = g.str_array("tokenizer.ggml.tokens").map(|t| t.len()) {
            if n != vocab_size {
                return Err(Error::Config(format!("the vocabulary has {n} tokens but `token_embd.weight` has {vocab_size} rows")));
            }
        }
        let cfg = Config {
            arch,
            name: g.str("general.name").unwrap_or("unnamed model").to_string(),
            dim,
            ffn_dim: us("feed_forward_length")?,
            n_layers: us("block_count")?,
            n_heads,
            n_kv_heads,
            head_dim,
            vocab_size,
            train_context: us("context_length")?,
            rms_eps,
            tied_output: g.tensor("output.weight").is_none(),
            rope,
            rope_local: if gemma { RopeSpec { base: 10000.0, scale: 1.0, neox } } else { rope },
            rope_freqs: g.tensor("rope_freqs.weight").is_some(),
            qkv_bias: arch == Arch::Qwen2,
            qk_norm: matches!(arch, Arch::Qwen3 | Arch::Gemma3),
            post_norms: gemma,
            act: if gemma { Act::GeluTanh } else { Act::Silu },
            embed_scale: if gemma { (dim as f32).sqrt() } else { 1.0 },
            attn_scale: 1.0 / (head_dim as f32).sqrt(),
            sliding_window,
            swa_pattern,
        };
        cfg.check_tensors(g)?;
        Ok(cfg)
    }

    /// Every tensor the forward pass reads, with the shape it must have (`dims[0]` innermost).
    pub fn expected_tensors(&self) -> Vec<(String, Vec<u64>)> {
        let (d, f, kv, v) = (self.dim as u64, self.ffn_dim as u64, self.kv_dim() as u64, self.vocab_size as u64);
        let (q, hd) = (self.q_dim() as u64, self.head_dim as u64);
        let mut t = vec![("token_embd.weight".to_string(), vec![d, v]), ("output_norm.weight".to_string(), vec![d])];
        if !self.tied_output {
            t.push(("output.weight".into(), vec![d, v]));
        }
        if self.rope_freqs {
            t.push(("rope_freqs.weight".into(), vec![hd / 2]));
        }
        for l in 0..self.n_layers {
            let mut layer = vec![
                ("attn_norm.weight", vec![d]),
                ("attn_q.weight", vec![d, q]),
                ("attn_k.weight", vec![d, kv]),
                ("attn_v.weight", vec![d, kv]),
                ("attn_output.weight", vec![q, d]),
                ("ffn_norm.weight", vec![d]),
                ("ffn_gate.weight", vec![d, f]),
                ("ffn_up.weight", vec![d, f]),
                ("ffn_down.weight", vec![f, d]),
            ];
            if self.qkv_bias {
                layer.extend([("attn_q.bias", vec![q]), ("attn_k.bias", vec![kv]), ("attn_v.bias", vec![kv])]);
            }
            if self.qk_norm {
                layer.extend([("attn_q_norm.weight", vec![hd]), ("attn_k_norm.weight", vec![hd])]);
            }
            if self.post_norms {
                layer.extend([("post_attention_norm.weight", vec![d]), ("post_ffw_norm.weight", vec![d])]);
            }
            t.extend(layer.into_iter().map(|(n, s)| (format!("blk.{l}.{n}"), s)));
        }
        t
    }

    fn check_tensors(&self, g: &Gguf) -> Result<()> {
        for (name, shape) in self.expected_tensors() {
            let t: &TensorInfo = g.tensor(&name).ok_or_else(|| Error::MissingTensor(name.clone()))?;
            if t.dims != shape {
                return Err(Error::BadShape { name, expected: shape, found: t.dims.clone() });
            }
            if shape.len() == 1 && t.ty != GgmlType::F32 {
                return Err(Error::UnsupportedType {
                    name,
                    ty: format!("{} (norm weights and biases must be F32)", t.ty.name()),
                    supported: "F32".into(),
                });
            }
        }
        Ok(())
    }
}
