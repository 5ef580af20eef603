//! The second real model, Gemma 3 270M Q4_K_M (Q4_K, Q6_K, Q5_0, Q8_0 and F32 tensors, a
//! SentencePiece vocabulary of 262,144 tokens, 15 of 18 layers on a 512-position sliding window):
//! llama.cpp's tokens and greedy continuations (tests/golden/gemma.json, made by
//! tests/golden/make_gemma_goldens.py), and the GPU against the CPU reference.

mod common;

use common::{assert_close, gemma_model, gpu};
use kvscope::core::sampler::argmax;
use kvscope::{BackendKind, Engine, GenerateOptions, LoadOptions};

struct Case {
    prompt: String,
    ids: Vec<u32>,
    greedy: Vec<u32>,
}

fn cases() -> Vec<Case> {
    let path = format!("{}/tests/golden/gemma.json", env!("CARGO_MANIFEST_DIR"));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let ids = |x: &serde_json::Value| x.as_array().unwrap().iter().map(|i| i.as_u64().unwrap() as u32).collect();
    v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case { prompt: c["prompt"].as_str().unwrap().into(), ids: ids(&c["ids"]), greedy: ids(&c["greedy"]) })
        .collect()
}

fn engine(bytes: &[u8], backend: BackendKind) -> Engine {
    pollster::block_on(Engine::load(bytes, LoadOptions { backend, context: 1024, ..Default::default() })).expect("load")
}

/// Every prompt's ids equal llama.cpp's, and along llama.cpp's greedy continuation each of its
/// tokens is our argmax, or trails it by less than llama.cpp's own rounding moves a logit (it
/// rounds activations to 8 bits for its quantised products: up to ~1). On the GPU, prefill
/// batched; the longest prompt (683 tokens) recalls a fact from its first line, which the
/// sliding-window layers no longer see.
#[test]
fn greedy_matches_llama_cpp() {
    let Some(bytes) = gemma_model() else { return };
    if gpu().is_none() {
        return;
    }
    let mut e = engine(&bytes, BackendKind::Gpu);
    let (mut exact, mut steps) = (0, 0);
    for c in cases() {
        let ids = e.tokenizer.encode(&c.prompt).unwrap();
        assert_eq!(ids, c.ids, "token ids of {:?}", &c.prompt[..c.prompt.len().min(40)]);
        e.reset();
        pollster::block_on(e.feed(&ids)).unwrap();
        for (k, &want) in c.greedy.iter().enumerate() {
            let row = e.logits();
            let best = argmax(row);
            let gap = row[best as usize] - row[want as usize];
            assert!(gap < 1.0, "{}-token prompt, step {k}: llama.cpp's {want} trails our {best} by {gap}", ids.len());
            exact += (best == want) as usize;
            steps += 1;
            pollster::block_on(e.feed(&[want])).unwrap();
        }
    }
    eprintln!("llama.cpp's greedy token is our argmax at {exact} of {steps} steps");
    assert!(exact * 10 >= steps * 9, "only {exact} of {steps} steps agree");
}

/// Free-running greedy decoding on the GPU (its argmax) recalls the password across the window,
/// as llama.cpp does.
#[test]
fn long_prompt_recall_through_the_global_layers() {
    let Some(bytes) = gemma_model() else { return };
    if gpu().is_none() {
        return;
    }
    let c = cases().pop().unwrap();
    assert!(c.ids.len() > 512);
    let mut e = engine(&bytes, BackendKind::Gpu);
    let mut got = Vec::new();
    let opts = GenerateOptions { max_tokens: 6, report_top: 0, gpu_argmax: true, ..Default::default() };
    pollster::block_on(e.generate(&c.ids, &opts, &mut |ev| {
        got.push(ev.id);
        true
    }))
    .unwrap();
    assert_eq!(got, c.greedy[..6], "{:?}", e.tokenizer.decode(&got));
    assert!(e.tokenizer.decode(&got).contains("BLUE HERON 42"));
}

/// The GPU's logits after every position of a short prompt equal the CPU reference's.
#[test]
fn gpu_matches_cpu() {
    let Some(bytes) = gemma_model() else { return };
    if gpu().is_none() {
        return;
    }
    let ids = &cases()[1].ids;
    let cpu = pollster::block_on(engine(&bytes, BackendKind::Reference).logits_for(ids)).unwrap();
    let gpu = pollster::block_on(engine(&bytes, BackendKind::Gpu).logits_for(ids)).unwrap();
    assert_close("Gemma: GPU against CPU", &gpu, &cpu, 2e-3);
}
