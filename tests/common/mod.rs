//! Shared test helpers: the GPU context (a missing adapter fails under CI), seeded data, and
//! an error report that names the worst element.
#![allow(dead_code)]

use kvscope::gpu::GpuContext;

/// The GPU, or None with a printed reason on a developer machine without one. Under CI (`CI` set)
/// a missing adapter is a failure: lavapipe is installed there.
/// The GPU context as the adapter suggests (subgroups where it has them, rows per invocation by
/// adapter type), then the plain one (no subgroups, one row per invocation): both paths of every
/// specialised kernel are tested.
pub fn gpus() -> Vec<GpuContext> {
    let Some(full) = gpu() else { return Vec::new() };
    let plain = pollster::block_on(GpuContext::with_options(kvscope::GpuOptions::plain())).expect("plain context");
    vec![full, plain]
}

pub fn gpu() -> Option<GpuContext> {
    match pollster::block_on(GpuContext::new()) {
        Ok(ctx) => Some(ctx),
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED: no GPU adapter ({e}); install mesa-vulkan-drivers to run GPU tests");
            None
        }
        Err(e) => panic!("no GPU adapter under CI: {e}"),
    }
}

pub fn random(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n).map(|_| (rng.f32() * 2.0 - 1.0) * scale).collect()
}

/// Max absolute error, where it is, and the same normalised by the reference's max magnitude.
pub fn max_err(got: &[f32], want: &[f32]) -> (f32, usize, f32) {
    assert_eq!(got.len(), want.len(), "lengths differ");
    let mut worst = (0.0f32, 0usize);
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        let e = (a - b).abs();
        if e.is_nan() || e > worst.0 {
            worst = (if e.is_nan() { f32::INFINITY } else { e }, i);
        }
    }
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-30);
    (worst.0, worst.1, worst.0 / scale)
}

pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    let (e, i, rel) = max_err(got, want);
    eprintln!("{what}: max abs error {e:.3e} at [{i}] (normalised {rel:.3e})");
    assert!(e <= tol, "{what}: max abs error {e:e} at index {i} (got {}, want {}) exceeds {tol:e}", got[i], want[i]);
}

use kvscope::gguf::{Value, Writer};
use kvscope::quant::{quantize, GgmlType};

/// `n` elements of type `ty` as seeded random ggml blocks: random bytes, so every code and
/// sub-block scale bit pattern occurs (negative Q3_K and Q6_K scales, set and clear high bits),
/// with each f16 field set to a random f16 of either sign whose size keeps the elements within
/// about ±`scale`, some subnormal. F32 and F16: random values in ±`scale`, encoded.
pub fn random_blocks(ty: GgmlType, n: usize, seed: u64, scale: f32) -> Vec<u8> {
    use GgmlType::*;
    // (byte offset of an f16 field in the block, the largest code (product) it multiplies)
    let halves: &[(usize, f32)] = match ty {
        F32 | F16 => return quantize(ty, &random(n, seed, scale)),
        Q4_0 => &[(0, 8.0)],
        Q4_1 => &[(0, 15.0), (2, 1.0)],
        Q5_0 => &[(0, 16.0)],
        Q5_1 => &[(0, 31.0), (2, 1.0)],
        Q8_0 => &[(0, 128.0)],
        Q2_K => &[(80, 15.0 * 3.0), (82, 15.0)],
        Q3_K => &[(108, 32.0 * 4.0)],
        Q4_K => &[(0, 63.0 * 15.0), (2, 63.0)],
        Q5_K => &[(0, 63.0 * 31.0), (2, 63.0)],
        Q6_K => &[(208, 128.0 * 32.0)],
    };
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut bytes: Vec<u8> = (0..ty.bytes_for(n)).map(|_| rng.u8(..)).collect();
    for block in bytes.chunks_exact_mut(ty.block_bytes()) {
        for &(at, codes) in halves {
            // One field in eight subnormal (below 2^-14), as most Q6_K scales of real models are.
            let v = if rng.u8(..8) == 0 { rng.f32() * 6.1e-5 } else { (rng.f32() * scale / codes).max(6.2e-5) };
            let v = if rng.bool() { v } else { -v };
            block[at..at + 2].copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
        }
    }
    bytes
}

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
    let alphabet = kvscope::tokenizer::byte_to_char();
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
        .kv(&format!("{arch}.embedding_length"), Value::U32(SYN_DIM as u32))
        .kv(&format!("{arch}.feed_forward_length"), Value::U32(SYN_FFN as u32))
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
pub fn synthetic_arch_model(arch: kvscope::config::Arch, seed: u64) -> Vec<u8> {
    synthetic_arch_model_with(arch, seed, &|_, dims| Some(dims.to_vec()))
}

/// What `synthetic_arch_model_with` does to each tensor: (name, dims) → the dims to write, or None.
pub type Tweak = dyn Fn(&str, &[u64]) -> Option<Vec<u64>>;

/// `synthetic_arch_model` with each tensor passed through `tweak(name, dims)`: None leaves it
/// out, Some(dims) writes it with those dims (for malformed models).
pub fn synthetic_arch_model_with(arch: kvscope::config::Arch, seed: u64, tweak: &Tweak) -> Vec<u8> {
    use kvscope::config::Arch;
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
