//! Every architecture on a small synthetic model (`common::synthetic_arch_model`): the CPU
//! reference against llama.cpp's logits for the same file (committed goldens, made by
//! `tests/golden/make_arch_goldens.py`), and the GPU against the CPU, token by token and batched.

mod common;

use common::{assert_close, gpu, synthetic_arch_model, synthetic_arch_model_with};
use kvscope::backend::gpu::{FUSE_ATTENTION, FUSE_GLU, FUSE_MERGE, FUSE_NORM};
use kvscope::core::config::Arch;
use kvscope::{BackendKind, Engine, GpuOptions, LoadOptions};

const VOCAB: usize = 261;

/// The prompt every check feeds: 75 positions, so that Gemma's 8-position window wraps its ring
/// of 40 rows (8 + one 32-token chunk) and the GPU runs two full prefill chunks and a partial one.
fn ids() -> Vec<u32> {
    (0..75).map(|i| (i * 37 + 5) % VOCAB as u32).collect()
}

fn logits(bytes: &[u8], opts: LoadOptions, ids: &[u32]) -> Vec<f32> {
    let mut e = pollster::block_on(Engine::load(bytes, opts)).expect("load");
    pollster::block_on(e.logits_for(ids)).expect("forward")
}

fn opts(backend: BackendKind) -> LoadOptions {
    LoadOptions { backend, context: 128, ..Default::default() }
}

/// llama.cpp's logits for `arch`'s synthetic model: (positions, [positions × V]).
fn golden(arch: Arch) -> (Vec<usize>, Vec<f32>) {
    let path = format!("{}/tests/golden/arch_{}.json", env!("CARGO_MANIFEST_DIR"), arch.name());
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}; run tests/golden/make_arch_goldens.py"));
    let v: serde_json::Value = serde_json::from_str(&text).expect("golden json");
    assert_eq!(v["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect::<Vec<_>>(), ids());
    let positions = v["positions"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
    let logits = v["logits"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    (positions, logits)
}

fn check(arch: Arch) {
    let bytes = synthetic_arch_model(arch, 300);
    let ids = ids();
    let cpu = logits(&bytes, opts(BackendKind::Reference), &ids);

    // The CPU against llama.cpp (f32 weights and cache on both sides: only rounding differs,
    // measured ≤ 1.5e-5). Gemma's GELU is the exception: ggml's CPU GELU looks its result up in a
    // table indexed by the f16 rounding of its input (GGML_GELU_FP16), which moves these logits by
    // ~2e-3 from the first position on, as much before the ring wraps (position 40) as after.
    let (positions, want) = golden(arch);
    let got: Vec<f32> = positions.iter().flat_map(|&p| cpu[p * VOCAB..][..VOCAB].to_vec()).collect();
    let tol = if arch == Arch::Gemma3 { 5e-3 } else { 1e-4 };
    assert_close(&format!("{}: CPU against llama.cpp", arch.name()), &got, &want, tol);
    gpu_against_cpu(arch, &bytes, &ids, &cpu);
}

fn gpu_against_cpu(arch: Arch, bytes: &[u8], ids: &[u32], cpu: &[f32]) {
    if gpu().is_none() {
        return;
    }
    assert_close(&format!("{}: GPU against CPU", arch.name()), &logits(bytes, opts(BackendKind::Gpu), ids), cpu, 1e-4);
    let plain = LoadOptions { gpu: GpuOptions::plain(), ..opts(BackendKind::Gpu) };
    assert_close(&format!("{}: GPU (plain kernels) against CPU", arch.name()), &logits(bytes, plain, ids), cpu, 1e-4);
    // The decode step one dispatch per op (`GpuOptions::fuse` 0), and each fusion alone.
    for fuse in [0, FUSE_NORM, FUSE_ATTENTION, FUSE_MERGE, FUSE_GLU] {
        let o = LoadOptions { gpu: GpuOptions { fuse, ..Default::default() }, ..opts(BackendKind::Gpu) };
        assert_close(&format!("{}: GPU (fuse {fuse}) against CPU", arch.name()), &logits(bytes, o, ids), cpu, 1e-4);
    }
    for n in [2, 33, 75] {
        let mut e = pollster::block_on(Engine::load(bytes, opts(BackendKind::Gpu))).expect("load");
        pollster::block_on(e.feed(&ids[..n])).expect("prefill");
        let last = &cpu[(n - 1) * VOCAB..][..VOCAB];
        assert_close(&format!("{}: prefill of {n} tokens", arch.name()), e.logits(), last, 1e-4);
    }
}

/// GPU against CPU only (no golden needed): `cargo test --test archs gpu_only -- --ignored`.
#[test]
#[ignore]
fn gpu_only() {
    for arch in Arch::ALL {
        let bytes = synthetic_arch_model(arch, 300);
        let cpu = logits(&bytes, opts(BackendKind::Reference), &ids());
        gpu_against_cpu(arch, &bytes, &ids(), &cpu);
    }
}

#[test]
fn llama() {
    check(Arch::Llama);
}

#[test]
fn qwen2() {
    check(Arch::Qwen2);
}

#[test]
fn qwen3() {
    check(Arch::Qwen3);
}

#[test]
fn gemma3() {
    check(Arch::Gemma3);
}

/// Writes the synthetic models to `target/synthetic/<arch>.gguf` for the golden script:
/// `cargo test --release --test archs -- --ignored write_models`.
#[test]
#[ignore]
fn write_models() {
    let dir = format!("{}/target/synthetic", env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir_all(&dir).unwrap();
    for arch in Arch::ALL {
        std::fs::write(format!("{dir}/{}.gguf", arch.name()), synthetic_arch_model(arch, 300)).unwrap();
    }
    std::fs::write(format!("{dir}/ids.json"), serde_json::to_string(&ids()).unwrap()).unwrap();
}

/// A known architecture with a tensor of its own missing or mis-shaped is refused by that
/// tensor's name; an unknown architecture by name, with the supported list.
#[test]
fn malformed_models_name_the_problem() {
    let load = |bytes: Vec<u8>| pollster::block_on(Engine::load(&bytes, opts(BackendKind::Reference))).err().expect("refused").to_string();
    let err = load(synthetic_arch_model_with(Arch::Qwen2, 1, &|n, d| (n != "blk.1.attn_k.bias").then(|| d.to_vec())));
    assert!(err.contains("blk.1.attn_k.bias"), "{err}");
    let err =
        load(synthetic_arch_model_with(Arch::Gemma3, 1, &|n, d| Some(if n == "blk.3.attn_q_norm.weight" { vec![16] } else { d.to_vec() })));
    assert!(err.contains("blk.3.attn_q_norm.weight") && err.contains("[16]"), "{err}");
    let err = load(synthetic_arch_model_with(Arch::Gemma3, 1, &|n, d| (n != "blk.5.post_ffw_norm.weight").then(|| d.to_vec())));
    assert!(err.contains("blk.5.post_ffw_norm.weight"), "{err}");
    let mut bytes = synthetic_arch_model(Arch::Qwen3, 1);
    let at = bytes.windows(5).position(|w| w == b"qwen3").unwrap();
    bytes[at..at + 5].copy_from_slice(b"phi42");
    let err = load(bytes);
    assert!(err.contains("`phi42`") && err.contains("llama, qwen2, qwen3, gemma3"), "{err}");
}
