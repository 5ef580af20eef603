//! `kvscope` command line: inspect a GGUF, tokenize, generate, dump logits.

#[cfg(target_arch = "wasm32")]
fn main() {}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    std::process::exit(cli::main());
}

#[cfg(not(target_arch = "wasm32"))]
mod cli {
    use std::io::Write;
    use std::path::{Path, PathBuf};

    use clap::{Parser, Subcommand};
    use kvscope::core::chat::{ChatMessage, ChatRequest};
    use kvscope::core::config::{Config, KvType};
    use kvscope::core::gguf::{read_header, ByteSource, FileSource, Gguf};
    use kvscope::core::grammar::{JsonSchema, ResponseFormat};
    use kvscope::core::sampler::SamplerConfig;
    use kvscope::core::split;
    use kvscope::core::tokenizer::Tokenizer;
    use kvscope::engine::{ChatTurn, ModelFacts, MAX_TOKENS};
    use kvscope::{BackendKind, Engine, Error, Flaw, GenerateOptions, LoadOptions, Result};
    use serde_json::json;

    #[derive(Parser)]
    #[command(name = "kvscope", version, about = "A small LLM on wgpu with a GPU-resident KV cache")]
    struct Cli {
        #[command(subcommand)]
        cmd: Cmd,
    }

    #[derive(clap::Args)]
    struct ModelArgs {
        /// GGUF model file.
        #[arg(long, default_value = kvscope::DEFAULT_MODEL)]
        model: PathBuf,
        /// Keep the KV cache in f16 (half the memory; values rounded on both backends).
        #[arg(long)]
        kv_f16: bool,
        /// A KV-cache policy: f32, f16, q8_0, q4_0, window-N, sink-S-window-N or h2o-N (the last
        /// two on the cpu and reference backends, where the evicting ones run past --context).
        #[arg(long, conflicts_with = "kv_f16")]
        kv_policy: Option<kvscope::core::kv_policy::KvPolicy>,
    }

    #[derive(Subcommand)]
    enum Cmd {
        /// Architecture, hyper-parameters, tensors and memory needed.
        Inspect {
            /// GGUF model file.
            #[arg(default_value = kvscope::DEFAULT_MODEL)]
            model: PathBuf,
            #[arg(long)]
            json: bool,
            /// Context length for the KV-cache estimate.
            #[arg(long, default_value_t = kvscope::DEFAULT_CONTEXT)]
            context: usize,
            /// Size the KV cache as f16.
            #[arg(long)]
            kv_f16: bool,
            /// The backend whose checks the model must pass (as `generate --backend`).
            #[arg(long, default_value = "gpu")]
            backend: BackendKind,
        },
        /// Token ids of a text, comma-separated.
        Tokenize {
            #[command(flatten)]
            m: ModelArgs,
            #[arg(long)]
            prompt: String,
        },
        /// Generate text (greedy argmax unless --temperature is above 0).
        Generate(GenerateArgs),
        /// Prefill and decode speed on the GPU, per-token costs and memory.
        Bench(BenchArgs),
        /// Logits after every input position (teacher forcing), little-endian f32 [n × V].
        Logits(LogitsArgs),
        /// A text through the exact KV cache and through compressed or evicting ones, compared
        /// position by position: bytes, top-1 agreement, KL, perplexity, first divergence.
        KvCompare(KvCompareArgs),
        /// Write a model as a split set (`OUT-00001-of-0000N.gguf` …), as llama-gguf-split does;
        /// every command opens a split set by its first part.
        Split {
            /// GGUF model file (a single file).
            #[arg(long, default_value = kvscope::DEFAULT_MODEL)]
            model: PathBuf,
            /// Parts to cut it into (of whole tensors, about equal in bytes).
            #[arg(long)]
            parts: usize,
            /// The parts' path and name before `-00001-of-0000N.gguf`.
            #[arg(long)]
            out: PathBuf,
        },
    }

    #[derive(clap::Args)]
    struct KvCompareArgs {
        /// GGUF model file.
        #[arg(long, default_value = kvscope::DEFAULT_MODEL)]
        model: PathBuf,
        #[arg(long, conflicts_with = "text_file", required_unless_present = "text_file")]
        text: Option<String>,
        #[arg(long)]
        text_file: Option<PathBuf>,
        /// Comma-separated: f32, f16, q8_0, q4_0, window-N, sink-S-window-N, h2o-N.
        #[arg(long, default_value = "f32,f16,q8_0,q4_0")]
        policies: String,
        /// cpu or reference (the GPU keeps f32 and f16 caches of every position).
        #[arg(long, default_value = "cpu")]
        backend: BackendKind,
        #[arg(long, default_value_t = kvscope::DEFAULT_CONTEXT)]
        context: usize,
        /// The comparison as one JSON object, the last line of the output.
        #[arg(long)]
        json: bool,
    }

    #[derive(clap::Args)]
    struct GenerateArgs {
        #[command(flatten)]
        m: ModelArgs,
        #[arg(long)]
        prompt: String,
        /// Wrap the prompt as a user turn in the model's chat template.
        #[arg(long)]
        chat: bool,
        #[arg(long, default_value_t = MAX_TOKENS)]
        max_tokens: usize,
        #[arg(long, default_value_t = 0.0)]
        temperature: f32,
        #[arg(long, default_value_t = 0)]
        top_k: usize,
        #[arg(long, default_value_t = 1.0)]
        top_p: f32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, default_value = "gpu")]
        backend: BackendKind,
        #[arg(long, default_value_t = kvscope::DEFAULT_CONTEXT)]
        context: usize,
        /// One JSON object per token, then a summary.
        #[arg(long)]
        json: bool,
        /// Decode the naive way, re-running the whole sequence at every step (for comparison).
        #[arg(long)]
        no_cache: bool,
        /// Pick greedy tokens on the GPU and read back 8 bytes instead of the logits row.
        #[arg(long)]
        gpu_argmax: bool,
        /// Feed generated tokens through a deliberately broken KV cache: no-append, rope-pos-0 or
        /// same-row (the prompt is prefilled correctly).
        #[arg(long, default_value = "none")]
        flaw: Flaw,
        /// Stop where this text appears (up to 4 times; the stop text is not printed).
        #[arg(long = "stop", value_name = "TEXT", allow_hyphen_values = true)]
        stop: Vec<String>,
        /// Report each token's log probability and its N most probable alternatives (0..=20;
        /// in --json's token lines).
        #[arg(long, value_name = "N")]
        logprobs: Option<usize>,
        /// OpenAI's frequency penalty (-2..=2) on the tokens generated so far.
        #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
        frequency_penalty: f32,
        /// OpenAI's presence penalty (-2..=2) on the tokens generated so far.
        #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
        presence_penalty: f32,
        /// llama.cpp's repetition penalty (1: none) on the last --repeat-last-n tokens.
        #[arg(long, default_value_t = 1.0)]
        repetition_penalty: f32,
        #[arg(long, default_value_t = kvscope::engine::REPEAT_LAST_N)]
        repeat_last_n: usize,
        /// ID=BIAS: add BIAS (-100..=100; -100 bans) to token ID's logit (repeatable).
        #[arg(long = "logit-bias", value_name = "ID=BIAS", allow_hyphen_values = true)]
        logit_bias: Vec<String>,
        #[command(flatten)]
        format: FormatArgs,
    }

    /// Structured output by constrained decoding.
    #[derive(clap::Args)]
    struct FormatArgs {
        /// Constrain the output to the JSON Schema in FILE.
        #[arg(long, value_name = "FILE", conflicts_with = "json_object")]
        json_schema: Option<PathBuf>,
        /// Constrain the output to a JSON object.
        #[arg(long)]
        json_object: bool,
    }

    impl FormatArgs {
        fn response_format(&self) -> Result<ResponseFormat> {
            let Some(path) = &self.json_schema else {
                return Ok(if self.json_object { ResponseFormat::JsonObject } else { ResponseFormat::Text });
            };
            let text = std::fs::read_to_string(path).map_err(|e| Error::Io(format!("cannot read `{}`: {e}", path.display())))?;
            let schema =
                serde_json::from_str(&text).map_err(|e| Error::Option(format!("--json-schema `{}` is not JSON: {e}", path.display())))?;
            Ok(ResponseFormat::JsonSchema { json_schema: JsonSchema { name: String::new(), schema: Some(schema), strict: None } })
        }
    }

    #[derive(clap::Args)]
    struct BenchArgs {
        #[command(flatten)]
        m: ModelArgs,
        #[arg(long, default_value = "gpu")]
        backend: BackendKind,
        #[arg(long, default_value_t = 256)]
        prompt_tokens: usize,
        #[arg(long, default_value_t = 128)]
        gen_tokens: usize,
        /// Pick greedy tokens on the GPU (8 bytes read back per token).
        #[arg(long)]
        gpu_argmax: bool,
        /// Cached positions before each measured decode run, comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = kvscope::bench::CONTEXTS)]
        contexts: Vec<usize>,
        /// Also time every dispatch of a decode step (at the last context) and of a prefill
        /// chunk alone, by kind: where the GPU time goes.
        #[arg(long)]
        profile: bool,
        /// Also decode under this JSON Schema (or any object): the grammar mask's cost per token,
        /// and decode speed with and without it.
        #[command(flatten)]
        format: FormatArgs,
        #[arg(long)]
        json: bool,
    }

    #[derive(clap::Args)]
    struct LogitsArgs {
        #[command(flatten)]
        m: ModelArgs,
        #[arg(long, conflicts_with = "ids", required_unless_present = "ids")]
        prompt: Option<String>,
        /// Comma-separated token ids.
        #[arg(long)]
        ids: Option<String>,
        #[arg(long, default_value = "gpu")]
        backend: BackendKind,
        #[arg(long)]
        out: PathBuf,
    }

    impl ModelArgs {
        /// The model loaded with these settings.
        fn load(&self, backend: BackendKind, context: usize) -> Result<Engine> {
            let opts = LoadOptions { backend, context, kv: KvType::new(self.kv_f16), ..Default::default() };
            let opts = match self.kv_policy {
                Some(p) => opts.with_policy(p),
                None => opts,
            };
            pollster::block_on(Engine::load_from(&mut *open(&self.model)?, opts))
        }
    }

    pub fn main() -> i32 {
        let cli = Cli::parse();
        match run(cli) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("kvscope: {e}");
                1
            }
        }
    }

    /// The model at `path`, read where asked (the file is never held whole): a single file, or
    /// the first part of a split set with the other parts read from beside it
    /// (`core::split::open_model`).
    fn open(path: &Path) -> Result<Box<dyn ByteSource>> {
        let first = FileSource::open(path).map_err(|e| {
            let hint =
                if path.to_str() == Some(kvscope::DEFAULT_MODEL) { " (run scripts/fetch-model.sh to get the default model)" } else { "" };
            Error::Io(format!("cannot read model `{}`: {e}{hint}", path.display()))
        })?;
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        split::open_model(Box::new(first), name, &mut |_, part| {
            let src = FileSource::open(&path.with_file_name(part)).map_err(|e| Error::Io(e.to_string()))?;
            Ok(Box::new(src) as Box<dyn ByteSource>)
        })
    }

    /// The whole model in memory, for the commands that take it whole (`kv-compare`, which loads
    /// it once per policy, and `split`).
    fn read(path: &Path) -> Result<Vec<u8>> {
        let mut src = open(path)?;
        let mut bytes = Vec::new();
        src.read(0..src.len(), &mut bytes)?;
        Ok(bytes)
    }

    /// `kvscope split`: the parts written beside `out`, named as llama-gguf-split names them.
    fn write_split(model: &Path, parts: usize, out: &Path) -> Result<()> {
        let set = split::split(&read(model)?, parts)?;
        let prefix =
            out.file_name().and_then(|n| n.to_str()).ok_or_else(|| Error::Option(format!("--out `{}` names no file", out.display())))?;
        for (i, bytes) in set.iter().enumerate() {
            let path = out.with_file_name(split::part_name(prefix, i, set.len()));
            std::fs::write(&path, bytes).map_err(|e| Error::Io(format!("cannot write `{}`: {e}", path.display())))?;
            println!("{} ({} bytes)", path.display(), bytes.len());
        }
        Ok(())
    }

    fn run(cli: Cli) -> Result<()> {
        match cli.cmd {
            Cmd::Inspect { model, json, context, kv_f16, backend } => {
                let opts = LoadOptions { backend, context, kv: KvType::new(kv_f16), ..Default::default() };
                let mut src = open(&model)?;
                let header = read_header(&mut *src)?;
                inspect(&Gguf::parse_prefix(&header, src.len())?, json, &opts)
            }
            Cmd::Tokenize { m, prompt } => {
                let mut src = open(&m.model)?;
                let header = read_header(&mut *src)?;
                let tok = Tokenizer::from_gguf(&Gguf::parse_prefix(&header, src.len())?)?;
                let ids = tok.encode(&prompt)?;
                println!("{}", ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(","));
                Ok(())
            }
            Cmd::Generate(a) => generate(a),
            Cmd::Bench(a) => bench(a),
            Cmd::Logits(a) => logits(a),
            Cmd::KvCompare(a) => kv_compare(a),
            Cmd::Split { model, parts, out } => write_split(&model, parts, &out),
        }
    }

    /// `ID=BIAS` pairs as `logit_bias` takes them.
    fn logit_bias(pairs: &[String]) -> Result<std::collections::BTreeMap<String, f32>> {
        pairs
            .iter()
            .map(|p| match p.split_once('=').map(|(id, b)| (id.trim(), b.trim().parse::<f32>())) {
                Some((id, Ok(b))) => Ok((id.to_string(), b)),
                _ => Err(Error::Option(format!("--logit-bias `{p}`: expected ID=BIAS, e.g. 198=-100"))),
            })
            .collect()
    }

    impl GenerateArgs {
        fn options(&self) -> Result<GenerateOptions> {
            Ok(GenerateOptions {
                max_tokens: self.max_tokens,
                sampler: SamplerConfig { temperature: self.temperature, top_k: self.top_k, top_p: self.top_p, seed: self.seed },
                no_cache: self.no_cache,
                gpu_argmax: self.gpu_argmax,
                flaw: self.flaw,
                stop: self.stop.clone(),
                logprobs: self.logprobs.is_some(),
                top_logprobs: self.logprobs.unwrap_or(0),
                frequency_penalty: self.frequency_penalty,
                presence_penalty: self.presence_penalty,
                repetition_penalty: self.repetition_penalty,
                repeat_last_n: self.repeat_last_n,
                logit_bias: logit_bias(&self.logit_bias)?,
                response_format: self.format.response_format()?,
                ..Default::default()
            })
        }
    }

    /// One JSON line per token: id, text, the next-token table, position, time (and logprobs).
    fn token_line(ev: &kvscope::TokenEvent) -> serde_json::Value {
        let mut v = json!({"id": ev.id, "text": ev.text, "top": ev.top, "pos": ev.pos, "ms": ev.ms});
        if let (Some(lp), Some(top)) = (ev.logprob, &ev.top_logprobs) {
            v["logprob"] = json!(lp);
            v["top_logprobs"] = json!(top);
        }
        v
    }

    /// Streams the continuation to stdout (or one JSON object per token, then the summary).
    fn generate(a: GenerateArgs) -> Result<()> {
        let mut engine = a.m.load(a.backend, a.context)?;
        let mut opts = a.options()?;
        let ids = match a.chat {
            true => ChatTurn::new(&engine.tokenizer, &ChatRequest::new(vec![ChatMessage::new("user", &a.prompt)]), &mut opts)?.ids,
            false => engine.tokenizer.encode(&a.prompt)?,
        };
        let mut out = std::io::stdout().lock();
        let summary = pollster::block_on(engine.generate(&ids, &opts, &mut |ev| {
            let _ = match a.json {
                true => writeln!(out, "{}", token_line(ev)),
                false => write!(out, "{}", ev.text),
            };
            let _ = out.flush();
            true
        }))?;
        if a.json {
            let mut s = serde_json::to_value(&summary).expect("summary serialises");
            if let Some(g) = engine.gpu() {
                s["adapter"] = json!(g.ctx.adapter_name());
                s["dispatches_per_token"] = json!(g.dispatches_per_token());
                s["counters"] = json!(g.counters);
            }
            println!("{}", json!({ "summary": s }));
        } else {
            println!("{}", summary.tail);
            eprintln!(
                "[{} prompt + {} generated tokens; prefill {:.1} tok/s, decode {:.2} tok/s; stop: {:?}; {}]",
                summary.prompt_tokens, summary.generated_tokens, summary.prefill_tps, summary.decode_tps, summary.stop, summary.backend
            );
            if let Some(p) = &summary.past_context {
                eprintln!("[{p}]");
            }
        }
        Ok(())
    }

    fn bench(a: BenchArgs) -> Result<()> {
        let longest = a.contexts.iter().copied().max().unwrap_or(0);
        let context = (a.prompt_tokens.max(longest) + a.gen_tokens + 2).next_multiple_of(256);
        let mut engine = a.m.load(a.backend, context)?;
        let o = kvscope::bench::BenchOptions {
            prompt_tokens: a.prompt_tokens,
            gen_tokens: a.gen_tokens,
            gpu_argmax: a.gpu_argmax,
            contexts: a.contexts,
            profile: a.profile,
            response_format: a.format.response_format()?,
        };
        let r = pollster::block_on(kvscope::bench::run(&mut engine, &o))?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&r).expect("json"));
        } else {
            print_bench(&r);
        }
        Ok(())
    }

    fn print_bench(r: &kvscope::bench::BenchReport) {
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        println!("{} on {}", r.model, r.adapter);
        println!("prefill ({} tokens, {} per submit)  {:>8.2} tok/s", r.prompt_tokens, r.prefill_chunk, r.prefill_tokens_per_s);
        println!(
            "prefill token by token             {:>8.2} tok/s   (batched is {:.2}×)",
            r.prefill_token_by_token_per_s, r.batched_over_token_by_token
        );
        println!("time to first token                {:>8.1} ms", r.ttft_ms);
        for d in &r.decode {
            println!(
                "decode at context {:>5}            {:>8.2} tok/s   ({:.1} ms/token, median {:.1}, {} steps)",
                d.context, d.tokens_per_s, d.ms_per_token, d.median_ms_per_token, d.steps
            );
        }
        if let Some(i) = &r.decode_interleaved {
            println!(
                "decode {} / decode {}, alternating  {:>6.2}   (GPU steps, median {:.1} and {:.1} ms)",
                i.long_context, i.short_context, i.long_over_short, i.long_median_ms, i.short_median_ms
            );
        }
        if let Some(x) = r.decode_1024_over_0 {
            println!("decode 1024 / decode 0             {:>8.2}   (median steps)", x);
        } else if let (Some(x), [first, .., last]) = (r.decode_longest_over_shortest, r.decode.as_slice()) {
            println!("decode {} / decode {}{:>width$.2}", last.context, first.context, x, width = 25);
        }
        println!(
            "per token: {:.0} dispatches, {:.2} submits, {:.2} maps, {:.0} bytes read back, {:.0} GPU objects created, {:.3} ms CPU encode{}",
            r.dispatches_per_token,
            r.submits_per_token,
            r.maps_per_token,
            r.readback_bytes_per_token,
            r.gpu_objects_created_per_token,
            r.encode_ms_per_token,
            if r.gpu_argmax { " (GPU argmax)" } else { "" }
        );
        println!(
            "GPU buffers {:.1} MiB = {:.3} × (weights {:.1} MiB + KV cache {:.1} MiB)",
            mib(r.gpu_buffer_bytes),
            r.gpu_bytes_over_weights_plus_kv,
            mib(r.weight_bytes),
            mib(r.kv_cache_bytes)
        );
        if let Some(g) = &r.grammar {
            println!(
                "grammar mask                       {:>8.3} ms/token  ({:.1}% of a step; {} steps; compiled in {:.1} ms, vocabulary set up in {:.0} ms)",
                g.mask_ms_per_token,
                100.0 * g.mask_share,
                g.steps,
                g.compile_ms,
                g.setup_ms
            );
            println!(
                "decode with grammar / without      {:>8.2}   (median steps {:.1} and {:.1} ms)",
                g.with_over_without, g.median_ms_per_token, g.plain_median_ms_per_token
            );
        }
        for p in r.profile.iter().flatten() {
            println!("\nprofile: {} (each dispatch alone, less {:.3} ms per submit)", p.what, p.submit_ms);
            println!("{:<24} {:>10} {:>10} {:>7}", "kind", "dispatches", "ms", "share");
            for row in &p.rows {
                println!("{:<24} {:>10} {:>10.2} {:>6.1}%", row.kind, row.dispatches, row.ms, 100.0 * row.ms / p.total_ms.max(1e-9));
            }
            println!("{:<24} {:>10} {:>10.2}", "total", p.rows.iter().map(|r| r.dispatches).sum::<usize>(), p.total_ms);
        }
    }

    fn kv_compare(a: KvCompareArgs) -> Result<()> {
        let policies = kvscope::core::kv_policy::KvPolicy::parse_list(&a.policies)?;
        let text = match (a.text, a.text_file) {
            (Some(t), _) => t,
            (None, Some(f)) => std::fs::read_to_string(&f).map_err(|e| Error::Io(format!("cannot read text `{}`: {e}", f.display())))?,
            (None, None) => unreachable!("clap requires --text or --text-file"),
        };
        let bytes = read(&a.model)?;
        let opts = LoadOptions { backend: a.backend, context: a.context, ..Default::default() };
        let tok = Tokenizer::from_gguf(&Gguf::parse(&bytes)?)?;
        let ids = tok.encode(&text)?;
        let r = pollster::block_on(kvscope::engine::kv_lab::kv_compare(&bytes, &opts, &ids, &policies))?;
        println!(
            "{} positions; free greedy generation from the first {} tokens, {} steps",
            r.positions,
            kvscope::engine::kv_lab::PREFIX,
            r.free_steps
        );
        println!(
            "{:<20} {:>12} {:>10} {:>8} {:>10} {:>10} {:>11}",
            "policy", "cache bytes", "bytes/pos", "top-1", "mean KL", "perplexity", "divergence"
        );
        for p in &r.policies {
            let div = p.first_divergence.map_or("none".to_string(), |d| d.to_string());
            println!(
                "{:<20} {:>12} {:>10} {:>7.1}% {:>10.5} {:>10.3} {:>11}",
                p.name,
                p.cache_bytes,
                p.bytes_per_position,
                100.0 * p.top1_agreement,
                p.mean_kl,
                p.perplexity,
                div
            );
        }
        if a.json {
            println!("{}", serde_json::to_string(&r).expect("json"));
        }
        Ok(())
    }

    fn logits(a: LogitsArgs) -> Result<()> {
        let mut engine = a.m.load(a.backend, kvscope::DEFAULT_CONTEXT)?;
        let ids: Vec<u32> = match (a.prompt, a.ids) {
            (Some(p), _) => engine.tokenizer.encode(&p)?,
            (None, Some(s)) => s
                .split(',')
                .map(|t| t.trim().parse::<u32>().map_err(|_| Error::Option(format!("`{t}` in --ids is not a token id"))))
                .collect::<Result<_>>()?,
            (None, None) => unreachable!("clap requires one of --prompt and --ids"),
        };
        let logits = pollster::block_on(engine.logits_for(&ids))?;
        let bytes: Vec<u8> = logits.iter().flat_map(|v| v.to_le_bytes()).collect();
        let out = &a.out;
        std::fs::write(out, bytes).map_err(|e| Error::Io(format!("cannot write `{}`: {e}", out.display())))?;
        eprintln!("wrote {} × {} logits to {}", ids.len(), engine.cfg.vocab_size, out.display());
        Ok(())
    }

    /// Lists the header (metadata, tensors, and the config and memory where the architecture is
    /// known), then runs every check a load would (`Engine::check`): a model that cannot load is
    /// said so at the end, and the command fails with the reason.
    /// `kvscope inspect` from the header alone: every check a load would make, on the GPU
    /// backend also against the device's limits and what it can allocate (where there is one).
    fn inspect(g: &Gguf, json: bool, opts: &LoadOptions) -> Result<()> {
        let cfg = Config::from_gguf(g).ok();
        let verdict = match (Engine::check(g, opts), &cfg) {
            (Ok(_), Some(c)) if opts.backend == BackendKind::Gpu => check_device(g, c, opts),
            (v, _) => v.map(|_| ()),
        };
        let out = if json { inspect_json(g, cfg.as_ref(), opts, &verdict) } else { inspect_text(g, cfg.as_ref(), opts, &verdict) };
        print_all(&out)?;
        verdict.map_err(|e| Error::Option(format!("this model cannot load: {e}")))
    }

    /// The model against this machine's GPU (`gpu::check_device`, `check_allocation`); nothing
    /// to check without one.
    fn check_device(g: &Gguf, cfg: &Config, opts: &LoadOptions) -> Result<()> {
        match pollster::block_on(kvscope::backend::gpu::GpuContext::with_options(opts.gpu)) {
            Ok(ctx) => {
                let need = kvscope::backend::gpu::check_device(&ctx, g, cfg, opts.context, opts.policy())?;
                pollster::block_on(kvscope::backend::gpu::check_allocation(&ctx, &need, opts.context, opts.policy()))
            }
            Err(Error::NoAdapter(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn inspect_json(g: &Gguf, cfg: Option<&Config>, opts: &LoadOptions, verdict: &Result<()>) -> String {
        let tensors: Vec<_> =
            g.tensors.iter().map(|t| json!({"name": t.name, "type": t.ty.name(), "shape": t.dims, "bytes": t.size})).collect();
        let meta: serde_json::Map<String, serde_json::Value> = g.metadata.iter().map(|(k, v)| (k.clone(), json!(v.summary()))).collect();
        let error = verdict.as_ref().err().map(|e| json!({"kind": e.kind().name(), "message": e.to_string()}));
        let v = json!({
            "gguf_version": g.version,
            "alignment": g.alignment,
            "data_offset": g.data_offset,
            "loadable": verdict.is_ok(),
            "error": error,
            "model": cfg.map(|c| ModelFacts::new(g, c, opts.context, opts.kv)),
            "metadata": meta,
            "tensors": tensors,
        });
        serde_json::to_string_pretty(&v).expect("json") + "\n"
    }

    #[allow(unused_must_use)] // writeln! into a String cannot fail
    fn inspect_text(g: &Gguf, cfg: Option<&Config>, opts: &LoadOptions, verdict: &Result<()>) -> String {
        use std::fmt::Write as _;
        let mut o = String::new();
        let name = cfg.map_or_else(|| g.str("general.name").unwrap_or("unnamed model").to_string(), |c| c.name.clone());
        writeln!(o, "{name} — GGUF v{}, {} tensors, {} metadata keys", g.version, g.tensors.len(), g.metadata.len());
        if let Some(cfg) = cfg {
            describe_config(&mut o, cfg);
        }
        writeln!(o, "\nmetadata:");
        for (k, v) in &g.metadata {
            writeln!(o, "  {k:<40} {}", v.summary());
        }
        writeln!(o, "\n{:<28} {:<6} {:>16} {:>12}", "tensor", "type", "shape", "bytes");
        for t in &g.tensors {
            let shape = t.dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("×");
            writeln!(o, "{:<28} {:<6} {:>16} {:>12}", t.name, t.ty.name(), shape, t.size);
        }
        if let Some(cfg) = cfg {
            let f = ModelFacts::new(g, cfg, opts.context, opts.kv);
            let mib = |b: u64| b as f64 / (1 << 20) as f64;
            writeln!(o, "\nmemory at context {}:", f.context);
            writeln!(o, "  weights   {:>9.1} MiB", mib(f.weights_bytes));
            writeln!(
                o,
                "  KV cache  {:>9.1} MiB  ({:?}: {} positions × {} layers × 2 (K, V) × {} kv heads × {} dims × {} bytes)",
                mib(f.kv_cache_bytes),
                f.kv_type,
                f.context,
                cfg.n_layers,
                cfg.n_kv_heads,
                cfg.head_dim,
                f.kv_value_bytes
            );
            writeln!(o, "  total     {:>9.1} MiB", mib(f.total_bytes));
        }
        match verdict {
            Ok(()) => writeln!(o, "\nloads on the {} backend at context {}.", opts.backend.name(), opts.context),
            Err(e) => writeln!(o, "\nCANNOT LOAD on the {} backend: {e}", opts.backend.name()),
        };
        o
    }

    #[allow(unused_must_use)] // writeln! into a String cannot fail
    fn describe_config(o: &mut String, cfg: &Config) {
        use std::fmt::Write as _;
        writeln!(o, "architecture: {}", cfg.arch.name());
        writeln!(
            o,
            "dim {}  ffn {}  layers {}  heads {} (kv {}, head dim {})  vocab {}  trained context {}",
            cfg.dim, cfg.ffn_dim, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.vocab_size, cfg.train_context
        );
        let window = match cfg.sliding_window {
            0 => String::new(),
            w => format!("  sliding window {w} (local rope base {}, every {}th layer full)", cfg.rope_local.base, cfg.swa_pattern),
        };
        let output = if cfg.tied_output { "tied to token_embd" } else { "output.weight" };
        writeln!(o, "rms eps {:e}  rope base {}{window}  output {output}", cfg.rms_eps, cfg.rope.base);
    }

    /// Writes to stdout; a closed pipe (`| head`) ends the output quietly.
    fn print_all(s: &str) -> Result<()> {
        let _ = std::io::stdout().lock().write_all(s.as_bytes());
        Ok(())
    }
}
