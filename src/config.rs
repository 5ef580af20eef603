//! Model hyper-parameters read from GGUF metadata, and the tensor table checked against them.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::gguf::{Gguf, TensorInfo};
use crate::quant::GgmlType;

/// Llama-architecture hyper-parameters. Shapes in the comments use these names.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
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
    /// d_h = d / h.
    pub head_dim: usize,
    /// V: vocabulary size (rows of the token embedding).
    pub vocab_size: usize,
    /// The context the model was trained for.
    pub train_context: usize,
    pub rms_eps: f32,
    pub rope_base: f32,
    /// True when there is no `output.weight` and the logits reuse `token_embd.weight`.
    pub tied_output: bool,
}

/// How the KV cache stores each value: f32, or f16 rounded to nearest even (half the memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KvType {
    #[default]
    F32,
    F16,
}

impl KvType {
    pub fn new(f16: bool) -> Self {
        if f16 {
            KvType::F16
        } else {
            KvType::F32
        }
    }

    /// Bytes per cached value.
    pub fn bytes(self) -> usize {
        match self {
            KvType::F32 => 4,
            KvType::F16 => 2,
        }
    }
}

impl Config {
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// Bytes of one layer's K (or V) cache at `context` positions: [T × h_kv · d_h] values.
    pub fn kv_layer_bytes(&self, context: usize, kv: KvType) -> u64 {
        context as u64 * self.kv_dim() as u64 * kv.bytes() as u64
    }

    /// Bytes of K and V for every layer at `context` positions.
    pub fn kv_cache_bytes(&self, context: usize, kv: KvType) -> u64 {
        2 * self.n_layers as u64 * self.kv_layer_bytes(context, kv)
    }

    pub fn from_gguf(g: &Gguf) -> Result<Self> {
        let arch = g.str("general.architecture")?;
        if arch != "llama" {
            return Err(Error::UnsupportedArchitecture(arch.to_string()));
        }
        let key = |k: &str| format!("{arch}.{k}");
        let us = |k: &str| -> Result<usize> {
            let v = g.u64(&key(k))?;
            if v == 0 || v > 1 << 20 {
                return Err(Error::Config(format!("`{}` = {v} is outside 1..=1048576", key(k))));
            }
            Ok(v as usize)
        };
        let dim = us("embedding_length")?;
        let n_heads = us("attention.head_count")?;
        let n_kv_heads = match g.get(&key("attention.head_count_kv")) {
            Some(_) => us("attention.head_count_kv")?,
            None => n_heads,
        };
        if dim % n_heads != 0 {
            return Err(Error::Config(format!("embedding_length {dim} is not a multiple of head_count {n_heads}")));
        }
        if n_heads % n_kv_heads != 0 {
            return Err(Error::Config(format!("head_count {n_heads} is not a multiple of head_count_kv {n_kv_heads}")));
        }
        let head_dim = dim / n_heads;
        if head_dim % 2 != 0 {
            return Err(Error::Config(format!("head dimension {head_dim} is odd; RoPE needs pairs")));
        }
        if let Some(v) = g.get(&key("rope.dimension_count")) {
            if v.as_u64() != Some(head_dim as u64) {
                return Err(Error::NotSupported(format!("partial RoPE (`rope.dimension_count` = {})", v.summary())));
            }
        }
        let rms_eps = g.f64(&key("attention.layer_norm_rms_epsilon"))? as f32;
        let rope_base = match g.get(&key("rope.freq_base")) {
            Some(_) => g.f64(&key("rope.freq_base"))? as f32,
            None => 10000.0,
        };
        // Written so that NaN fails too.
        let within = |v: f32, lo: f32, hi: f32| v > lo && v < hi;
        if !within(rms_eps, 0.0, 1.0) || !within(rope_base, 1.0, f32::INFINITY) {
            return Err(Error::Config(format!("rms epsilon {rms_eps} or rope base {rope_base} is out of range")));
        }
        let embd = g.tensor("token_embd.weight").ok_or_else(|| Error::MissingTensor("token_embd.weight".into()))?;
        let vocab_size = *embd.dims.get(1).unwrap_or(&0) as usize;
        if let Ok(n) = g.str_array("tokenizer.ggml.tokens").map(|t| t.len()) {
            if n != vocab_size {
                return Err(Error::Config(format!("the vocabulary has {n} tokens but `token_embd.weight` has {vocab_size} rows")));
            }
        }
        let cfg = Config {
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
            rope_base,
            tied_output: g.tensor("output.weight").is_none(),
        };
        cfg.check_tensors(g)?;
        Ok(cfg)
    }

    /// Every tensor the forward pass reads, with the shape it must have (`dims[0]` innermost).
    pub fn expected_tensors(&self) -> Vec<(String, Vec<u64>)> {
        let (d, f, kv, v) = (self.dim as u64, self.ffn_dim as u64, self.kv_dim() as u64, self.vocab_size as u64);
        let mut t = vec![("token_embd.weight".to_string(), vec![d, v]), ("output_norm.weight".to_string(), vec![d])];
        if !self.tied_output {
            t.push(("output.weight".into(), vec![d, v]));
        }
        for l in 0..self.n_layers {
            for (n, s) in [
                ("attn_norm", vec![d]),
                ("attn_q", vec![d, d]),
                ("attn_k", vec![d, kv]),
                ("attn_v", vec![d, kv]),
                ("attn_output", vec![d, d]),
                ("ffn_norm", vec![d]),
                ("ffn_gate", vec![d, f]),
                ("ffn_up", vec![d, f]),
                ("ffn_down", vec![f, d]),
            ] {
                t.push((format!("blk.{l}.{n}.weight"), s));
            }
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
                return Err(Error::UnsupportedType { name, ty: format!("{} (norm weights must be F32)", t.ty.name()) });
            }
        }
        Ok(())
    }
}
