//! GPU against CPU on small synthetic models the test writes itself: random weights of every
//! supported type, tied and untied output, logits after every position.

mod common;

use common::{assert_close, gpu, synthetic_model, SynTypes};
use kvscope::quant::GgmlType::*;
use kvscope::{Backend, Engine, LoadOptions};

fn logits(bytes: &[u8], backend: Backend, ids: &[u32]) -> Vec<f32> {
    let mut e = pollster::block_on(Engine::load(bytes, LoadOptions { backend, context: 64 })).expect("load");
    pollster::block_on(e.logits_for(ids)).expect("forward")
}

fn check(name: &str, types: SynTypes) {
    if gpu().is_none() {
        return;
    }
    let bytes = synthetic_model(&types, 2, 100);
    // 40 positions: attention spans more than one 64-wide pass only in the kernel test, but this
    // exercises every layer's cache at growing lengths.
    let ids: Vec<u32> = (0..40).map(|i| (i * 37 + 5) % 261).collect();
    let cpu = logits(&bytes, Backend::Cpu, &ids);
    let gpu = logits(&bytes, Backend::Gpu, &ids);
    // f32 on both sides, same dequantised weights, same RoPE table: only summation order differs.
    assert_close(name, &gpu, &cpu, 1e-4);
}

#[test]
fn mixed_types_untied_output() {
    check("synthetic mixed", SynTypes { embd: F16, q: F32, k: F16, v: Q4_0, o: Q4_1, gate: Q8_0, up: Q4_0, down: F16, output: Some(Q4_1) });
}

#[test]
fn default_layout_tied_output() {
    check("synthetic q4_1", SynTypes { embd: Q8_0, q: Q4_1, k: Q4_1, v: Q4_1, o: Q4_1, gate: Q4_1, up: Q4_1, down: Q4_1, output: None });
}

#[test]
fn tokenizer_of_synthetic_vocab() {
    let bytes = synthetic_model(&SynTypes { embd: F32, q: F32, k: F32, v: F32, o: F32, gate: F32, up: F32, down: F32, output: None }, 1, 1);
    let g = kvscope::gguf::Gguf::parse(&bytes).unwrap();
    let tok = kvscope::tokenizer::Tokenizer::from_gguf(&g).unwrap();
    // "he" and " t" merge; digits and other bytes stay single; control text is one id.
    let ids = tok.encode("he tx<|im_start|>").unwrap();
    assert_eq!(ids, vec![259, 260, 3 + b'x' as u32, 1]);
    assert_eq!(tok.decode(&ids), "he tx<|im_start|>");
}
