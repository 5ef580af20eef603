//! The `kvscope` binary as a user runs it: outputs, formats, exit codes and error lines.

mod common;

use std::process::Command;

use common::{default_model, gpu, synthetic_model, SynTypes};
use kvscope::core::quant::GgmlType::*;

fn kvscope(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kvscope")).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().expect("runs");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn tmp(name: &str, bytes: &[u8]) -> String {
    let dir = std::env::temp_dir().join(format!("kvscope-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.to_string_lossy().into_owned()
}

/// One readable line on stderr, a non-zero exit, no panic.
fn assert_clean_error(args: &[&str], needle: &str) {
    let (code, _, err) = kvscope(args);
    assert_eq!(code, 1, "{args:?}: {err}");
    assert!(err.contains(needle), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    assert_eq!(err.lines().filter(|l| l.starts_with("kvscope:")).count(), 1, "{err}");
}

#[test]
fn bad_files_give_one_line_and_exit_1() {
    let png = tmp("x.png", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR");
    assert_clean_error(&["inspect", &png], "not a GGUF file");
    assert_clean_error(&["generate", "--model", &png, "--prompt", "hi"], "not a GGUF file");
    assert_clean_error(&["inspect", "/nonexistent/model.gguf"], "cannot read model `/nonexistent/model.gguf`");
    let mut truncated =
        synthetic_model(&SynTypes { embd: F32, q: F32, k: F32, v: F32, o: F32, gate: F32, up: F32, down: F32, output: None }, 1, 1);
    truncated.truncate(truncated.len() / 2);
    assert_clean_error(&["inspect", &tmp("half.gguf", &truncated)], "outside");
    let (code, _, err) = kvscope(&["generate", "--prompt", "x", "--backend", "tpu"]);
    assert_ne!(code, 0);
    assert!(err.contains("unknown backend `tpu`"), "{err}");
}

#[test]
fn inspect_and_tokenize_the_default_model() {
    if default_model().is_none() {
        return;
    }
    let (code, out, _) = kvscope(&["inspect"]);
    assert_eq!(code, 0);
    for needle in ["architecture: llama", "layers 30", "heads 9 (kv 3, head dim 64)", "blk.29.ffn_down.weight", "KV cache", "Q4_1"] {
        assert!(out.contains(needle), "inspect lacks {needle:?}");
    }
    let (code, out, _) = kvscope(&["inspect", "--json", "--context", "1024"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["tensors"].as_array().unwrap().len(), 272);
    // 30 layers × 2 (K, V) × 1024 positions × 3 heads × 64 dims × 4 bytes.
    assert_eq!(v["model"]["kv_cache_bytes"], 30 * 2 * 1024 * 3 * 64 * 4);
    assert_eq!(kvscope(&["tokenize", "--prompt", "Hello world"]).1.trim(), "19556,905");
}

#[test]
fn generate_json_streams_tokens_and_backends_agree() {
    if default_model().is_none() || gpu().is_none() {
        return;
    }
    let run = |backend: &str| {
        let (code, out, err) =
            kvscope(&["generate", "--prompt", "The capital of France is", "--max-tokens", "8", "--json", "--backend", backend]);
        assert_eq!(code, 0, "{err}");
        let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let (summary, tokens) = lines.split_last().unwrap();
        assert_eq!(summary["summary"]["generated_tokens"], tokens.len());
        for t in tokens {
            assert!(t["id"].is_u64() && t["text"].is_string() && t["ms"].is_number());
            let top = t["top"].as_array().unwrap();
            assert_eq!(top[0]["id"], t["id"], "greedy picks the top row");
        }
        (tokens.iter().map(|t| t["id"].as_u64().unwrap()).collect::<Vec<_>>(), summary.clone())
    };
    let (gpu_ids, s) = run("gpu");
    let (cpu_ids, _) = run("cpu");
    assert_eq!(gpu_ids, cpu_ids);
    assert_eq!(gpu_ids[0], 7042, "\" Paris\"");
    let s = &s["summary"];
    assert!(s["adapter"].is_string());
    assert_eq!(s["counters"]["submits"], s["counters"]["maps"], "one map per submit while decoding");
}

#[test]
fn logits_file_is_n_by_vocab_and_backends_agree() {
    if gpu().is_none() {
        return;
    }
    let model = tmp(
        "syn.gguf",
        &synthetic_model(&SynTypes { embd: Q8_0, q: Q4_1, k: Q4_0, v: Q8_0, o: F16, gate: Q4_1, up: Q4_1, down: Q4_1, output: None }, 2, 9),
    );
    let read = |backend: &str| {
        let out = tmp(&format!("logits-{backend}.bin"), b"");
        let (code, _, err) = kvscope(&["logits", "--model", &model, "--ids", "1,50,60,70,259", "--backend", backend, "--out", &out]);
        assert_eq!(code, 0, "{err}");
        let b = std::fs::read(&out).unwrap();
        b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect::<Vec<f32>>()
    };
    let (g, r, c) = (read("gpu"), read("reference"), read("cpu"));
    assert_eq!(r.len(), 5 * 261);
    common::assert_close("cli logits, gpu", &g, &r, 1e-4);
    // The CPU backend rounds x to 16 bits per group of 16 (tests/cpu.rs): within 1e-3 normalised.
    let (e, _, rel) = common::max_err(&c, &r);
    assert!(rel < 1e-3, "cli logits, cpu: {e} ({rel} normalised)");
    assert_clean_error(&["logits", "--model", &model, "--ids", "1,x", "--out", "/tmp/never"], "`x` in --ids is not a token id");
    // Refused by the argument parser, as an unknown backend is.
    let (code, _, err) = kvscope(&["generate", "--model", &model, "--prompt", "hi", "--flaw", "leaky"]);
    assert_ne!(code, 0);
    assert!(err.contains("unknown flaw `leaky` (use none, no-append, rope-pos-0, same-row)"), "{err}");
    assert_clean_error(
        &["generate", "--model", &model, "--prompt", "hi", "--flaw", "same-row", "--no-cache", "--backend", "cpu"],
        "cannot be combined with decoding without the cache",
    );
    assert_clean_error(
        &["logits", "--model", &model, "--ids", "1,999999", "--backend", "cpu", "--out", "/tmp/never"],
        "token id 999999 is outside the vocabulary",
    );
}

/// `inspect` runs the checks a load runs: a model `generate` refuses — an unknown
/// pre-tokenizer, an end-of-sequence id outside the vocabulary — is still listed, then said to
/// be unloadable, with the reason and exit status 1, in text and JSON.
#[test]
fn inspect_says_when_a_model_cannot_load() {
    let good = synthetic_model(&SynTypes::q4_1(), 1, 3);
    let find = |b: &[u8], s: &str| b.windows(s.len()).position(|w| w == s.as_bytes()).unwrap();
    let mut pre = good.clone();
    let at = find(&pre, "smollm");
    pre[at..at + 6].copy_from_slice(b"smolxx");
    let mut eos = good.clone();
    // The key, then its u32 type tag (4 bytes), then the id.
    let at = find(&eos, "tokenizer.ggml.eos_token_id") + "tokenizer.ggml.eos_token_id".len() + 4;
    eos[at..at + 4].copy_from_slice(&9999u32.to_le_bytes());
    let (code, out, err) = kvscope(&["inspect", &tmp("good.gguf", &good)]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("loads on the gpu backend"), "{out}");
    for (file, bytes, why) in [("pre.gguf", &pre, "pre-tokenizer `smolxx`"), ("eos.gguf", &eos, "eos_token_id")] {
        let path = tmp(file, bytes);
        let (code, out, err) = kvscope(&["inspect", &path]);
        assert_eq!(code, 1, "{file}: {out}");
        assert!(out.contains("tokenizer.ggml.model") && out.contains("blk.0.ffn_down.weight"), "{file}: the listing is shown: {out}");
        assert!(out.contains("CANNOT LOAD") && out.contains(why), "{file}: {out}");
        assert!(err.contains("this model cannot load") && err.contains(why) && !err.contains("panicked"), "{file}: {err}");
        let (code, json, _) = kvscope(&["inspect", &path, "--json"]);
        assert_eq!(code, 1);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["loadable"], false);
        assert_eq!(v["error"]["kind"], "InvalidModel", "{file}");
        assert!(v["error"]["message"].as_str().unwrap().contains(why), "{file}");
        assert!(v["metadata"]["general.architecture"].is_string());
        // generate refuses it for the same reason.
        assert_clean_error(&["generate", "--model", &path, "--prompt", "hi", "--backend", "reference"], why);
    }
}

/// `kv-compare`: a table, then (with --json) one object as the last line — the exact policy
/// agreeing with itself, a quantised one costing its blocks — and bad policies or a GPU that
/// cannot run them refused in one line.
#[test]
fn kv_compare_reports_each_policy_against_the_exact_cache() {
    let model = tmp("kv.gguf", &common::synthetic_arch_model(kvscope::core::config::Arch::Llama, 300));
    let text = "he th he tx the then he th he tx the then he th he";
    let args = [
        "kv-compare",
        "--model",
        &model,
        "--text",
        text,
        "--policies",
        "f32,q8_0,window-8",
        "--backend",
        "reference",
        "--context",
        "128",
        "--json",
    ];
    let (code, out, err) = kvscope(&args);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("policy") && out.contains("window-8"), "{out}");
    let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).expect("the last line is JSON");
    let p = v["policies"].as_array().unwrap();
    assert_eq!(p.iter().map(|p| p["name"].as_str().unwrap()).collect::<Vec<_>>(), ["f32", "q8_0", "window-8"]);
    assert!(v["positions"].as_u64().unwrap() > 8);
    assert_eq!((p[0]["top1_agreement"].as_f64(), p[0]["mean_kl"].as_f64()), (Some(1.0), Some(0.0)));
    assert_eq!(p[1]["bytes_per_position"].as_u64().unwrap() * 128, p[0]["bytes_per_position"].as_u64().unwrap() * 34);
    assert_eq!(p[2]["positions_held"].as_u64(), Some(8));
    // The free generations: the exact cache's and each policy's, the same ids before the first
    // divergence and a different one at it.
    let steps = v["free_steps"].as_u64().unwrap() as usize;
    let ids = |g: &serde_json::Value| g["ids"].as_array().unwrap().iter().map(|i| i.as_u64().unwrap()).collect::<Vec<_>>();
    let exact = ids(&v["reference"]);
    assert_eq!((exact.len(), v["reference"]["pieces"].as_array().unwrap().len()), (steps, steps));
    assert!(v["reference"]["text"].is_string() && v["prefix_text"].is_string());
    for q in p {
        let free = ids(&q["free"]);
        match q["first_divergence"].as_u64().map(|d| d as usize) {
            None => assert_eq!(free, exact, "{}", q["name"]),
            Some(d) => assert!(free[..d] == exact[..d] && free[d] != exact[d], "{}", q["name"]),
        }
    }
    assert_clean_error(&["kv-compare", "--model", &model, "--text", text, "--policies", "f32,sink-8-window-8"], "fewer than the window");
    assert_clean_error(
        &["kv-compare", "--model", &model, "--text", text, "--policies", "h2o-8", "--backend", "gpu"],
        "runs on the cpu and reference backends",
    );
}

#[test]
fn request_options_give_the_same_tokens_on_both_backends_and_bad_ones_are_named() {
    if default_model().is_none() || gpu().is_none() {
        return;
    }
    let schema = tmp("person.json", br#"{"type": "object", "properties": {"name": {"type": "string", "maxLength": 8}}, "required": ["name"], "additionalProperties": false}"#);
    let run = |backend: &str, extra: &[&str]| {
        let mut args = vec!["generate", "--prompt", "The capital of France is", "--max-tokens", "12", "--json", "--backend", backend];
        args.extend_from_slice(extra);
        let (code, out, err) = kvscope(&args);
        assert_eq!(code, 0, "{err}");
        let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let (summary, tokens) = lines.split_last().unwrap();
        (tokens.iter().map(|t| t["id"].as_u64().unwrap()).collect::<Vec<_>>(), tokens.to_vec(), summary["summary"].clone())
    };
    let (plain, _, s) = run("cpu", &[]);
    let cases: [&[&str]; 4] = [
        &["--stop", "\n\nThe", "--logprobs", "3"],
        &["--frequency-penalty", "1", "--presence-penalty", "0.5", "--repetition-penalty", "1.2"],
        &["--logit-bias", "7042=-100", "--logit-bias", "30=2.5"],
        &["--json-schema", &schema, "--chat"],
    ];
    for extra in cases {
        let (cpu, tokens, cs) = run("cpu", extra);
        let (gpu, _, gs) = run("gpu", extra);
        assert_eq!(cpu, gpu, "{extra:?}");
        assert_eq!(cs["text"], gs["text"], "{extra:?}");
        if extra[0] == "--stop" {
            let text = s["text"].as_str().unwrap();
            assert_eq!(cs["text"].as_str().unwrap(), &text[..text.find("\n\nThe").unwrap()]);
            assert_eq!(cs["stop"], "stop_string");
            assert!(tokens.iter().all(|t| t["top_logprobs"].as_array().unwrap().len() == 3 && t["logprob"].is_number()));
        } else if extra[0] == "--json-schema" {
            let v: serde_json::Value = serde_json::from_str(cs["text"].as_str().unwrap()).unwrap();
            assert!(v["name"].as_str().unwrap().chars().count() <= 8, "{v}");
        } else {
            assert_ne!(cpu, plain, "{extra:?} changes the text");
        }
    }
    let base = ["generate", "--prompt", "hi", "--max-tokens", "2", "--backend", "cpu"];
    let bad = tmp("bad.json", br#"{"type": "nonsense"}"#);
    for (extra, needle) in [
        (&["--logprobs", "21"][..], "top_logprobs must be from 0 to 20"),
        (&["--stop", "a", "--stop", "b", "--stop", "c", "--stop", "d", "--stop", "e"][..], "stop takes at most 4"),
        (&["--logit-bias", "49152=1"][..], "not a token id of this vocabulary"),
        (&["--json-schema", &bad][..], "response_format"),
        (&["--presence-penalty", "3"][..], "presence_penalty must be a number from -2 to 2"),
    ] {
        assert_clean_error(&[&base[..], extra].concat(), needle);
    }
}

/// A model written as a split set (`kvscope split`, as llama-gguf-split cuts one) and opened by
/// its first part is the model: every tensor's bytes, name, type and shape as in the single file
/// (read back with the GGUF reader), the same logits. A missing part, a later part given
/// first and a part in the wrong place are each named.
#[test]
fn a_split_model_opens_by_its_first_part() {
    use kvscope::core::gguf::Gguf;
    use kvscope::core::split;
    let whole = synthetic_model(&SynTypes::q4_1(), 2, 41);
    let model = tmp("whole.gguf", &whole);
    let out = std::path::Path::new(&model).with_file_name("set");
    let (code, _, err) = kvscope(&["split", "--model", &model, "--parts", "3", "--out", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let part = |i: usize| out.with_file_name(split::part_name("set", i, 3));
    let parts: Vec<Vec<u8>> = (0..3).map(|i| std::fs::read(part(i)).expect("part written")).collect();
    let g = Gguf::parse(&whole).unwrap();
    let mut names = Vec::new();
    for (i, bytes) in parts.iter().enumerate() {
        let p = Gguf::parse(bytes).unwrap();
        assert_eq!((p.u64(split::SPLIT_NO).unwrap(), p.u64(split::SPLIT_COUNT).unwrap()), (i as u64, 3));
        assert!(!p.tensors.is_empty(), "part {i} holds tensors");
        assert_eq!(p.get("general.architecture").is_some(), i == 0, "the metadata is in part 1 only");
        for t in &p.tensors {
            let o = g.tensor(&t.name).expect("a tensor of the model");
            assert_eq!((&t.dims, t.ty), (&o.dims, o.ty), "{}", t.name);
            let (a, b) = (p.tensor_range(t), g.tensor_range(o));
            assert_eq!(bytes[a.start as usize..a.end as usize], whole[b.start as usize..b.end as usize], "{}", t.name);
            names.push(t.name.clone());
        }
    }
    assert_eq!(names, g.tensors.iter().map(|t| t.name.clone()).collect::<Vec<_>>(), "every tensor once, in order");
    let first = part(0).to_string_lossy().into_owned();
    let logits = |m: &str| {
        let out = std::path::Path::new(&model).with_file_name("split-logits.bin").to_string_lossy().into_owned();
        let (code, _, err) = kvscope(&["logits", "--model", m, "--ids", "1,50,60,70,259", "--backend", "cpu", "--out", &out]);
        assert_eq!(code, 0, "{err}");
        std::fs::read(&out).unwrap()
    };
    assert_eq!(logits(&first), logits(&model), "the split set's logits are the single file's, bit for bit");
    let second = part(1).to_string_lossy().into_owned();
    assert_clean_error(&["generate", "--model", &second, "--prompt", "he"], "open set-00001-of-00003.gguf");
    std::fs::copy(part(1), part(2)).unwrap();
    assert_clean_error(&["generate", "--model", &first, "--prompt", "he"], "it says it is part 2 of 3, where part 3 of 3 belongs");
    std::fs::remove_file(part(2)).unwrap();
    assert_clean_error(
        &["generate", "--model", &first, "--prompt", "he"],
        "split model part `set-00003-of-00003.gguf`: part 3 of 3 cannot be read",
    );
}

/// `generate` past the context: `sink-4-window-28` in a context of 32 makes 48 tokens (to
/// position 52) and says which policy allowed it, on stderr and in the JSON summary; the exact
/// cache stops at the context and says nothing of the kind.
#[test]
fn generate_runs_past_the_context_with_sinks_and_a_window() {
    let model = tmp("sink.gguf", &common::synthetic_arch_model(kvscope::core::config::Arch::Llama, 300));
    // The synthetic vocabulary's end-of-text tokens banned, so that the run goes the whole way.
    let args = |policy: &'static str| {
        let base = ["generate", "--model", &model, "--prompt", "he th he", "--backend", "cpu", "--kv-policy", policy, "--context", "32"];
        let rest = ["--max-tokens", "48", "--logit-bias", "0=-100", "--logit-bias", "1=-100", "--logit-bias", "2=-100", "--json"];
        base.into_iter().chain(rest).map(String::from).collect::<Vec<_>>()
    };
    let run = |a: Vec<String>| kvscope(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let (code, out, err) = run(args("sink-4-window-28"));
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 49, "48 tokens and the summary: {out}");
    let s: serde_json::Value = serde_json::from_str(lines[48]).unwrap();
    assert_eq!((s["summary"]["generated_tokens"].as_u64(), s["summary"]["stop"].as_str()), (Some(48), Some("max_tokens")));
    let past = &s["summary"]["past_context"];
    assert_eq!((past["policy"].as_str(), past["context"].as_u64(), past["held"].as_u64()), (Some("sink-4-window-28"), Some(32), Some(32)));

    let mut text = args("sink-4-window-28");
    text.pop();
    let (code, _, err) = run(text);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("context 32 passed at position 32: cache policy sink-4-window-28 keeps 32 positions"), "{err}");

    let (code, out, err) = run(args("f32"));
    assert_eq!(code, 0, "{err}");
    let s: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(s["summary"]["stop"].as_str(), Some("context_full"));
    assert!(s["summary"]["past_context"].is_null() && !err.contains("passed at position"), "{out}");
}

/// A split set read through its parts (`split::Joined`) is a GGUF file of its own: every tensor's
/// bytes are the single file's, and any range read (across the header, tensors and padding)
/// is that range of the whole.
#[test]
fn a_split_set_reads_as_one_file_through_its_parts() {
    use kvscope::core::gguf::{ByteSource, Gguf};
    use kvscope::core::split::{self, Joined};
    let whole = synthetic_model(&SynTypes::q4_1(), 2, 43);
    let parts = split::split(&whole, 3).unwrap();
    let names: Vec<String> = (0..3).map(|i| split::part_name("m", i, 3)).collect();
    let mut open = |i: usize, name: &str| {
        assert_eq!(name, names[i]);
        Ok(Box::new(&parts[i][..]) as Box<dyn ByteSource>)
    };
    let mut joined = Joined::open(Box::new(&parts[0][..]), &names[0], &mut open).unwrap();
    let mut all = Vec::new();
    joined.read(0..joined.len(), &mut all).unwrap();
    let (g, j) = (Gguf::parse(&whole).unwrap(), Gguf::parse(&all).unwrap());
    assert_eq!(j.tensors.len(), g.tensors.len());
    assert!(j.get(split::SPLIT_COUNT).is_none(), "the joined header has no split keys");
    for t in &g.tensors {
        let u = j.tensor(&t.name).expect("every tensor");
        assert_eq!(j.tensor_data(u).unwrap(), g.tensor_data(t).unwrap(), "{}", t.name);
        let mut one = Vec::new();
        joined.read(j.tensor_range(u), &mut one).unwrap();
        assert_eq!(one, g.tensor_data(t).unwrap(), "{} read alone", t.name);
    }
    let mut rng = fastrand::Rng::with_seed(7);
    let mut got = Vec::new();
    for _ in 0..200 {
        let a = rng.u64(0..joined.len());
        let b = rng.u64(a..=joined.len().min(a + 5000));
        joined.read(a..b, &mut got).unwrap();
        assert_eq!(got, all[a as usize..b as usize], "{a}..{b}");
    }
    assert!(joined.read(0..joined.len() + 1, &mut got).is_err(), "a read past the end is refused");
}

/// The CLI reads a model from its file as it loads: a model past the GPU's limits (a sparse file
/// larger than a binding, its weights holes) is refused by `inspect` and `generate` from its
/// header, naming the buffer and the limit.
#[test]
fn the_cli_refuses_a_model_past_the_gpu_limits_from_its_header() {
    if gpu().is_none() {
        return;
    }
    let ctx = pollster::block_on(kvscope::backend::gpu::GpuContext::new()).unwrap();
    let bind = ctx.limits.max_storage_buffer_binding_size.min(ctx.limits.max_buffer_size);
    let ffn = (bind / 144 / 2 + 64).next_multiple_of(32);
    let path = std::env::temp_dir().join(format!("kvscope-cli-wide-{}.gguf", std::process::id()));
    common::zero_model_file(&path, 256, ffn);
    let p = path.to_str().unwrap();
    let (code, out, err) = kvscope(&["inspect", p]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("this model cannot load: GPU limit exceeded") && err.contains("`blk.0.ffn_gate_up.weight`"), "{err}");
    assert_clean_error(&["generate", "--model", p, "--prompt", "he", "--max-tokens", "1"], "`blk.0.ffn_gate_up.weight`");
    // The CPU backend holds it (natively there is no 4 GiB limit): inspect says it can load.
    let (code, out, err) = kvscope(&["inspect", "--backend", "cpu", p]);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(code, 0, "{out}{err}");
}
