//! What a model is and what it needs, from its header alone: one shape for `kvscope inspect
//! --json` (`model`), the page's model plan (`inspectModel`) and the engine's state.

use serde::Serialize;

use crate::core::config::{Config, KvType};
use crate::core::gguf::Gguf;

#[derive(Debug, Clone, Serialize)]
pub struct ModelFacts {
    /// The architecture and its shapes (`name`, `arch`, `n_layers`, … at the top level).
    #[serde(flatten)]
    pub config: Config,
    pub file_bytes: u64,
    /// Bytes of the tensors in the file.
    pub weights_bytes: u64,
    /// T: the positions the KV cache is sized for.
    pub context: usize,
    pub kv_type: KvType,
    /// Bytes per cached value: 4 (f32), 2 (f16), 1.0625 (q8_0), 0.5625 (q4_0).
    pub kv_value_bytes: f64,
    /// Bytes of K and V per cached position over all layers.
    pub kv_bytes_per_token: u64,
    /// Bytes of the whole KV cache at `context` (sliding-window layers keep their rings).
    pub kv_cache_bytes: u64,
    /// weights + KV cache.
    pub total_bytes: u64,
    /// The metadata has `tokenizer.chat_template`, so turns can be rendered for chat.
    pub chat_template: bool,
    /// Cache rows of each layer at `context` (`Config::cache_rows`): the context, or the ring of
    /// a sliding-window layer, where position p is in row p mod rows.
    pub layer_rows: Vec<usize>,
}

impl ModelFacts {
    pub fn new(g: &Gguf, cfg: &Config, context: usize, kv: KvType) -> Self {
        let weights_bytes = g.tensors.iter().map(|t| t.size).sum();
        let kv_cache_bytes = cfg.kv_cache_bytes(context, kv);
        ModelFacts {
            config: cfg.clone(),
            file_bytes: g.file_len,
            weights_bytes,
            context,
            kv_type: kv,
            kv_value_bytes: kv.value_bytes(),
            kv_bytes_per_token: cfg.kv_cache_bytes(1, kv),
            kv_cache_bytes,
            total_bytes: weights_bytes + kv_cache_bytes,
            chat_template: g.str("tokenizer.chat_template").is_ok(),
            layer_rows: cfg.layer_rows(context),
        }
    }
}
