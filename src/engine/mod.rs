//! The generation API, one async code path for native (pollster) and web (wasm-bindgen-futures):
//! load, reset, feed tokens, step, generate with a per-token callback. The engine keeps the
//! cache's bookkeeping (which tokens are cached, what the last pass read back) and runs the
//! model through `backend::Backend`, whichever backend that is.
//!
//! Glossary: cached, the tokens fed, in position order (their K and V are in the cache, but for
//! those an evicting policy dropped); pending, a token chosen but not yet fed (at a full
//! context); feed, running tokens through the model so that their K and V are appended; step, one
//! decode step (pick a token, feed it back).
//!
//! Past the context: under a cache policy that evicts (on the CPU backends,
//! `Backend::passes_context`) the text runs on past the context T the engine was loaded with, the
//! policy holding a fixed number of positions; other policies stop there
//! (`StopReason::ContextFull`, `Error::ContextFull`). Once the text is past T, attention weights
//! cover its last T positions (`attention_weights`), and the summary says which policy made it
//! possible (`PastContext`).

mod chat;
mod facts;
pub mod kv_lab;
mod options;
mod pick;
mod progress;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub use chat::ChatTurn;
pub use facts::ModelFacts;
pub use options::{
    GenerateOptions, LoadOptions, PastContext, StopReason, Summary, TokenEvent, MAX_STOP, MAX_TOKENS, MAX_TOP_LOGPROBS, REPEAT_LAST_N,
    REPORT_TOP,
};

use crate::backend::{Backend, BackendKind, BackendOptions, Readout, Want, TOP_K};
use crate::clock::now_ms;
use crate::core::config::{Config, KvType};
use crate::core::flaw::{Flaw, FlawRows};
use crate::core::gguf::{read_header, ByteSource, Gguf};
use crate::core::grammar::Grammars;
use crate::core::kv_policy::{Eviction, KvPolicy};
use crate::core::stop_strings::TextGate;
use crate::core::tokenizer::Tokenizer;
use crate::error::{Error, Result};
use pick::Picker;
use progress::Progress;

pub struct Engine {
    pub cfg: Config,
    /// The model's shapes and what it needs (as `inspect` reports them).
    pub facts: ModelFacts,
    /// Shared so that a caller can render tokens while the engine is busy generating.
    pub tokenizer: Arc<Tokenizer>,
    backend: Backend,
    /// KV-cache capacity in positions.
    pub context: usize,
    /// Token ids fed, in position order (past T under an evicting policy, which holds fewer).
    cached: Vec<u32>,
    /// A token chosen but not yet run through the model; the next feed starts with it.
    pending: Option<u32>,
    /// What the last feed read back from its last position.
    out: Readout,
    /// What feeds read back while a generation runs (`Want::Logits` otherwise).
    want: Want,
    /// Attention weights read back after the last step, when asked for: one layer's, all layers',
    /// and the prompt positions'.
    attention: Option<Vec<f32>>,
    attention_layers: Option<Vec<f32>>,
    prompt_attention: Option<Vec<Vec<f32>>>,
    /// Cache rows the last fed query attended over (the cached positions, except under
    /// `Flaw::SameRow`; at most T: past the context, the last T positions).
    attended: usize,
    /// The rows a flawed generation wrote.
    flawed: FlawRows,
    /// The KV cache's policy (`core::kv_policy`).
    pub policy: KvPolicy,
    /// Positions per forward call while prefilling.
    pub prefill_chunk: usize,
    /// Set from outside (another thread, or the page's Stop button) to end generation after the
    /// current step or prefill chunk.
    stop: Arc<AtomicBool>,
    /// The grammar compiler over this model's vocabulary, built on first use.
    grammars: Option<Grammars>,
}

impl Engine {
    pub async fn load(mut bytes: &[u8], opts: LoadOptions) -> Result<Self> {
        Self::load_from(&mut bytes, opts).await
    }

    /// Loads from any byte source: the header is parsed first, then each tensor is read and
    /// uploaded in turn.
    pub async fn load_from(src: &mut dyn ByteSource, opts: LoadOptions) -> Result<Self> {
        Self::load_reporting(src, opts, &mut |_| {}).await
    }

    /// `load_from`, telling `on_facts` what the header says (name, sizes, memory) once it has
    /// passed the checks and before the weights are read.
    pub async fn load_reporting(src: &mut dyn ByteSource, opts: LoadOptions, on_facts: &mut dyn FnMut(&ModelFacts)) -> Result<Self> {
        let header = read_header(src)?;
        let g = Gguf::parse_prefix(&header, src.len())?;
        // The kernels' own checks run in the backend's load, after the device's limits (the
        // figures a user can act on first).
        let (cfg, tokenizer) = Self::check_model(&g, &opts)?;
        on_facts(&ModelFacts::new(&g, &cfg, opts.context, opts.kv));
        let bo = BackendOptions { kind: opts.backend, context: opts.context, kv: opts.kv, eviction: opts.eviction, gpu: opts.gpu };
        let backend = Backend::load(&g, &cfg, bo, src).await?;
        Ok(Engine {
            facts: ModelFacts::new(&g, &cfg, opts.context, opts.kv),
            out: Readout::new(cfg.vocab_size),
            want: Want::Logits,
            cached: Vec::with_capacity(opts.context),
            pending: None,
            attention: None,
            attention_layers: None,
            prompt_attention: None,
            attended: 0,
            flawed: FlawRows::default(),
            policy: opts.policy(),
            context: opts.context,
            prefill_chunk: backend.chunk(),
            cfg,
            tokenizer: Arc::new(tokenizer),
            backend,
            stop: Arc::new(AtomicBool::new(false)),
            grammars: None,
        })
    }

    /// Every check a load runs short of reading the weights, from the header alone: the
    /// architecture and its tensors, the vocabulary and chat template, the context, and the
    /// shapes the chosen backend's kernels take. `inspect` and the page's model plan call it
    /// too, so a model they pass is one that loads (device limits aside).
    pub fn check(g: &Gguf, opts: &LoadOptions) -> Result<(Config, Tokenizer)> {
        let (cfg, tokenizer) = Self::check_model(g, opts)?;
        if opts.backend == BackendKind::Gpu {
            crate::backend::gpu::model::check(g, &cfg, opts.context)?;
        }
        Ok((cfg, tokenizer))
    }

    /// The checks of every backend: the config, the tokenizer, the context.
    fn check_model(g: &Gguf, opts: &LoadOptions) -> Result<(Config, Tokenizer)> {
        crate::core::split::check_whole(g)?;
        let cfg = Config::from_gguf(g)?;
        let tokenizer = Tokenizer::from_gguf(g)?;
        if opts.context == 0 || opts.context > 1 << 20 {
            return Err(Error::Option(format!("context length {} is outside 1..=1048576", opts.context)));
        }
        crate::backend::check_policy(opts.backend, opts.policy(), &cfg)?;
        let wasm = cfg!(target_arch = "wasm32").then_some(crate::backend::WASM_MEMORY);
        crate::backend::check_memory(opts.backend, g, &cfg, opts.context, opts.policy(), wasm)?;
        Ok((cfg, tokenizer))
    }

    /// A handle that stops a running `generate` when set (it is cleared when generation starts).
    pub fn stop_handle(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// "gpu: ADAPTER", "cpu" or "reference".
    pub fn backend(&self) -> String {
        self.backend.name()
    }

    /// Bytes of weights and of KV cache the model holds (GPU buffers, or CPU memory).
    pub fn memory(&self) -> (u64, u64) {
        self.backend.memory()
    }

    /// How the cache stores K and V.
    pub fn kv_type(&self) -> KvType {
        self.backend.kv_type()
    }

    /// The positions layer `l`'s cache holds, ascending, under an evicting policy (None: every
    /// cached position).
    pub fn held_positions(&self, l: usize) -> Option<&[usize]> {
        self.backend.held_positions(l)
    }

    /// The GPU model, for what only it has (counters, the device).
    pub fn gpu(&self) -> Option<&crate::backend::gpu::GpuModel> {
        self.backend.gpu()
    }

    fn gpu_mut(&mut self, what: &str) -> Result<&mut crate::backend::gpu::GpuModel> {
        self.backend.gpu_mut().ok_or_else(|| Error::Option(format!("{what} is for the GPU backend")))
    }

    /// Where the GPU time goes (`crate::backend::gpu::profile`): one decode step at the current
    /// position and one whole prefill chunk ending there (the last cached positions, rewritten
    /// with their own tokens: its attention spans the whole cache). Needs at least two cached
    /// positions; the GPU backend only.
    pub async fn profile(&mut self) -> Result<Vec<crate::backend::gpu::Profile>> {
        let (at, context) = (self.cached.len(), self.context);
        let m = self.gpu_mut("profiling the dispatches")?;
        let chunk = m.chunk().min(at);
        if chunk < 2 || at >= context {
            return Err(Error::Option(format!("profiling needs 2..{context} cached positions and room for one more")));
        }
        Ok(vec![m.profile(at, 1).await?, m.profile(at - chunk, chunk).await?])
    }

    /// GPU decode steps (forward pass and GPU argmax) at `positions`, in order, each timed in ms:
    /// a step at position p attends over cache rows 0..=p whatever they hold, so steps at a short
    /// and a long context can alternate under the same load on a noisy machine. The rows stepped
    /// at are overwritten, so the cache is emptied afterwards. The GPU backend only.
    pub async fn time_steps(&mut self, positions: &[usize]) -> Result<Vec<f64>> {
        if let Some(p) = positions.iter().find(|&&p| p >= self.context) {
            return Err(Error::Option(format!("position {p} is past the context of {}", self.context)));
        }
        let mut out = Readout::new(self.cfg.vocab_size);
        let m = self.gpu_mut("timing single steps")?;
        let mut times = Vec::with_capacity(positions.len());
        for &p in positions {
            let t0 = now_ms();
            let id = out.argmax.unwrap_or(0);
            m.forward(&[id], p, Want::Argmax, Flaw::None, &mut out).await?;
            times.push(now_ms() - t0);
        }
        self.reset();
        Ok(times)
    }

    /// Empties the cache (the buffers stay; rows are overwritten as positions are reused).
    pub fn reset(&mut self) {
        self.rewind(0);
    }

    /// Forgets every cached position from `n` on (and any pending token): the rows stay allocated
    /// and are overwritten as positions are reused.
    pub fn rewind(&mut self, n: usize) {
        self.cached.truncate(n);
        self.pending = None;
        self.out.clear();
        self.flawed.rewind(n);
    }

    /// Keeps the longest cached prefix of `ids` and forgets the rest, so that only `ids[n..]` has
    /// to be fed (a new chat turn after the previous ones). Returns n, always below `ids.len()`
    /// so that the last id is fed again and its logits are fresh.
    pub fn reuse_prefix(&mut self, ids: &[u32]) -> usize {
        let seq = self.cached.iter().chain(self.pending.iter());
        let common = seq.zip(ids).take_while(|(a, b)| a == b).count().min(ids.len().saturating_sub(1));
        // Rows a flawed generation wrote are not reused, nor a cache that evicts (what it holds
        // of the prefix depends on what came after).
        let mut common = self.flawed.reusable(common);
        if self.policy.eviction != Eviction::None {
            common = 0;
        }
        // A sliding-window layer's ring holds the last W + B positions: going back more than B
        // loses rows of the window before `common`, so the whole sequence is fed again.
        if self.cfg.sliding_window > 0 && self.cached.len().saturating_sub(common) > crate::core::config::PREFILL_CHUNK {
            common = 0;
        }
        if common <= self.cached.len() {
            self.rewind(common);
        }
        common
    }

    /// Whether the text may run past the context (the cache policy evicts, on the CPU).
    fn passes_context(&self) -> bool {
        self.backend.passes_context()
    }

    /// Some while the text runs past the context T: the policy that made it possible.
    pub fn past_context(&self) -> Option<PastContext> {
        (self.position() > self.context).then(|| PastContext {
            policy: self.policy.name(),
            context: self.context,
            held: self.policy.held(self.position()),
        })
    }

    /// Positions fed so far (past the context, more than the cache holds).
    pub fn position(&self) -> usize {
        self.cached.len()
    }

    pub fn cached_tokens(&self) -> &[u32] {
        &self.cached
    }

    /// The logits after the last fed position (stale when the last feed read back only a pick).
    pub fn logits(&self) -> &[f32] {
        &self.out.logits
    }

    /// Runs `ids` (after any pending token) through the model, appending their K and V to the
    /// cache, and leaves the logits after the last one in `logits()`.
    pub async fn feed(&mut self, ids: &[u32]) -> Result<()> {
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= self.cfg.vocab_size) {
            return Err(Error::BadToken { id: bad, vocab: self.cfg.vocab_size });
        }
        let extra = self.pending.is_some() as usize;
        let total = self.cached.len() + extra + ids.len();
        if total > self.context && !self.passes_context() {
            return Err(if self.cached.is_empty() {
                Error::PromptTooLong { tokens: ids.len() + extra, capacity: self.context }
            } else {
                Error::ContextFull { used: self.cached.len(), capacity: self.context }
            });
        }
        if let Some(p) = self.pending.take() {
            self.run(&[p], Flaw::None).await?;
        }
        self.run(ids, Flaw::None).await
    }

    /// Runs `ids` at the next cache rows (with `Flaw::SameRow`, at its one row) and appends them
    /// to `cached`. Positions go in chunks; between chunks a stop request is honoured, leaving
    /// the chunks done so far in the cache (and nothing fresh read back: `Error::Stopped`).
    async fn run(&mut self, ids: &[u32], flaw: Flaw) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let start = self.flawed.row(flaw, self.cached.len());
        let n_chunks = ids.len().div_ceil(self.prefill_chunk);
        for (c, part) in ids.chunks(self.prefill_chunk).enumerate() {
            let last = c + 1 == n_chunks;
            let at = start + c * self.prefill_chunk;
            let want = if last { self.want } else { Want::Nothing };
            self.backend.forward(part, at, want, flaw, &mut self.out).await?;
            self.cached.extend_from_slice(part);
            self.attended = (at + part.len()).min(self.context);
            self.backend.after_chunk(last).await?;
            if !last && self.stop_requested() {
                return Err(Error::Stopped);
            }
        }
        Ok(())
    }

    /// Reads the attention weights of the last step that `opts` asks for.
    async fn observe(&mut self, opts: &GenerateOptions) -> Result<()> {
        self.attention = match opts.attention_layer {
            Some(l) => Some(self.attention_weights(l).await?),
            None => None,
        };
        self.attention_layers = match opts.attention_all_layers {
            true => Some(self.backend.attention_weights(0..self.cfg.n_layers, self.attended).await?),
            false => None,
        };
        Ok(())
    }

    /// Layer `l`'s attention weights for the last fed position p: [h × n], n = positions attended
    /// (p + 1, or past the context T the last T: index i is position p + 1 − n + i).
    pub async fn attention_weights(&self, l: usize) -> Result<Vec<f32>> {
        if l >= self.cfg.n_layers {
            return Err(Error::Option(format!("layer {l} does not exist (the model has {})", self.cfg.n_layers)));
        }
        self.backend.attention_weights(l..l + 1, self.attended).await
    }

    /// Feeds `prompt` one token at a time, keeping layer `l`'s weights for each position's query.
    async fn feed_observed(&mut self, prompt: &[u32], l: usize) -> Result<()> {
        let mut rows = Vec::with_capacity(prompt.len());
        for (i, &id) in prompt.iter().enumerate() {
            if i > 0 && self.stop_requested() {
                return Err(Error::Stopped);
            }
            self.feed(&[id]).await?;
            rows.push(self.attention_weights(l).await?);
        }
        self.prompt_attention = Some(rows);
        Ok(())
    }

    /// Teacher forcing: the logits after every position of `ids`, [n × V] row-major.
    pub async fn logits_for(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(ids.len() * self.cfg.vocab_size);
        for &id in ids {
            self.feed(&[id]).await?;
            out.extend_from_slice(&self.out.logits);
        }
        Ok(out)
    }

    /// Feeds `prompt`, then picks tokens one at a time until EOS, a stop string, the grammar's
    /// end, `max_tokens`, a full context, or `on_token` returning false. Each chosen token is
    /// fed back right after it is reported, so the cache grows by one row per step and, when
    /// this returns, holds every token and the logits predict the next one (except after EOS, a
    /// stop string or the grammar's end, whose last token is not fed, and at a full context,
    /// where the last token waits as pending). Options that cannot be honoured are refused
    /// before anything runs.
    pub async fn generate(
        &mut self,
        prompt: &[u32],
        opts: &GenerateOptions,
        on_token: &mut dyn FnMut(&TokenEvent) -> bool,
    ) -> Result<Summary> {
        if prompt.is_empty() && self.cached.is_empty() && self.pending.is_none() {
            return Err(Error::EmptyPrompt);
        }
        if opts.no_cache && opts.flaw != Flaw::None {
            return Err(Error::Option("a flaw acts on the KV cache, so it cannot be combined with decoding without the cache".into()));
        }
        if opts.flaw != Flaw::None && self.policy.eviction != Eviction::None {
            let p = self.policy.name();
            return Err(Error::Option(format!("a flaw acts on a cache that holds every position; KV-cache policy `{p}` evicts positions")));
        }
        let mut picker = self.picker(opts)?;
        self.stop.store(false, Ordering::Relaxed);
        if prompt.is_empty() && self.pending.is_none() && !self.out.has_logits {
            // The last feed read back only a pick: run the last position again for its logits.
            let n = self.cached.len();
            let last = self.cached[n - 1];
            self.rewind(n - 1);
            self.feed(&[last]).await?;
        }
        // Greedy with `gpu_argmax`: the backend picks (and makes the table, where it keeps as
        // many rows as are asked for). The logit processors and logprobs need the whole row
        // (`core::logits`), so with any of them the logits are read back all the same.
        let backend_picks = opts.gpu_argmax && opts.sampler.is_greedy() && !opts.changes_logits() && !opts.logprobs;
        self.want = match backend_picks {
            true if (1..=TOP_K).contains(&opts.report_top) => Want::Top,
            true => Want::Argmax,
            false => Want::Logits,
        };
        if self.passes_context() {
            // `cached` grows past T: room for this generation's tokens (at most 2^20 of them,
            // 4 MiB) before the decode loop, which allocates nothing.
            self.cached.reserve(prompt.len() + opts.max_tokens.min(crate::core::kv_policy::MAX_HELD) + 1);
        }
        let r = self.generate_inner(prompt, opts, &mut picker, on_token).await;
        self.want = Want::Logits;
        r
    }

    /// The generation's picker, once `opts` are checked and its grammar (if any) compiled.
    fn picker(&mut self, opts: &GenerateOptions) -> Result<Picker> {
        let vocab = self.cfg.vocab_size;
        opts.check(vocab)?;
        let constraint = match opts.grammar() {
            Some((g, param)) => Some(self.grammars()?.matcher(&g, param)?),
            None => None,
        };
        Picker::new(opts, constraint, vocab)
    }

    /// The grammar compiler over this model's vocabulary (built once, on first use).
    pub fn grammars(&mut self) -> Result<&Grammars> {
        if self.grammars.is_none() {
            self.grammars = Some(Grammars::new(self.tokenizer.clone(), self.cfg.vocab_size)?);
        }
        Ok(self.grammars.as_ref().expect("built above"))
    }

    async fn generate_inner(
        &mut self,
        prompt: &[u32],
        opts: &GenerateOptions,
        picker: &mut Picker,
        on_token: &mut dyn FnMut(&TokenEvent) -> bool,
    ) -> Result<Summary> {
        let mut run = Progress::new(prompt.len(), TextGate::new(&opts.stop, &opts.hold));
        let fed = match opts.attention_layer {
            Some(l) if opts.attention_prompt => self.feed_observed(prompt, l).await,
            _ => self.feed(prompt).await,
        };
        let stop = match fed {
            // Stopped during the prefill: the chunks done so far stay cached.
            Err(Error::Stopped) => StopReason::Stopped,
            r => {
                r?;
                self.observe(opts).await?;
                run.prefilled();
                self.decode(opts, picker, &mut run, on_token).await?
            }
        };
        Ok(run.summary(stop, self.backend(), picker.grammar_ms(), self.past_context()))
    }

    /// Picks, reports and feeds back one token at a time, until a stop condition.
    async fn decode(
        &mut self,
        opts: &GenerateOptions,
        picker: &mut Picker,
        run: &mut Progress,
        on_token: &mut dyn FnMut(&TokenEvent) -> bool,
    ) -> Result<StopReason> {
        loop {
            if run.generated >= opts.max_tokens {
                return Ok(StopReason::MaxTokens);
            }
            let window = &self.cached[self.cached.len().saturating_sub(opts.repeat_last_n)..];
            let p = picker.pick(&self.out, window, opts)?;
            picker.accept(p.id)?;
            let stop_token = self.tokenizer.is_stop(p.id);
            let piece = if stop_token { String::new() } else { run.utf8.push(self.tokenizer.token_bytes(p.id)) };
            let released = run.release(&piece);
            let ms = run.token(&released.text);
            let go_on = on_token(&TokenEvent {
                id: p.id,
                text: released.text,
                top: p.top,
                logprob: p.logprob,
                top_logprobs: p.top_logprobs,
                pos: self.position(),
                ms,
                attention: self.attention.take(),
                attention_layers: self.attention_layers.take(),
                prompt_attention: self.prompt_attention.take(),
            });
            match (stop_token, released.stopped, picker.ended()) {
                (true, _, _) => return Ok(StopReason::Eos),
                (_, true, _) => return Ok(StopReason::StopString),
                (_, _, true) => return Ok(StopReason::GrammarEnd),
                _ => {}
            }
            if self.position() >= self.context && !self.passes_context() {
                self.pending = Some(p.id);
                return Ok(StopReason::ContextFull);
            }
            run.step_started();
            match self.feed_back(p.id, opts).await {
                Err(Error::Stopped) => return Ok(StopReason::Stopped),
                r => r?,
            }
            self.observe(opts).await?;
            if !go_on || self.stop_requested() {
                return Ok(StopReason::Stopped);
            }
        }
    }

    /// Runs the chosen token through the model: its K and V go into the next cache row, or
    /// (`no_cache`, the naive way) the cache is forgotten and the whole sequence runs again, or
    /// (a flaw) they go wrong in the flaw's way.
    async fn feed_back(&mut self, id: u32, opts: &GenerateOptions) -> Result<()> {
        if opts.no_cache {
            let mut seq = std::mem::take(&mut self.cached);
            seq.push(id);
            self.rewind(0);
            return self.feed(&seq).await;
        }
        if opts.flaw == Flaw::None {
            return self.feed(&[id]).await;
        }
        let at = self.position();
        if self.flawed.taint(opts.flaw, at) {
            // The rows the flaw leaves unwritten read as zeros, not as whatever an earlier
            // generation left there, so a flawed run does not depend on what ran before it.
            self.backend.clear_rows(at).await?;
        }
        self.run(&[id], opts.flaw).await
    }
}
