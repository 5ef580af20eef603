//! KV-cache policies on the CPU reference (`core::kv_policy`, `engine::kv_lab`): policies that
//! hold every position give the exact cache's logits bit for bit; the quantised caches cost what
//! ggml's blocks cost and move the distribution more as they keep fewer bits; each eviction rule
//! holds exactly the positions it says (read from the attention weights the engine reports);
//! what a backend cannot run is refused by name.

mod common;

use common::{assert_close, synthetic_arch_model, synthetic_model, SynTypes};
use kvscope::core::config::Arch;
use kvscope::core::gguf::Gguf;
use kvscope::core::kv_policy::KvPolicy;
use kvscope::core::quant::GgmlType::F32;
use kvscope::core::tokenizer::Tokenizer;
use kvscope::engine::kv_lab::{kv_compare, KvComparison, PREFIX};
use kvscope::{BackendKind, Engine, Flaw, GenerateOptions, GpuOptions, LoadOptions};

fn opts() -> LoadOptions {
    LoadOptions { backend: BackendKind::Reference, context: 128, ..Default::default() }
}

fn ids(n: usize) -> Vec<u32> {
    (0..n as u32).map(|i| (i * 37 + 5) % 261).collect()
}

fn compare(bytes: &[u8], n: usize, policies: &str) -> KvComparison {
    let policies = KvPolicy::parse_list(policies).unwrap();
    pollster::block_on(kv_compare(bytes, &opts(), &ids(n), &policies)).expect("kv-compare")
}

/// Nothing evicted and nothing rounded: the same logits as the exact cache, bit for bit, on a
/// model with global layers (Llama) and one with sliding-window layers and head norms (Gemma 3),
/// for window, sinks (keys turned at their place in the cache, which is their position while
/// nothing is evicted) and H2O.
#[test]
fn policies_holding_every_position_are_the_exact_cache() {
    for arch in [Arch::Llama, Arch::Gemma3] {
        let bytes = synthetic_arch_model(arch, 300);
        // 96 positions: the free generation's 32 + 64.
        let r = compare(&bytes, 60, "f32,window-96,sink-4-window-92,h2o-96");
        assert_eq!(r.positions, 59);
        let exact = &r.policies[0];
        for p in &r.policies {
            assert_eq!((p.top1_agreement, p.mean_kl, p.first_divergence), (1.0, 0.0, None), "{}: {}", arch.name(), p.name);
            assert_eq!(p.perplexity, exact.perplexity, "{}", p.name);
            assert_eq!(p.cache_bytes, exact.cache_bytes, "{}", p.name);
        }
        free_texts_part_at_the_first_divergence(&bytes, &r);
    }
}

/// f16, Q8_0 and Q4_0 caches: ggml's bytes (2 of 4, 34 of 128, 18 of 128), and the further from
/// the exact distribution the fewer bits they keep.
#[test]
fn quantised_caches_cost_their_blocks_and_move_the_distribution() {
    let bytes = synthetic_arch_model(Arch::Llama, 300);
    let r = compare(&bytes, 60, "f32,f16,q8_0,q4_0");
    let [f32, f16, q8, q4] = [0, 1, 2, 3].map(|i| &r.policies[i]);
    // Llama's synthetic model: 2 layers of 32-value K and V rows.
    assert_eq!(f32.bytes_per_position, 2 * 2 * 32 * 4);
    assert_eq!(
        (f16.bytes_per_position * 2, q8.bytes_per_position * 128, q4.bytes_per_position * 128),
        (f32.bytes_per_position, f32.bytes_per_position * 34, f32.bytes_per_position * 18)
    );
    assert_eq!(f32.cache_bytes, 60 * f32.bytes_per_position);
    assert!(
        0.0 < f16.mean_kl && f16.mean_kl < q8.mean_kl && q8.mean_kl < q4.mean_kl,
        "KL: f16 {} q8_0 {} q4_0 {}",
        f16.mean_kl,
        q8.mean_kl,
        q4.mean_kl
    );
    assert!(f16.top1_agreement >= q4.top1_agreement);
    free_texts_part_at_the_first_divergence(&bytes, &r);
}

/// Each free generation against the exact cache's: `free_steps` tokens, their pieces and text as
/// the model's tokenizer makes them, the same ids before `first_divergence` and a different token
/// at it (so the text before it is the same), and with none the exact cache's generation whole.
fn free_texts_part_at_the_first_divergence(bytes: &[u8], r: &KvComparison) {
    let tok = Tokenizer::from_gguf(&Gguf::parse(bytes).unwrap()).unwrap();
    let exact = &r.reference;
    assert!(r.free_steps > 0 && r.prefix_text == tok.decode(&ids(60)[..PREFIX]));
    for run in std::iter::once(exact).chain(r.policies.iter().map(|p| &p.free)) {
        assert_eq!((run.ids.len(), run.text.clone()), (r.free_steps, tok.decode(&run.ids)));
        assert_eq!(run.pieces, run.ids.iter().map(|&i| tok.token_text(i)).collect::<Vec<_>>());
    }
    for p in &r.policies {
        match p.first_divergence {
            None => assert_eq!(p.free, *exact, "{}", p.name),
            Some(d) => {
                assert_eq!(p.free.ids[..d], exact.ids[..d], "{}", p.name);
                assert_ne!(p.free.ids[d], exact.ids[d], "{}", p.name);
                assert_eq!(tok.decode(&p.free.ids[..d]), tok.decode(&exact.ids[..d]), "{}", p.name);
            }
        }
    }
}

/// The positions each rule holds, as the last query's attention weights show them (zero where a
/// position is evicted): the last 16; the first 4 and the last 12; 16 of them for H2O, the 8
/// most recent among them. A window's bytes stay fixed as the text grows, and until it is full
/// a window is the exact cache.
#[test]
fn eviction_holds_what_each_policy_says() {
    let bytes = synthetic_arch_model(Arch::Llama, 300);
    let held = |policy: &str| {
        let o = opts().with_policy(policy.parse().unwrap());
        let mut e = pollster::block_on(Engine::load(&bytes, o)).unwrap();
        pollster::block_on(e.feed(&ids(40))).unwrap();
        let w = pollster::block_on(e.attention_weights(1)).unwrap();
        assert_eq!(w.len(), e.cfg.n_heads * 40);
        // Every head attends the same positions; the weights of each sum to 1.
        let rows: Vec<Vec<usize>> = w.chunks(40).map(|r| (0..40).filter(|&p| r[p] != 0.0).collect()).collect();
        assert!(rows.iter().all(|r| r == &rows[0]), "{policy}: heads disagree");
        for r in w.chunks(40) {
            assert!((r.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
        rows[0].clone()
    };
    assert_eq!(held("window-16"), (24..40).collect::<Vec<_>>());
    assert_eq!(held("sink-4-window-12"), (0..4).chain(28..40).collect::<Vec<_>>());
    let h2o = held("h2o-16");
    assert_eq!(h2o.len(), 16);
    assert!((32..40).all(|p| h2o.contains(&p)), "H2O keeps the 8 most recent: {h2o:?}");
    assert!(h2o.iter().any(|&p| p < 24), "H2O keeps heavy hitters beyond the window: {h2o:?}");

    let (short, long) = (compare(&bytes, 40, "window-16"), compare(&bytes, 60, "window-16"));
    assert_eq!(short.policies[0].cache_bytes, long.policies[0].cache_bytes);
    let w = &long.policies[0];
    assert!(w.kl_by_position[..16].iter().all(|&k| k == 0.0), "the window holds everything until position 16");
    assert!(w.kl_by_position[16..].iter().any(|&k| k > 0.0), "evicting changes the distribution");
    free_texts_part_at_the_first_divergence(&bytes, &long);
}

/// What cannot run is refused by name: the GPU runs neither sinks nor H2O, nor block caches of
/// rows that are not whole pairs of blocks (Llama's synthetic rows have 32 values); a flaw needs
/// a cache that holds every position; a bad policy lists the valid ones.
#[test]
fn what_cannot_run_is_refused_by_name() {
    let bytes = synthetic_arch_model(Arch::Llama, 300);
    for (p, says) in [("sink-4-window-12", "cpu and reference"), ("h2o-16", "cpu and reference"), ("q8_0", "multiple of 64 values")] {
        let o = LoadOptions { backend: BackendKind::Gpu, ..opts() }.with_policy(p.parse().unwrap());
        let e = pollster::block_on(Engine::load(&bytes, o)).err().expect("refused").to_string();
        assert!(e.contains(&format!("`{p}`")) && e.contains(says), "{e}");
    }
    let mut e = pollster::block_on(Engine::load(&bytes, opts().with_policy("window-16".parse().unwrap()))).unwrap();
    let go = GenerateOptions { flaw: Flaw::NoAppend, max_tokens: 2, ..Default::default() };
    let err = pollster::block_on(e.generate(&ids(4), &go, &mut |_| true)).expect_err("refused").to_string();
    assert!(err.contains("window-16") && err.contains("evicts"), "{err}");
    let err = pollster::block_on(kv_compare(&bytes, &opts(), &ids(1), &[KvPolicy::EXACT])).expect_err("refused").to_string();
    assert!(err.contains("at least 2 tokens"), "{err}");
}

/// An independent check of the positions each rule turns keys at. In a one-layer model a
/// position's K and V depend on its token alone, so a cache holding some positions is the exact
/// cache of a shorter text: `sink-4-window-12` at position 39 holds tokens 0..4 and 28..40 at
/// their places 0..16 in the cache (StreamingLLM), which is the exact cache of those 16 tokens;
/// `window-16` keeps positions 24..40 turned where they were, and RoPE's scores depend only on
/// the distance, so it is the exact cache of tokens 24..40 at positions 0..16 (to rounding).
#[test]
fn one_layer_evicting_caches_are_exact_caches_of_shorter_texts() {
    let t = SynTypes { embd: F32, q: F32, k: F32, v: F32, o: F32, gate: F32, up: F32, down: F32, output: None };
    let bytes = synthetic_model(&t, 1, 100);
    let last = |policy: &str, ids: &[u32]| {
        let mut e = pollster::block_on(Engine::load(&bytes, opts().with_policy(policy.parse().unwrap()))).unwrap();
        pollster::block_on(e.feed(ids)).unwrap();
        e.logits().to_vec()
    };
    let text = ids(40);
    let kept: Vec<u32> = text[..4].iter().chain(&text[28..]).copied().collect();
    assert_close(
        "sink-4-window-12: the exact cache of the sinks and the window",
        &last("sink-4-window-12", &text),
        &last("f32", &kept),
        1e-5,
    );
    assert_close("window-16: the exact cache of the window", &last("window-16", &text), &last("f32", &text[24..]), 1e-4);
    let differs = |a: &[f32], b: &[f32]| a.iter().zip(b).any(|(x, y)| (x - y).abs() > 1e-3);
    assert!(differs(&last("sink-4-window-12", &text), &last("f32", &text)), "the sinks' cache is not the whole text's");
}

/// The logits at every position of `ids` fed one at a time (the decode step), and after feeding
/// them in one call (prefill chunks).
fn stepped_and_batched(bytes: &[u8], o: LoadOptions, ids: &[u32]) -> (Vec<f32>, Vec<f32>) {
    let mut e = pollster::block_on(Engine::load(bytes, o.clone())).expect("load");
    let stepped = pollster::block_on(e.logits_for(ids)).expect("forward");
    let mut e = pollster::block_on(Engine::load(bytes, o)).expect("load");
    pollster::block_on(e.feed(ids)).expect("prefill");
    (stepped, e.logits().to_vec())
}

/// The GPU's block caches and `window-N` against the CPU reference running the same policy,
/// token by token (decode) and batched (prefill chunks): Qwen 3 (global layers) and Gemma 3
/// (sliding-window layers of 8, head norms), 70 positions (past the 16-position window and a
/// prefill chunk), with both forms of attention's first pass. The codes are ggml's on both sides (`kv_quantize`'s test checks them bit for
/// bit); a k or v whose two f32 computations straddle a rounding boundary lands one step
/// apart, a step of max|x|/127 (Q8_0) or max|x|/8 (Q4_0), hence the tolerances. The rounding
/// is really there: the logits differ from the exact cache's.
#[test]
fn the_gpu_runs_block_caches_and_windows_as_the_cpu_reference() {
    if common::gpu().is_none() {
        return;
    }
    let ids = ids(70);
    for arch in [Arch::Qwen3, Arch::Gemma3] {
        let bytes = synthetic_arch_model(arch, 300);
        let exact = stepped_and_batched(&bytes, opts(), &ids).0;
        for (p, tol) in [("q8_0", 2e-2), ("q4_0", 1e-1), ("window-16", 1e-4)] {
            let policy: KvPolicy = p.parse().unwrap();
            let cpu = stepped_and_batched(&bytes, opts().with_policy(policy), &ids).0;
            // Both forms of attention: the online one (this adapter's) and the workgroup one
            // (the plain kernels, with a real GPU's shapes).
            for (form, gpu) in [("", GpuOptions::default()), (", plain kernels", GpuOptions::plain())] {
                let o = LoadOptions { backend: BackendKind::Gpu, gpu, ..opts() }.with_policy(policy);
                let (stepped, batched) = stepped_and_batched(&bytes, o, &ids);
                let name = format!("{}, {p}{form}", arch.name());
                assert_close(&name, &stepped, &cpu, tol);
                assert_close(&format!("{name}, prefill"), &batched, &cpu[69 * 261..], tol);
            }
            let name = format!("{}, {p}", arch.name());
            let moved = cpu.iter().zip(&exact).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(moved > tol, "{name}: the policy moved the logits by {moved} only");
        }
    }
}

/// What the CPU backends need, from the header alone (`backend::check_memory`, which wasm32
/// runs against its 4 GiB): the weights as each keeps them (the cpu backend its blocks, the
/// reference f32) and f32 K and V rows for every layer at the context, or an evicting policy's
/// budget + 1 slots. One byte short is refused with the figures; the GPU is not its concern.
#[test]
fn the_cpu_backends_memory_is_checked_from_the_header() {
    use kvscope::backend::check_memory;
    use kvscope::core::config::Config;
    let bytes = synthetic_model(&common::SynTypes::q4_1(), 2, 7);
    let g = Gguf::parse(&bytes).unwrap();
    let cfg = Config::from_gguf(&g).unwrap();
    let blocks: u64 = g.tensors.iter().map(|t| t.size).sum();
    let f32s: u64 = g.tensors.iter().map(|t| t.n_elements() * 4).sum();
    let rows = |n: u64| 2 * 2 * n * cfg.kv_dim() as u64 * 4;
    let exact = KvPolicy::EXACT;
    let window: KvPolicy = "window-16".parse().unwrap();
    for (kind, p, need) in [
        (BackendKind::Cpu, exact, blocks + rows(1000)),
        (BackendKind::Reference, exact, f32s + rows(1000)),
        (BackendKind::Cpu, window, blocks + rows(17)),
    ] {
        assert!(check_memory(kind, &g, &cfg, 1000, p, Some(need)).is_ok(), "{kind:?} {}", p.name());
        let e = check_memory(kind, &g, &cfg, 1000, p, Some(need - 1)).expect_err("one byte short").to_string();
        assert!(e.contains(&format!("need {} MiB", need.div_ceil(1 << 20))) && e.contains("KV cache at 1000 positions"), "{e}");
        assert!(e.contains("4096 MiB") && e.contains("smaller context"), "{e}");
    }
    assert!(check_memory(BackendKind::Gpu, &g, &cfg, 1000, exact, Some(1)).is_ok());
    assert!(check_memory(BackendKind::Cpu, &g, &cfg, 1000, exact, None).is_ok(), "natively there is no such limit");
}
