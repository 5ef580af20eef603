//! Shared test helpers: those of `kvscope::testing` (GPU contexts, seeded data, errors that name
//! the worst element), and synthetic models written with the GGUF writer.
#![allow(dead_code)]

pub use kvscope::testing::*;

use kvscope::core::gguf::{Value, Writer};
use kvscope::core::quant::{quantize, GgmlType};

/// Shapes of the synthetic model: d = 64, f = 96, 4 query heads sharing 2 KV heads of 16 dims.
pub const SYN_DIM: usize = 64;
pub const SYN_FFN: usize = 96;

/// Weight types for each tensor of the synthetic model.
pub struct SynTypes {
    pub embd: GgmlType,
    pub q: GgmlType,
    pub k: GgmlType,
    pub v: GgmlType,
    pub o: GgmlType,
    pub gate: GgmlType,
    pub up: GgmlType,
    pub down: GgmlType,
    /// None: tied to the embedding.
    pub output: Option<GgmlType>,
}

impl SynTypes {
    /// The default model's layout: Q4_1 tensors, a Q8_0 embedding tied to the output.
    pub fn q4_1() -> Self {
        use GgmlType::*;
        SynTypes { embd: Q8_0, q: Q4_1, k: Q4_1, v: Q4_1, o: Q4_1, gate: Q4_1, up: Q4_1, down: Q4_1, output: None }
    }
}

pub fn strs(v: &[String]) -> Value {
    Value::Array(8, v.iter().map(|s| Value::String(s.clone())).collect())
}

/// The synthetic model's metadata (no tensors): a byte-level vocabulary of the 256 bytes, two
/// merges and three control tokens.
pub fn synthetic_writer(n_layers: u32) -> (Writer, usize) {
    synthetic_writer_for("llama", n_layers)
}

/// `synthetic_writer` with the metadata keys of architecture `arch`.
pub fn synthetic_writer_for(arch: &str, n_layers: u32) -> (Writer, usize) {
    synthetic_writer_shaped(arch, n_layers, SYN_DIM as u32, SYN_FFN as u32)
}

/// `synthetic_writer_for` with embedding width `dim` and feed-forward width `ffn`.
pub fn synthetic_writer_shaped(arch: &str, n_layers: u32, dim: u32, ffn: u32) -> (Writer, usize) {
    let alphabet = kvscope::core::tokenizer::byte_to_char();
    let mut tokens: Vec<String> = vec!["<|endoftext|>".into(), "<|im_start|>".into(), "<|im_end|>".into()];
    tokens.extend(alphabet.iter().map(|c| c.to_string()));
    tokens.push("he".into());
    tokens.push("Ġt".into());
    let mut types = vec![Value::I32(3); 3];
    types.extend(std::iter::repeat_n(Value::I32(1), tokens.len() - 3));
    let mut w = Writer::new();
    w.kv("general.architecture", Value::String(arch.into()))
        .kv("general.name", Value::String("synthetic".into()))
        .kv(&format!("{arch}.block_count"), Value::U32(n_layers))
        .kv(&format!("{arch}.context_length"), Value::U32(256))
        .kv(&format!("{arch}.embedding_length"), Value::U32(dim))
        .kv(&format!("{arch}.feed_forward_length"), Value::U32(ffn))
        .kv(&format!("{arch}.attention.head_count"), Value::U32(4))
        .kv(&format!("{arch}.attention.head_count_kv"), Value::U32(2))
        .kv(&format!("{arch}.rope.freq_base"), Value::F32(10000.0))
        .kv(&format!("{arch}.attention.layer_norm_rms_epsilon"), Value::F32(1e-5))
        .kv("tokenizer.ggml.model", Value::String("gpt2".into()))
        .kv("tokenizer.ggml.pre", Value::String("smollm".into()))
        .kv("tokenizer.ggml.tokens", strs(&tokens))
        .kv("tokenizer.ggml.token_type", Value::Array(5, types))
        .kv("tokenizer.ggml.merges", strs(&["h e".to_string(), "Ġ t".to_string()]))
        .kv("tokenizer.ggml.bos_token_id", Value::U32(1))
        .kv("tokenizer.ggml.eos_token_id", Value::U32(0));
    let vocab = tokens.len();
    (w, vocab)
}

/// A one-layer synthetic llama GGUF of width `d` and feed-forward width `ffn`, every Q4_0 weight
/// zero and not written: a sparse file at `path` (its header on disk, the rest holes), for the
/// checks made from a header.
pub fn zero_model_file(path: &std::path::Path, d: u64, ffn: u64) {
    let (mut w, vocab) = synthetic_writer_shaped("llama", 1, d as u32, ffn as u32);
    let q4 = GgmlType::Q4_0.id();
    let mut z = |name: &str, cols: u64, rows: u64| {
        w.tensor_zeros(name, &[cols, rows], q4, cols / 32 * 18 * rows);
    };
    z("token_embd.weight", d, vocab as u64);
    for (t, cols, rows) in [("attn_q", d, d), ("attn_k", d, d / 2), ("attn_v", d, d / 2), ("attn_output", d, d)] {
        z(&format!("blk.0.{t}.weight"), cols, rows);
    }
    for (t, cols, rows) in [("ffn_gate", d, ffn), ("ffn_up", d, ffn), ("ffn_down", ffn, d)] {
        z(&format!("blk.0.{t}.weight"), cols, rows);
    }
    for t in ["output_norm", "blk.0.attn_norm", "blk.0.ffn_norm"] {
        w.tensor(&format!("{t}.weight"), &[d], GgmlType::F32.id(), vec![0; d as usize * 4]);
    }
    w.write_sparse(&mut std::fs::File::create(path).unwrap()).unwrap();
}

/// A complete synthetic llama GGUF with seeded random weights of the given types.
pub fn synthetic_model(t: &SynTypes, n_layers: u32, seed: u64) -> Vec<u8> {
    let (mut w, vocab) = synthetic_writer(n_layers);
    let (d, f, kv) = (SYN_DIM as u64, SYN_FFN as u64, 32u64);
    let mut s = seed;
    let mut tensor = |w: &mut Writer, name: &str, dims: &[u64], ty: GgmlType, scale: f32| {
        s += 1;
        let n: u64 = dims.iter().product();
        let mut x = random(n as usize, s, scale);
        if dims.len() == 1 {
            x.iter_mut().for_each(|v| *v += 1.0);
        }
        w.tensor(name, dims, ty.id(), quantize(ty, &x));
    };
    tensor(&mut w, "token_embd.weight", &[d, vocab as u64], t.embd, 1.0);
    tensor(&mut w, "output_norm.weight", &[d], GgmlType::F32, 0.2);
    if let Some(o) = t.output {
        tensor(&mut w, "output.weight", &[d, vocab as u64], o, 0.3);
    }
    for l in 0..n_layers {
        let n = |s: &str| format!("blk.{l}.{s}.weight");
        tensor(&mut w, &n("attn_norm"), &[d], GgmlType::F32, 0.2);
        tensor(&mut w, &n("attn_q"), &[d, d], t.q, 0.3);
        tensor(&mut w, &n("attn_k"), &[d, kv], t.k, 0.3);
        tensor(&mut w, &n("attn_v"), &[d, kv], t.v, 0.3);
        tensor(&mut w, &n("attn_output"), &[d, d], t.o, 0.2);
        tensor(&mut w, &n("ffn_norm"), &[d], GgmlType::F32, 0.2);
        tensor(&mut w, &n("ffn_gate"), &[d, f], t.gate, 0.3);
        tensor(&mut w, &n("ffn_up"), &[d, f], t.up, 0.3);
        tensor(&mut w, &n("ffn_down"), &[f, d], t.down, 0.2);
    }
    w.to_bytes()
}

/// The default model's bytes, or None with a printed reason outside CI (under CI it must exist:
/// `.ci/run` fetches it).
pub fn default_model() -> Option<Vec<u8>> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(kvscope::DEFAULT_MODEL);
    match std::fs::read(&path) {
        Ok(b) => Some(b),
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED: {} ({e}); run scripts/fetch-model.sh", path.display());
            None
        }
        Err(e) => panic!("default model missing under CI: {}: {e}", path.display()),
    }
}

/// A small model of architecture `arch` with seeded random F32 weights (so that an f32 peer such
/// as llama.cpp computes the same logits within rounding), on the synthetic byte-level
/// vocabulary: d = 64, f = 96, 4 query heads sharing 2 KV heads. Qwen 3 and Gemma 3 take heads of
/// 32 dims (`key_length`), so q is wider than d; Gemma 3 has 6 layers (5 sliding-window layers
/// with a window of 8, then one global) and a tied output, as do Qwen 2 and 3.
pub fn synthetic_arch_model(arch: kvscope::core::config::Arch, seed: u64) -> Vec<u8> {
    synthetic_arch_model_with(arch, seed, &|_, dims| Some(dims.to_vec()))
}

/// What `synthetic_arch_model_with` does to each tensor: (name, dims) → the dims to write, or None.
pub type Tweak = dyn Fn(&str, &[u64]) -> Option<Vec<u64>>;

/// `synthetic_arch_model` with each tensor passed through `tweak(name, dims)`: None leaves it
/// out, Some(dims) writes it with those dims (for malformed models).
pub fn synthetic_arch_model_with(arch: kvscope::core::config::Arch, seed: u64, tweak: &Tweak) -> Vec<u8> {
    use kvscope::core::config::Arch;
    let name = arch.name();
    let (d, f, h, hkv) = (SYN_DIM as u64, SYN_FFN as u64, 4u64, 2u64);
    let hd = match arch {
        Arch::Qwen3 | Arch::Gemma3 => 32,
        _ => d / h,
    };
    let n_layers = if arch == Arch::Gemma3 { 6 } else { 2 };
    let (mut out, vocab) = synthetic_writer_for(name, n_layers as u32);
    if hd != d / h {
        out.kv(&format!("{name}.attention.key_length"), Value::U32(hd as u32));
        out.kv(&format!("{name}.attention.value_length"), Value::U32(hd as u32));
    }
    if arch == Arch::Gemma3 {
        out.kv(&format!("{name}.attention.sliding_window"), Value::U32(8));
    }
    let (q, kv, v) = (h * hd, hkv * hd, vocab as u64);
    let mut s = seed;
    let mut tensor = |w: &mut Writer, name: &str, dims: &[u64], scale: f32, offset: f32| {
        s += 1;
        let Some(dims) = tweak(name, dims) else { return };
        let n: u64 = dims.iter().product();
        let x: Vec<f32> = random(n as usize, s, scale).into_iter().map(|v| v + offset).collect();
        w.tensor(name, &dims, GgmlType::F32.id(), quantize(GgmlType::F32, &x));
    };
    tensor(&mut out, "token_embd.weight", &[d, v], 1.0, 0.0);
    tensor(&mut out, "output_norm.weight", &[d], 0.2, 1.0);
    if arch == Arch::Llama {
        tensor(&mut out, "output.weight", &[d, v], 0.3, 0.0);
    }
    for l in 0..n_layers {
        let n = |s: &str| format!("blk.{l}.{s}");
        tensor(&mut out, &n("attn_norm.weight"), &[d], 0.2, 1.0);
        tensor(&mut out, &n("attn_q.weight"), &[d, q], 0.3, 0.0);
        tensor(&mut out, &n("attn_k.weight"), &[d, kv], 0.3, 0.0);
        tensor(&mut out, &n("attn_v.weight"), &[d, kv], 0.3, 0.0);
        if arch == Arch::Qwen2 {
            tensor(&mut out, &n("attn_q.bias"), &[q], 0.5, 0.0);
            tensor(&mut out, &n("attn_k.bias"), &[kv], 0.5, 0.0);
            tensor(&mut out, &n("attn_v.bias"), &[kv], 0.5, 0.0);
        }
        if matches!(arch, Arch::Qwen3 | Arch::Gemma3) {
            tensor(&mut out, &n("attn_q_norm.weight"), &[hd], 0.2, 1.0);
            tensor(&mut out, &n("attn_k_norm.weight"), &[hd], 0.2, 1.0);
        }
        tensor(&mut out, &n("attn_output.weight"), &[q, d], 0.2, 0.0);
        tensor(&mut out, &n("ffn_norm.weight"), &[d], 0.2, 1.0);
        tensor(&mut out, &n("ffn_gate.weight"), &[d, f], 0.3, 0.0);
        tensor(&mut out, &n("ffn_up.weight"), &[d, f], 0.3, 0.0);
        tensor(&mut out, &n("ffn_down.weight"), &[f, d], 0.2, 0.0);
        if arch == Arch::Gemma3 {
            tensor(&mut out, &n("post_attention_norm.weight"), &[d], 0.2, 1.0);
            tensor(&mut out, &n("post_ffw_norm.weight"), &[d], 0.2, 1.0);
        }
    }
    out.to_bytes()
}

/// Gemma 3 270M Q4_K_M's bytes, or None with a printed reason outside CI (under CI it must
/// exist: `scripts/setup.sh` fetches it).
pub fn gemma_model() -> Option<Vec<u8>> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("www/models/gemma-3-270m-q4_k_m.gguf");
    match std::fs::read(&path) {
        Ok(b) => Some(b),
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED: {} ({e}); run scripts/fetch-model.sh gemma", path.display());
            None
        }
        Err(e) => panic!("Gemma missing under CI: {}: {e}", path.display()),
    }
}

/// `bytes` (a GGUF with a `tokenizer.chat_template`) with `template` in its place. The new text
/// is padded with a Jinja comment to a length that differs by a multiple of 32 (the GGUF
/// alignment), so the tensor data keeps its alignment and every offset into it holds.
pub fn with_chat_template(bytes: &[u8], template: &str) -> Vec<u8> {
    let key = b"tokenizer.chat_template";
    let at = bytes.windows(key.len()).position(|w| w == key).expect("the model has a chat template") + key.len();
    assert_eq!(u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()), 8, "a string value");
    let len = u64::from_le_bytes(bytes[at + 4..at + 12].try_into().unwrap()) as usize;
    let mut text = template.to_string() + "{#";
    while !(text.len() + 2).abs_diff(len).is_multiple_of(32) {
        text.push(' ');
    }
    text.push_str("#}");
    let mut out = bytes[..at + 4].to_vec();
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&bytes[at + 12 + len..]);
    out
}

/// The Qwen 2.5 chat template (tools in `<tools>`, calls in `<tool_call>` blocks).
pub const QWEN25_TEMPLATE: &str = include_str!("../data/qwen2.5-chat-template.jinja");
/// The Llama 3.1 chat template (tools in the first user turn, calls as bare JSON).
pub const LLAMA31_TEMPLATE: &str = include_str!("../data/llama3.1-chat-template.jinja");
