//! The CPU backend (weights in their GGUF blocks, x in 16 bits, integer dots) against the exact
//! f32 reference: each block type's mat-mul, synthetic models, and the real default model's
//! logits and greedy tokens.

mod common;

use common::{default_model, gemma_model, max_err, random, random_blocks, synthetic_model, SynTypes};
use kvscope::backend::cpu::{Matrix, Scratch};
use kvscope::core::quant::GgmlType;
use kvscope::core::sampler::argmax;
use kvscope::{BackendKind, Engine, GenerateOptions, LoadOptions};

/// Relative error the issue allows: max |cpu − reference| / max |reference| over the logits.
const REL: f32 = 1e-3;

fn engine(bytes: &[u8], backend: BackendKind) -> Engine {
    pollster::block_on(Engine::load(bytes, LoadOptions { backend, context: 256, ..Default::default() })).expect("load")
}

/// Each block type: the mat-mul over its blocks against the same rows dequantised to f32, for a
/// single token and a batch; a batch row equals that token alone, bit for bit.
#[test]
fn every_block_type_matches_its_f32_rows() {
    let (rows, cols, n) = (7, 512, 5);
    let mut scratch = Scratch::new(cols, n);
    for ty in GgmlType::ALL.into_iter().filter(|t| t.is_quantised()) {
        let bytes = random_blocks(ty, rows * cols, ty.id() as u64, 1.0);
        let blocks = Matrix::new(ty, rows, cols, bytes.clone(), false);
        let exact = Matrix::new(ty, rows, cols, bytes, true);
        assert!(matches!(blocks, Matrix::Blocks { .. }) && blocks.bytes() == ty.bytes_for(rows * cols));
        let x = random(n * cols, 7, 2.0);
        let (mut got, mut want) = (vec![0.0; n * rows], vec![0.0; n * rows]);
        blocks.matmul(&mut got, &x, &mut scratch);
        exact.matmul(&mut want, &x, &mut scratch);
        let (e, i, rel) = max_err(&got, &want);
        eprintln!("{}: max abs error {e:.3e} at [{i}] (normalised {rel:.3e})", ty.name());
        // x rounded to 16 bits per 32-block: about 2^-16 of each block's largest value.
        assert!(rel < 1e-4, "{}: mat-mul differs from its f32 rows by {e} ({rel} normalised)", ty.name());
        for t in 0..n {
            let mut one = vec![0.0; rows];
            blocks.matmul(&mut one, &x[t * cols..][..cols], &mut scratch);
            assert_eq!(one, got[t * rows..][..rows], "{}: token {t} alone differs from the batch", ty.name());
        }
        let mut row = vec![0.0; cols];
        let mut row_exact = vec![0.0; cols];
        blocks.row(3, &mut row);
        exact.row(3, &mut row_exact);
        assert_eq!(row, row_exact, "{}: embedding row", ty.name());
    }
}

/// The logits after every position (token by token) and after one batched feed.
fn logits(bytes: &[u8], backend: BackendKind, ids: &[u32]) -> (Vec<f32>, Vec<f32>) {
    let mut e = engine(bytes, backend);
    let each = pollster::block_on(e.logits_for(ids)).expect("forward");
    e.reset();
    pollster::block_on(e.feed(ids)).expect("prefill");
    (each, e.logits().to_vec())
}

#[test]
fn synthetic_models_match_the_reference() {
    use GgmlType::*;
    let ids: Vec<u32> = (0..75).map(|i| (i * 37 + 5) % 261).collect();
    let mixed = SynTypes { embd: F16, q: F32, k: F16, v: Q4_0, o: Q4_1, gate: Q8_0, up: Q5_0, down: Q5_1, output: Some(Q4_1) };
    for (name, types) in [("q4_1", SynTypes::q4_1()), ("mixed", mixed)] {
        let bytes = synthetic_model(&types, 2, 100);
        let (want, _) = logits(&bytes, BackendKind::Reference, &ids);
        let (got, batched) = logits(&bytes, BackendKind::Cpu, &ids);
        let (e, i, rel) = max_err(&got, &want);
        eprintln!("synthetic {name}: max abs error {e:.3e} at [{i}] (normalised {rel:.3e})");
        assert!(rel < REL, "synthetic {name}: logits differ by {e} ({rel} normalised)");
        // A batch computes each position as it would alone: the same bits.
        assert_eq!(batched, got[(ids.len() - 1) * 261..], "synthetic {name}: batched prefill differs from token by token");
    }
}

/// The default model: logits along a prompt within 1e-3 (normalised) of the reference, the same
/// argmax everywhere, and the same greedy continuations.
#[test]
fn default_model_matches_the_reference() {
    let Some(bytes) = default_model() else { return };
    let mut r = engine(&bytes, BackendKind::Reference);
    let mut c = engine(&bytes, BackendKind::Cpu);
    let ids = r.tokenizer.encode("The quick brown fox jumps over the lazy dog. In 1879, the first").unwrap();
    let want = pollster::block_on(r.logits_for(&ids)).unwrap();
    let got = pollster::block_on(c.logits_for(&ids)).unwrap();
    let (e, i, rel) = max_err(&got, &want);
    eprintln!("default model, {} positions: max abs logit error {e:.3e} at [{i}] (normalised {rel:.3e})", ids.len());
    assert!(rel < REL, "logits differ by {e} ({rel} normalised)");
    let v = r.cfg.vocab_size;
    for p in 0..ids.len() {
        assert_eq!(argmax(&got[p * v..][..v]), argmax(&want[p * v..][..v]), "argmax differs at position {p}");
    }
    for prompt in ["The capital of France is", "<|im_start|>user\nWhat is a KV cache in a transformer?<|im_end|>\n<|im_start|>assistant\n"]
    {
        let greedy = |e: &mut Engine| {
            e.reset();
            let ids = e.tokenizer.encode(prompt).unwrap();
            let opts = GenerateOptions { max_tokens: 32, report_top: 0, ..Default::default() };
            let mut out = Vec::new();
            pollster::block_on(e.generate(&ids, &opts, &mut |ev| {
                out.push(ev.id);
                true
            }))
            .unwrap();
            out
        };
        let (tr, tc) = (greedy(&mut r), greedy(&mut c));
        eprintln!("{prompt:?} → {:?}", c.tokenizer.decode(&tc));
        assert_eq!(tc, tr, "greedy tokens differ for {prompt:?}");
    }
    // Memory: the weights are the file's tensor bytes (norms as f32), not f32 copies.
    let g = kvscope::core::gguf::Gguf::parse(&bytes).unwrap();
    let file_tensors: u64 = g.tensors.iter().map(|t| t.size).sum();
    let (weights, _) = c.memory();
    assert!(weights <= file_tensors, "the CPU backend holds {weights} bytes of weights for {file_tensors} in the file");
    assert!(r.memory().0 > 3 * file_tensors, "the reference expands to f32");
}

/// Gemma 3 (Q4_K, Q6_K, Q5_0, Q8_0; sliding-window layers): logits along a prompt.
#[test]
fn gemma_matches_the_reference() {
    let Some(bytes) = gemma_model() else { return };
    let mut r = engine(&bytes, BackendKind::Reference);
    let ids = r.tokenizer.encode("The KV cache keeps the keys and values of").unwrap();
    let want = pollster::block_on(r.logits_for(&ids)).unwrap();
    drop(r);
    let mut c = engine(&bytes, BackendKind::Cpu);
    let got = pollster::block_on(c.logits_for(&ids)).unwrap();
    let (e, i, rel) = max_err(&got, &want);
    eprintln!("gemma, {} positions: max abs logit error {e:.3e} at [{i}] (normalised {rel:.3e})", ids.len());
    assert!(rel < REL, "logits differ by {e} ({rel} normalised)");
    let v = c.cfg.vocab_size;
    for p in 0..ids.len() {
        assert_eq!(argmax(&got[p * v..][..v]), argmax(&want[p * v..][..v]), "argmax differs at position {p}");
    }
}
