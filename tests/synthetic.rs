//! GPU against CPU on small synthetic models the test writes itself: random weights of every
//! supported type, tied and untied output, logits after every position.

mod common;

use common::{assert_close, gpu, synthetic_model, SynTypes};
use kvscope::core::quant::GgmlType::*;
use kvscope::{BackendKind, Engine, KvType, LoadOptions};

fn logits(bytes: &[u8], backend: BackendKind, ids: &[u32]) -> Vec<f32> {
    logits_with(bytes, LoadOptions { backend, context: 128, ..Default::default() }, ids)
}

fn logits_with(bytes: &[u8], opts: LoadOptions, ids: &[u32]) -> Vec<f32> {
    let mut e = pollster::block_on(Engine::load(bytes, opts)).expect("load");
    pollster::block_on(e.logits_for(ids)).expect("forward")
}

/// The logits after feeding `ids` in one call: batched prefill chunks on the GPU.
fn prefill_logits(bytes: &[u8], ids: &[u32]) -> Vec<f32> {
    prefill_logits_with(bytes, LoadOptions { backend: BackendKind::Gpu, context: 128, ..Default::default() }, ids)
}

fn prefill_logits_with(bytes: &[u8], opts: LoadOptions, ids: &[u32]) -> Vec<f32> {
    let mut e = pollster::block_on(Engine::load(bytes, opts)).expect("load");
    pollster::block_on(e.feed(ids)).expect("prefill");
    e.logits().to_vec()
}

fn check(name: &str, types: SynTypes) {
    if gpu().is_none() {
        return;
    }
    let bytes = synthetic_model(&types, 2, 100);
    // 75 positions: more than one 64-wide pass of the attention workgroup over the cache, and
    // two full prefill chunks of 32 plus a partial one.
    let ids: Vec<u32> = (0..75).map(|i| (i * 37 + 5) % 261).collect();
    let cpu = logits(&bytes, BackendKind::Reference, &ids);
    let gpu = logits(&bytes, BackendKind::Gpu, &ids);
    // f32 on both sides, same dequantised weights, same RoPE table: only summation order differs.
    assert_close(name, &gpu, &cpu, 1e-4);
    // The plain kernels (no subgroup operations, one row per invocation) as well.
    let opts =
        LoadOptions { backend: BackendKind::Gpu, context: 128, gpu: kvscope::GpuOptions::plain(), kv: KvType::F32, ..Default::default() };
    assert_close(&format!("{name}, plain kernels"), &logits_with(&bytes, opts, &ids), &cpu, 1e-4);
    // The batched prefill (tiled mat-mul, causal attention within each chunk) ends in the same
    // logits as the CPU going token by token.
    for n in [2, 31, 32, 33, 75] {
        let last = &cpu[(n - 1) * 261..][..261];
        assert_close(&format!("{name}: prefill of {n} tokens"), &prefill_logits(&bytes, &ids[..n]), last, 1e-4);
    }
    // An f16 cache: the GPU against the CPU rounding its cache the same way, token by token and
    // batched; and the rounding is really there (the f32 logits differ). Looser than f32: a value
    // whose two f32 computations straddle an f16 rounding boundary lands one f16 step apart.
    let f16 = |backend| LoadOptions { backend, context: 128, kv: KvType::F16, ..Default::default() };
    let cpu16 = logits_with(&bytes, f16(BackendKind::Reference), &ids);
    assert_close(&format!("{name}, f16 cache"), &logits_with(&bytes, f16(BackendKind::Gpu), &ids), &cpu16, 2e-3);
    let mut e = pollster::block_on(Engine::load(&bytes, f16(BackendKind::Gpu))).unwrap();
    pollster::block_on(e.feed(&ids)).unwrap();
    assert_close(&format!("{name}, f16 cache, prefill"), e.logits(), &cpu16[74 * 261..], 2e-3);
    assert!(cpu16.iter().zip(&cpu).any(|(a, b)| a != b), "the f16 cache changed nothing");
    // The decode step one dispatch per op, with the f16 cache too.
    let unfused = |kv| LoadOptions { gpu: kvscope::GpuOptions { fuse: 0, ..Default::default() }, kv, ..f16(BackendKind::Gpu) };
    assert_close(&format!("{name}, unfused"), &logits_with(&bytes, unfused(KvType::F32), &ids), &cpu, 1e-4);
    assert_close(&format!("{name}, unfused, f16 cache"), &logits_with(&bytes, unfused(KvType::F16), &ids), &cpu16, 2e-3);
}

#[test]
fn mixed_types_untied_output() {
    check("synthetic mixed", SynTypes { embd: F16, q: F32, k: F16, v: Q4_0, o: Q4_1, gate: Q8_0, up: Q4_0, down: F16, output: Some(Q4_1) });
}

#[test]
fn default_layout_tied_output() {
    check("synthetic q4_1", SynTypes::q4_1());
}

#[test]
fn tokenizer_of_synthetic_vocab() {
    let bytes = synthetic_model(&SynTypes { embd: F32, q: F32, k: F32, v: F32, o: F32, gate: F32, up: F32, down: F32, output: None }, 1, 1);
    let g = kvscope::core::gguf::Gguf::parse(&bytes).unwrap();
    let tok = kvscope::core::tokenizer::Tokenizer::from_gguf(&g).unwrap();
    // "he" and " t" merge; digits and other bytes stay single; control text is one id.
    let ids = tok.encode("he tx<|im_start|>").unwrap();
    assert_eq!(ids, vec![259, 260, 3 + b'x' as u32, 1]);
    assert_eq!(tok.decode(&ids), "he tx<|im_start|>");
}

fn tiny(backend: kvscope::BackendKind, context: usize) -> Engine {
    let bytes = synthetic_model(&SynTypes::q4_1(), 1, 5);
    pollster::block_on(Engine::load(&bytes, LoadOptions { backend, context, ..Default::default() })).expect("load")
}

/// A context that fills during generation stops it with a reason; a prompt longer than the
/// context, an empty prompt and an out-of-vocabulary id are refused with their own errors.
/// `Engine::time_steps` (the bench's alternating decode steps): one time per position, a
/// position past the context refused by name, the cache emptied after, the CPU backend refused.
#[test]
fn timed_steps_alternate_and_empty_the_cache() {
    let Some(_) = gpu() else { return };
    let mut e = tiny(BackendKind::Gpu, 16);
    pollster::block_on(e.feed(&(10..22).collect::<Vec<u32>>())).unwrap();
    let times = pollster::block_on(e.time_steps(&[1, 12, 1, 12])).unwrap();
    assert_eq!(times.len(), 4);
    assert!(times.iter().all(|&t| t > 0.0), "{times:?}");
    assert_eq!(e.position(), 0, "the rows stepped at were overwritten: the cache is emptied");
    let err = pollster::block_on(e.time_steps(&[1, 16])).unwrap_err().to_string();
    assert!(err.contains("position 16 is past the context of 16"), "{err}");
    let s = pollster::block_on(e.generate(&[10, 11], &kvscope::GenerateOptions { max_tokens: 2, ..Default::default() }, &mut |_| true));
    assert!(s.unwrap().generated_tokens >= 1, "the engine works after");
    let err = pollster::block_on(tiny(BackendKind::Reference, 16).time_steps(&[1])).unwrap_err().to_string();
    assert!(err.contains("GPU backend"), "{err}");
}

#[test]
fn context_limits_stop_cleanly() {
    use kvscope::{GenerateOptions, StopReason};
    let backends = if gpu().is_some() { vec![BackendKind::Reference, BackendKind::Gpu] } else { vec![BackendKind::Reference] };
    for b in backends {
        let mut e = tiny(b, 16);
        let prompt: Vec<u32> = (10..20).collect();
        let mut n = 0;
        let s = pollster::block_on(e.generate(&prompt, &GenerateOptions { max_tokens: 100, ..Default::default() }, &mut |_| {
            n += 1;
            true
        }))
        .unwrap();
        assert_eq!(s.stop, StopReason::ContextFull, "{b:?}");
        // Positions 10..16 are fed back; the token picked from the last row is emitted too.
        assert_eq!((n, s.generated_tokens, e.position()), (7, 7, 16), "{b:?}");
        let more = pollster::block_on(e.feed(&[3])).unwrap_err().to_string();
        assert!(more.contains("context is full"), "{more}");

        e.reset();
        assert_eq!(e.position(), 0);
        let long: Vec<u32> = (0..17).map(|i| 10 + i).collect();
        let err = pollster::block_on(e.generate(&long, &GenerateOptions::default(), &mut |_| true)).unwrap_err().to_string();
        assert!(err.contains("prompt has 17 tokens but the context holds only 16"), "{err}");
        let err = pollster::block_on(e.generate(&[], &GenerateOptions::default(), &mut |_| true)).unwrap_err().to_string();
        assert!(err.contains("prompt is empty"), "{err}");
        let err = pollster::block_on(e.feed(&[5000])).unwrap_err().to_string();
        assert!(err.contains("token id 5000 is outside the vocabulary (size 261)"), "{err}");
        // The engine still works after the refusals.
        let s = pollster::block_on(e.generate(&[10, 11], &GenerateOptions { max_tokens: 3, ..Default::default() }, &mut |_| true)).unwrap();
        assert!(s.generated_tokens >= 1);
    }
}

/// Stopping from the callback ends generation after that token, and the next call continues
/// from the cache (the stopped token is fed first).
#[test]
fn stop_from_callback_and_continue() {
    use kvscope::{GenerateOptions, StopReason};
    let mut e = tiny(BackendKind::Reference, 64);
    let mut ids = Vec::new();
    let s = pollster::block_on(e.generate(&[10, 11, 12], &GenerateOptions { max_tokens: 50, ..Default::default() }, &mut |ev| {
        ids.push(ev.id);
        ids.len() < 3
    }))
    .unwrap();
    assert_eq!(s.stop, StopReason::Stopped);
    assert_eq!(ids.len(), 3);
    assert_eq!(e.position(), 6, "3 prompt tokens + the 3 generated ones, fed back");

    // The same run without stopping gives the same first tokens.
    let mut f = tiny(BackendKind::Reference, 64);
    let mut all = Vec::new();
    pollster::block_on(f.generate(&[10, 11, 12], &GenerateOptions { max_tokens: 3, ..Default::default() }, &mut |ev| {
        all.push(ev.id);
        true
    }))
    .unwrap();
    assert_eq!(all, ids);
}

/// A second chat turn reuses the cache: only the new tokens are fed, and the logits equal those
/// of feeding the whole conversation into an empty cache.
#[test]
fn reuse_prefix_feeds_only_the_new_turn() {
    use kvscope::GenerateOptions;
    let mut e = tiny(BackendKind::Reference, 64);
    let turn1: Vec<u32> = (10..20).collect();
    let mut reply = Vec::new();
    pollster::block_on(e.generate(&turn1, &GenerateOptions { max_tokens: 4, ..Default::default() }, &mut |ev| {
        reply.push(ev.id);
        true
    }))
    .unwrap();
    let mut convo = turn1.clone();
    convo.extend(&reply);
    convo.extend([2, 1, 30, 31]);
    let n = e.reuse_prefix(&convo);
    assert_eq!(n, turn1.len() + reply.len(), "the prompt and the whole reply are reused");
    pollster::block_on(e.feed(&convo[n..])).unwrap();
    assert_eq!(e.position(), convo.len());

    let mut fresh = tiny(BackendKind::Reference, 64);
    pollster::block_on(fresh.feed(&convo)).unwrap();
    assert_eq!(e.logits(), fresh.logits());

    // A conversation that diverges early rewinds the cache to the common part.
    let other: Vec<u32> = vec![10, 11, 99, 98];
    assert_eq!(e.reuse_prefix(&other), 2);
    assert_eq!(e.position(), 2);
    // Identical input: everything but the last id is reused, so fresh logits come back.
    pollster::block_on(e.feed(&other[2..])).unwrap();
    assert_eq!(e.reuse_prefix(&other), 3);
}

/// Decoding without the cache (the whole sequence re-run at every step) emits the same greedy
/// tokens as decoding with it, on both backends.
#[test]
fn no_cache_mode_emits_the_same_tokens() {
    use kvscope::GenerateOptions;
    let backends = if gpu().is_some() { vec![BackendKind::Reference, BackendKind::Gpu] } else { vec![BackendKind::Reference] };
    for b in backends {
        let run = |no_cache: bool| {
            let mut e = tiny(b, 64);
            let mut ids = Vec::new();
            let opts = GenerateOptions { max_tokens: 12, no_cache, ..Default::default() };
            pollster::block_on(e.generate(&[10, 11, 12, 13], &opts, &mut |ev| {
                ids.push(ev.id);
                true
            }))
            .unwrap();
            (ids, e.position())
        };
        let (with, n1) = run(false);
        let (without, n2) = run(true);
        assert_eq!(with.len(), 12);
        assert_eq!(with, without, "{b:?}");
        assert_eq!(n1, n2);
    }
}

/// The attention weights each step reports: per layer, GPU equal to CPU, every head's row sums
/// to 1 over exactly the cached positions.
#[test]
fn attention_weights_per_layer_match_cpu() {
    use kvscope::GenerateOptions;
    if gpu().is_none() {
        return;
    }
    let bytes = synthetic_model(&SynTypes::q4_1(), 2, 5);
    let collect = |backend: BackendKind, layer: usize| {
        let mut e = pollster::block_on(Engine::load(&bytes, LoadOptions { backend, context: 32, ..Default::default() })).unwrap();
        let mut out = Vec::new();
        let opts = GenerateOptions { max_tokens: 5, attention_layer: Some(layer), ..Default::default() };
        pollster::block_on(e.generate(&[10, 11, 12], &opts, &mut |ev| {
            out.push((ev.pos, ev.attention.clone().expect("weights")));
            true
        }))
        .unwrap();
        out
    };
    for layer in [0, 1] {
        let (c, g) = (collect(BackendKind::Reference, layer), collect(BackendKind::Gpu, layer));
        for ((pos, wc), (_, wg)) in c.iter().zip(&g) {
            assert_eq!(wg.len(), 4 * pos, "[h × pos] at pos {pos}");
            common::assert_close(&format!("layer {layer} attention at pos {pos}"), wg, wc, 1e-5);
            for row in wg.chunks(*pos) {
                assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            }
        }
    }
    // Every layer at once (the overview), and each prompt query's weights (the matrix's first
    // rows): GPU equal to CPU, rows summing to 1, a matrix row longer by one per position.
    let all = |backend: BackendKind| {
        let mut e = pollster::block_on(Engine::load(&bytes, LoadOptions { backend, context: 32, ..Default::default() })).unwrap();
        let mut out = Vec::new();
        let opts = GenerateOptions {
            max_tokens: 3,
            attention_layer: Some(1),
            attention_all_layers: true,
            attention_prompt: true,
            ..Default::default()
        };
        pollster::block_on(e.generate(&[10, 11, 12, 13], &opts, &mut |ev| {
            out.push((ev.pos, ev.attention_layers.clone().expect("all layers"), ev.prompt_attention.clone()));
            true
        }))
        .unwrap();
        out
    };
    let (c, g) = (all(BackendKind::Reference), all(BackendKind::Gpu));
    let prompt_rows = g[0].2.as_ref().expect("prompt rows with the first token");
    assert_eq!(prompt_rows.len(), 4);
    for (i, (wg, wc)) in prompt_rows.iter().zip(c[0].2.as_ref().unwrap()).enumerate() {
        assert_eq!(wg.len(), 4 * (i + 1), "prompt query {i}: [h × {}]", i + 1);
        common::assert_close(&format!("prompt query {i}"), wg, wc, 1e-5);
    }
    assert!(g[1].2.is_none(), "prompt rows come once");
    for ((pos, wg, _), (_, wc, _)) in g.iter().zip(&c) {
        assert_eq!(wg.len(), 2 * 4 * pos, "[L × h × pos] at pos {pos}");
        common::assert_close(&format!("all layers at pos {pos}"), wg, wc, 1e-5);
        for row in wg.chunks(*pos) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
    }

    let mut e =
        pollster::block_on(Engine::load(&bytes, LoadOptions { backend: BackendKind::Reference, context: 32, ..Default::default() }))
            .unwrap();
    let err = pollster::block_on(e.generate(&[1], &GenerateOptions { attention_layer: Some(7), ..Default::default() }, &mut |_| true))
        .unwrap_err();
    assert!(err.to_string().contains("layer 7 does not exist"), "{err}");
}

/// A stop request during the prefill takes effect after the current chunk; the positions done
/// stay cached and the engine carries on correctly afterwards.
#[test]
fn stop_during_prefill_keeps_the_engine_usable() {
    use std::sync::atomic::Ordering;
    let backends = if gpu().is_some() { vec![BackendKind::Reference, BackendKind::Gpu] } else { vec![BackendKind::Reference] };
    let prompt: Vec<u32> = (0..40).map(|i| 10 + i).collect();
    for b in backends {
        let mut e = tiny(b, 64);
        e.stop_handle().store(true, Ordering::Relaxed);
        let err = pollster::block_on(e.feed(&prompt)).unwrap_err();
        assert!(matches!(err, kvscope::Error::Stopped), "{b:?}: {err}");
        let done = e.position();
        assert!(done > 0 && done < prompt.len(), "{b:?}: {done} positions after the stop");
        assert_eq!(e.cached_tokens(), &prompt[..done]);

        // Usable right after: finish the prompt and compare with an uninterrupted engine.
        e.stop_handle().store(false, Ordering::Relaxed);
        pollster::block_on(e.feed(&prompt[done..])).unwrap();
        let mut f = tiny(b, 64);
        pollster::block_on(f.feed(&prompt)).unwrap();
        common::assert_close(&format!("{b:?} logits after a stopped prefill"), e.logits(), f.logits(), 1e-5);
    }
}

/// Everything GPU-side is created at load: generating (prefill chunks, decode steps, both argmax
/// modes, the attention view) creates no buffer, bind group, layout, module or pipeline.
#[test]
fn generating_creates_no_gpu_objects() {
    use kvscope::GenerateOptions;
    if gpu().is_none() {
        return;
    }
    let bytes = synthetic_model(&SynTypes::q4_1(), 2, 5);
    let mut e =
        pollster::block_on(Engine::load(&bytes, LoadOptions { backend: BackendKind::Gpu, context: 128, ..Default::default() })).unwrap();
    let created = e.gpu().unwrap().ctx.objects_created();
    assert!(created > 0);
    let prompt: Vec<u32> = (0..40).map(|i| 10 + i).collect();
    for opts in [
        GenerateOptions { max_tokens: 6, ..Default::default() },
        GenerateOptions { max_tokens: 6, gpu_argmax: true, report_top: 0, ..Default::default() },
        GenerateOptions { max_tokens: 3, attention_layer: Some(1), ..Default::default() },
    ] {
        e.reset();
        pollster::block_on(e.generate(&prompt, &opts, &mut |_| true)).unwrap();
    }
    assert_eq!(e.gpu().unwrap().ctx.objects_created(), created);
}

/// Greedy decoding with the argmax picked on the GPU emits the same tokens, reads back 8 bytes
/// per token, and a later step still finds fresh logits.
#[test]
fn gpu_argmax_emits_the_same_tokens() {
    use kvscope::GenerateOptions;
    if gpu().is_none() {
        return;
    }
    let run = |gpu_argmax: bool| {
        let mut e = tiny(BackendKind::Gpu, 64);
        let mut ids = Vec::new();
        let opts = GenerateOptions { max_tokens: 10, gpu_argmax, report_top: 0, ..Default::default() };
        pollster::block_on(e.generate(&[10, 11, 12], &opts, &mut |ev| {
            ids.push(ev.id);
            true
        }))
        .unwrap();
        let c = e.gpu().unwrap().counters;
        // One more step after the argmax-only run needs real logits.
        let mut next = 0;
        pollster::block_on(e.generate(&[], &GenerateOptions { max_tokens: 1, ..Default::default() }, &mut |ev| {
            next = ev.id;
            true
        }))
        .unwrap();
        (ids, c, next)
    };
    let (plain, c_plain, next_plain) = run(false);
    let (fast, c_fast, next_fast) = run(true);
    assert_eq!(fast, plain);
    assert_eq!(next_fast, next_plain);
    assert_eq!(c_fast.maps, c_plain.maps);
    // The prompt and every token but an end-of-text one are fed, each reading back 8 bytes
    // instead of 261 floats.
    let feeds = 1 + plain.len() - (plain.last() == Some(&0)) as usize;
    assert_eq!(c_plain.readback_bytes - c_fast.readback_bytes, (feeds * (261 * 4 - 8)) as u64);
}

/// With the GPU argmax and a next-token table asked for, the table comes from the GPU (top-k and
/// softmax there, 136 bytes read back per token) and equals the CPU's over the full logits.
#[test]
fn gpu_next_token_table_matches_the_logits() {
    use kvscope::GenerateOptions;
    if gpu().is_none() {
        return;
    }
    let run = |gpu_argmax: bool| {
        let mut e = tiny(BackendKind::Gpu, 64);
        let mut events = Vec::new();
        let opts = GenerateOptions { max_tokens: 6, gpu_argmax, report_top: 5, ..Default::default() };
        pollster::block_on(e.generate(&[10, 11, 12], &opts, &mut |ev| {
            events.push((ev.id, ev.top.clone()));
            true
        }))
        .unwrap();
        (events, e.gpu().unwrap().counters.readback_bytes)
    };
    let (cpu_table, bytes_full) = run(false);
    let (gpu_table, bytes_top) = run(true);
    assert_eq!(cpu_table.len(), gpu_table.len());
    for ((id_a, a), (id_b, b)) in cpu_table.iter().zip(&gpu_table) {
        assert_eq!(id_a, id_b);
        assert_eq!(a.len(), 5);
        assert_eq!(a.iter().map(|t| t.id).collect::<Vec<_>>(), b.iter().map(|t| t.id).collect::<Vec<_>>());
        for (x, y) in a.iter().zip(b) {
            assert!((x.p - y.p).abs() < 1e-5, "p {} vs {}", x.p, y.p);
        }
    }
    assert!(bytes_top < bytes_full / 5, "{bytes_top} vs {bytes_full} bytes read back");
}

/// A two-layer synthetic model and the GPU options of a device that binds at most a third of its
/// embedding table (Q8_0 [261 × 64]), which is then split by rows into three parts.
fn model_with_split_table() -> (Vec<u8>, kvscope::GpuOptions) {
    let table_bytes = (261 * 64 / 32 * 34) as u64;
    (synthetic_model(&SynTypes::q4_1(), 2, 100), kvscope::GpuOptions { table_part_bytes: Some(table_bytes / 3), ..Default::default() })
}

/// As on a device that cannot bind the embedding table whole (parts of at most a third of the
/// table): the table is split by rows into parts, the embedding and the tied output read every
/// part, and the logits equal the CPU's.
#[test]
fn split_tables_match_cpu() {
    if gpu().is_none() {
        return;
    }
    let (bytes, gpu) = model_with_split_table();
    let ids: Vec<u32> = (0..40).map(|i| (i * 37 + 5) % 261).collect();
    let cpu = logits(&bytes, BackendKind::Reference, &ids);
    let opts = LoadOptions { backend: BackendKind::Gpu, context: 128, gpu, kv: KvType::F32, ..Default::default() };
    let mut e = pollster::block_on(Engine::load(&bytes, opts.clone())).expect("load");
    let parts = e.gpu().unwrap().weights.table("token_embd.weight").len();
    assert_eq!(parts, 3, "87 of the 261 rows per part");
    assert_close("split tables", &pollster::block_on(e.logits_for(&ids)).unwrap(), &cpu, 1e-4);
    assert_close("split tables, prefill", &prefill_logits_with(&bytes, opts, &ids), &cpu[39 * 261..], 1e-4);
}

/// What `check_device` plans from the header is what the load allocates: every weight buffer
/// (fused groups, a table split in three parts) byte for byte, and the cache's K and V.
#[test]
fn the_gpu_footprint_is_planned_from_the_header() {
    use kvscope::backend::gpu::{check_device, GpuContext};
    use kvscope::core::gguf::Gguf;
    if gpu().is_none() {
        return;
    }
    let (bytes, gpu) = model_with_split_table();
    let opts = LoadOptions { backend: BackendKind::Gpu, context: 128, gpu, kv: KvType::F16, ..Default::default() };
    let e = pollster::block_on(Engine::load(&bytes, opts.clone())).expect("load");
    let g = Gguf::parse(&bytes).unwrap();
    let cfg = kvscope::core::config::Config::from_gguf(&g).unwrap();
    let ctx = pollster::block_on(GpuContext::with_options(gpu)).unwrap();
    let planned = check_device(&ctx, &g, &cfg, 128, opts.policy()).expect("the device holds it");
    assert_eq!(e.gpu().unwrap().weights.table("token_embd.weight").len(), 3, "the table in three parts");
    let (weights, cache) = e.memory();
    assert_eq!(planned.weights, weights, "weight buffers");
    assert_eq!(planned.cache, cache, "K and V");
    let all = e.gpu().unwrap().buffer_bytes();
    assert!(planned.total() <= all && planned.total() * 11 / 10 >= all, "planned {planned:?} against {all} bytes allocated");
}

/// A model with a tensor past the device's buffer limits is refused from its header alone,
/// naming the tensor and the limit, before anything of it is read: a sparse file (holes for
/// its weights) whose feed-forward weights, fused gate and up, are larger than any binding.
#[test]
fn a_model_past_the_gpu_limits_is_refused_from_its_header() {
    use kvscope::backend::gpu::{check_device, GpuContext};
    use kvscope::core::gguf::Gguf;
    use kvscope::core::kv_policy::KvPolicy;
    if gpu().is_none() {
        return;
    }
    let ctx = pollster::block_on(GpuContext::new()).unwrap();
    let bind = ctx.limits.max_storage_buffer_binding_size.min(ctx.limits.max_buffer_size);
    // Q4_0 rows of d = 256: 144 bytes; enough rows that gate and up together pass the limit.
    let ffn = (bind / 144 / 2 + 64).next_multiple_of(32);
    let path = std::env::temp_dir().join(format!("kvscope-limits-{}.gguf", std::process::id()));
    common::zero_model_file(&path, 256, ffn);
    let len = std::fs::metadata(&path).unwrap().len();
    assert!(len > bind, "the file ({len} bytes) is larger than a binding");
    // Only the file's first MiB is read: the header.
    let mut head = vec![0; 1 << 20];
    std::io::Read::read_exact(&mut std::fs::File::open(&path).unwrap(), &mut head).unwrap();
    std::fs::remove_file(&path).unwrap();
    let g = Gguf::parse_prefix(&head, len).unwrap();
    let cfg = kvscope::core::config::Config::from_gguf(&g).unwrap();
    let err = check_device(&ctx, &g, &cfg, 64, KvPolicy::of(KvType::F32)).unwrap_err();
    assert_eq!(err.kind(), kvscope::ErrorKind::Limits, "{err}");
    let msg = err.to_string();
    assert!(msg.contains("`blk.0.ffn_gate_up.weight`") && msg.contains(&format!("{}", 2 * ffn * 144)), "{msg}");
    assert!(msg.contains("maxStorageBufferBindingSize") || msg.contains("maxBufferSize"), "{msg}");
}

/// The allocation probe holds what it is asked for, in buffers of at most `PROBE_PIECE` bytes,
/// then destroys them: none of it counts as a model's memory.
#[test]
fn the_allocation_probe_holds_what_it_is_asked_for() {
    use kvscope::backend::gpu::context::PROBE_PIECE;
    use kvscope::backend::gpu::GpuContext;
    if gpu().is_none() {
        return;
    }
    let ctx = pollster::block_on(GpuContext::new()).unwrap();
    let want = 2 * PROBE_PIECE + 4096;
    assert_eq!(pollster::block_on(ctx.probe(want)).unwrap(), want);
    assert_eq!(ctx.objects_created(), 3, "two whole pieces and the rest");
    assert_eq!(ctx.buffer_bytes(), 0);
}
