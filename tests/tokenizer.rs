//! The tokenizer against llama.cpp's own (tests/golden/tokenizer_*.json, written by
//! tests/golden/make_tokenizer_goldens.py): for every model file present, the SmolLM2 vocabulary
//! under other byte-level BPE pre-tokenizers and the Gemma 3 one with a space prefix, the ids of each string, each token's
//! bytes, the detokenised text and the vocabulary facts the engine reads; decode(encode(s)) == s;
//! the time to build the 262,144-token Gemma 3 tokenizer; refusals that name what is wrong.

use std::path::{Path, PathBuf};
use std::time::Instant;

use kvscope::core::gguf::{Gguf, Value, Writer};
use kvscope::core::tokenizer::Tokenizer;
use serde::Deserialize;

const GEMMA: &str = "www/models/gemma-3-270m-q4_k_m.gguf";

#[derive(Deserialize)]
struct Golden {
    model: String,
    /// Metadata replaced in a copy of the model's (strings and booleans).
    overrides: std::collections::BTreeMap<String, serde_json::Value>,
    vocab: Facts,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Facts {
    n_vocab: usize,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
    eog: Vec<u32>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
    /// Hex of llama.cpp's `token_to_piece(special = true)` for each id.
    pieces: Vec<String>,
    detokenized: String,
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn goldens() -> Vec<(PathBuf, Golden)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root().join("tests/golden")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("tokenizer_") && name.ends_with(".json") {
            let g: Golden = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            out.push((path, g));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(!out.is_empty(), "no tests/golden/tokenizer_*.json");
    out
}

/// A model file's bytes, or None with a printed reason (the default model must exist under CI).
fn model_bytes(rel: &str) -> Option<Vec<u8>> {
    match std::fs::read(root().join(rel)) {
        Ok(b) => Some(b),
        Err(e) if std::env::var_os("CI").is_some() && rel == kvscope::DEFAULT_MODEL => panic!("{rel} missing under CI: {e}"),
        Err(e) => {
            eprintln!("SKIPPED: {rel} ({e}); run scripts/fetch-model.sh");
            None
        }
    }
}

/// The file's header with its tensor count set to zero: the metadata alone, whatever the tensor
/// types (the tokenizer reads nothing else).
fn metadata_only(bytes: &[u8]) -> Vec<u8> {
    // magic (4) | version u32 | tensor count u64 | metadata count u64 | metadata ...
    let mut head = bytes[..bytes.len().min(64 << 20)].to_vec();
    head[8..16].fill(0);
    head
}

/// The file's `tokenizer.*` metadata with `overrides` replaced, as a new GGUF without tensors
/// (the same vocabulary the goldens' script gave llama.cpp).
fn tokenizer_gguf(bytes: &[u8], overrides: &std::collections::BTreeMap<String, serde_json::Value>) -> Vec<u8> {
    let head = metadata_only(bytes);
    let g = Gguf::parse(&head).unwrap();
    let mut w = Writer::new();
    for (k, v) in &g.metadata {
        if k.starts_with("tokenizer.") && !overrides.contains_key(k) {
            w.kv(k, v.clone());
        }
    }
    for (k, v) in overrides {
        let v = match v {
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::String(s) => Value::String(s.clone()),
            other => panic!("override {k} = {other}: only strings and booleans"),
        };
        w.kv(k, v);
    }
    w.to_bytes()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn ids_pieces_and_text_match_llama_cpp() {
    let mut checked = 0;
    for (path, golden) in goldens() {
        let Some(bytes) = model_bytes(&format!("www/models/{}", golden.model)) else { continue };
        let file = tokenizer_gguf(&bytes, &golden.overrides);
        let tok = Tokenizer::from_gguf(&Gguf::parse(&file).unwrap()).unwrap();
        let what = path.file_name().unwrap().to_string_lossy();

        assert_eq!(tok.vocab_size(), golden.vocab.n_vocab, "{what}: vocabulary size");
        assert_eq!(
            (tok.bos, tok.eos, tok.add_bos),
            (golden.vocab.bos, golden.vocab.eos, golden.vocab.add_bos),
            "{what}: bos, eos, add_bos"
        );
        assert_eq!(tok.stop_tokens(), golden.vocab.eog.as_slice(), "{what}: end-of-generation tokens");

        let mut wrong = Vec::new();
        for c in &golden.cases {
            let ids = tok.encode(&c.text).unwrap();
            if ids != c.ids {
                wrong.push(format!("{:?}\n   llama.cpp {:?}\n   kvscope   {:?}", c.text, c.ids, ids));
                continue;
            }
            for (&id, want) in c.ids.iter().zip(&c.pieces) {
                assert_eq!(&hex(tok.token_bytes(id)), want, "{what}: bytes of token {id} in {:?}", c.text);
            }
            assert_eq!(tok.decode(&c.ids), c.detokenized, "{what}: detokenised {:?}", c.text);
        }
        assert!(wrong.is_empty(), "{what}: {} of {} strings tokenised differently:\n{}", wrong.len(), golden.cases.len(), wrong.join("\n"));
        eprintln!("{what}: {} strings identical to llama.cpp", golden.cases.len());
        checked += 1;
    }
    if checked == 0 {
        eprintln!("SKIPPED: no model file for any tokenizer golden");
    }
}

/// Text → ids → text gives the text back (after the BOS the vocabulary adds) for the real models;
/// not in SentencePiece vocabularies for text with `▁`, which stands for a space there, nor where
/// a space prefix is added.
#[test]
fn decode_of_encode_is_the_text() {
    for (_, golden) in goldens() {
        if !golden.overrides.is_empty() {
            continue;
        }
        let Some(bytes) = model_bytes(&format!("www/models/{}", golden.model)) else { continue };
        let tok = Tokenizer::from_gguf(&Gguf::parse(&metadata_only(&bytes)).unwrap()).unwrap();
        for c in golden.cases.iter().filter(|c| !(tok.add_space_prefix || c.text.contains('▁'))) {
            let ids = tok.encode(&c.text).unwrap();
            let body = if tok.add_bos { &ids[1..] } else { &ids[..] };
            assert_eq!(tok.decode(body), c.text, "{}: {:?} → {ids:?}", golden.model, c.text);
        }
    }
}

#[test]
fn gemma_vocabulary_facts() {
    let Some(bytes) = model_bytes(GEMMA) else { return };
    let head = metadata_only(&bytes);
    let g = Gguf::parse(&head).unwrap();
    let tok = Tokenizer::from_gguf(&g).unwrap();
    let id = |text: &str| (0..tok.vocab_size() as u32).find(|&i| tok.token_bytes(i) == text.as_bytes()).unwrap();
    assert_eq!((tok.bos, tok.eos, tok.add_bos, tok.add_space_prefix), (Some(2), Some(1), true, false));
    assert_eq!(tok.eot, Some(id("<end_of_turn>")));
    assert!(tok.is_stop(id("<end_of_turn>")) && tok.is_stop(1) && !tok.is_stop(id("<start_of_turn>")));
    assert!(!tok.has_chat_template());
    assert!(tok.is_control(id("<start_of_turn>")) && !tok.is_control(id("\n")));
    // Byte tokens stand for their byte (238 is `<0x00>`), ▁ for a space (494 is `▁t`).
    assert_eq!(tok.token_bytes(238 + 0x0a), b"\n");
    assert_eq!(tok.token_bytes(238 + 0xe6), [0xe6]);
    assert_eq!(tok.token_bytes(494), b" t");
}

#[test]
fn smollm_vocabulary_facts() {
    let Some(bytes) = model_bytes(kvscope::DEFAULT_MODEL) else { return };
    let tok = Tokenizer::from_gguf(&Gguf::parse(&bytes).unwrap()).unwrap();
    assert_eq!(tok.encode("Hello world").unwrap(), vec![19556, 905]);
    assert_eq!(tok.encode("<|im_start|>user\nhi<|im_end|>").unwrap(), vec![1, 4093, 198, 6004, 2]);
    assert_eq!((tok.bos, tok.eos, tok.eot, tok.add_bos), (Some(1), Some(2), None, false));
    assert!(tok.has_chat_template());
}

/// Seconds of CPU time this thread has used (Linux), so that a busy machine does not inflate
/// the measurement; wall time elsewhere.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Building the tokenizer happens at every model load, in the browser too.
#[test]
fn gemma_tokenizer_builds_quickly() {
    let Some(bytes) = model_bytes(GEMMA) else { return };
    let head = metadata_only(&bytes);
    let g = Gguf::parse(&head).unwrap();
    let mut best = (f64::INFINITY, f64::INFINITY);
    for _ in 0..3 {
        let (t, c) = (Instant::now(), cpu_seconds());
        let tok = Tokenizer::from_gguf(&g).unwrap();
        let wall = t.elapsed().as_secs_f64();
        let cpu = c.and_then(|c| Some(cpu_seconds()? - c)).unwrap_or(wall);
        assert_eq!(tok.vocab_size(), 262_144);
        best = (best.0.min(wall), best.1.min(cpu));
    }
    eprintln!("Gemma 3 tokenizer (262,144 tokens): built in {:.0} ms wall, {:.0} ms CPU (best of 3)", best.0 * 1e3, best.1 * 1e3);
    assert!(best.1 < 1.0, "building the Gemma tokenizer took {:.2} s of CPU time", best.1);
}

fn spm_vocab(extra: &[(&str, Value)]) -> Vec<u8> {
    let tokens = ["<unk>", "<s>", "</s>", "▁", "a", "b", "▁a", "ab"];
    let mut w = Writer::new();
    w.kv("tokenizer.ggml.model", Value::String("llama".into()))
        .kv("tokenizer.ggml.tokens", Value::Array(8, tokens.iter().map(|t| Value::String(t.to_string())).collect()))
        .kv("tokenizer.ggml.token_type", Value::Array(5, [2, 3, 3, 1, 1, 1, 1, 1].into_iter().map(Value::I32).collect()));
    for (k, v) in extra {
        w.kv(k, v.clone());
    }
    w.to_bytes()
}

#[test]
fn refusals_name_the_problem() {
    let err = |bytes: &[u8]| Tokenizer::from_gguf(&Gguf::parse(bytes).unwrap()).err().expect("refused").to_string();

    let scores = || Value::Array(6, [0.0, 0.0, 0.0, -1.0, -2.0, -3.0, -4.0, -5.0].into_iter().map(Value::F32).collect());
    let e = err(&spm_vocab(&[]));
    assert!(e.contains("tokenizer.ggml.scores") && e.contains("missing"), "{e}");
    let e = err(&spm_vocab(&[("tokenizer.ggml.scores", Value::Array(6, vec![Value::F32(0.0)]))]));
    assert!(e.contains("tokenizer.ggml.scores has 1 entries for 8 tokens"), "{e}");
    let e = err(&spm_vocab(&[("tokenizer.ggml.scores", scores()), ("tokenizer.ggml.bos_token_id", Value::U32(99))]));
    assert!(e.contains("tokenizer.ggml.bos_token_id") && e.contains("below 8"), "{e}");

    let bpe = |model: &str, pre: &str| {
        let mut w = Writer::new();
        w.kv("tokenizer.ggml.model", Value::String(model.into()))
            .kv("tokenizer.ggml.pre", Value::String(pre.into()))
            .kv("tokenizer.ggml.tokens", Value::Array(8, vec![Value::String("a".into())]))
            .kv("tokenizer.ggml.merges", Value::Array(8, vec![]));
        w.to_bytes()
    };
    let e = err(&bpe("gpt2", "gemma4"));
    assert!(e.contains("pre-tokenizer `gemma4`") && e.contains("qwen2") && e.contains("smollm"), "{e}");
    let e = err(&bpe("bert", "default"));
    assert!(e.contains("tokenizer model `bert`") && e.contains("llama"), "{e}");
}

/// A toy SentencePiece vocabulary worked by hand: the highest-scoring pair merges first, the
/// space prefix and ▁, byte fallback for a character outside the vocabulary.
#[test]
fn spm_by_hand() {
    let scores = Value::Array(6, [0.0, 0.0, 0.0, -1.0, -2.0, -3.0, -4.0, -5.0].into_iter().map(Value::F32).collect());
    let tok = Tokenizer::from_gguf(&Gguf::parse(&spm_vocab(&[("tokenizer.ggml.scores", scores.clone())])).unwrap()).unwrap();
    // " ab" → ▁ab: ▁a (score -4) beats ab (-5), so ▁a + b.
    assert_eq!(tok.encode("ab").unwrap(), vec![1, 6, 5]);
    assert_eq!(tok.decode(&[6, 5]), "ab", "the first token's space prefix is dropped");
    assert_eq!(tok.decode(&[1, 6, 5]), "<s> ab", "as llama_detokenize: only the first token loses its space");
    // No byte tokens and no `é`: the unknown token.
    assert_eq!(tok.encode("é").unwrap(), vec![1, 3, 0]);
    // `</s>` in the text is the control token, and the text after it gets its own space prefix.
    assert_eq!(tok.encode("a</s>b").unwrap(), vec![1, 6, 2, 3, 5]);
}
