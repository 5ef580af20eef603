//! The generation API, one async code path for native (pollster) and web (wasm-bindgen-futures):
//! load, reset, feed tokens, step, generate with a per-token callback.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::Serialize;

use crate::clock::now_ms;
use crate::config::{Config, KvType};
use crate::cpu::{CpuModel, Weights};
use crate::error::{Error, Result};
use crate::flaw::Flaw;
use crate::gguf::{read_header, ByteSource, Gguf};
use crate::gpu::GpuOptions;
use crate::model::{GpuModel, Readback};
use crate::sampler::{top_k, Sampler, SamplerConfig, TokenProb};
use crate::tokenizer::{Tokenizer, Utf8Stream};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// WGSL kernels on WebGPU / Vulkan / Metal / DX12.
    Gpu,
    /// The CPU backend: weights kept in their GGUF blocks (memory ≈ the file), SIMD dot products
    /// on the fly, batched prefill.
    Cpu,
    /// The exact f32 forward pass (weights expanded to f32): the oracle the other two are tested
    /// against.
    Reference,
}

impl Backend {
    pub const ALL: [Backend; 3] = [Backend::Gpu, Backend::Cpu, Backend::Reference];

    pub fn name(self) -> &'static str {
        match self {
            Backend::Gpu => "gpu",
            Backend::Cpu => "cpu",
            Backend::Reference => "reference",
        }
    }
}

impl std::str::FromStr for Backend {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Backend::ALL.into_iter().find(|b| b.name() == s).ok_or_else(|| Error::Option(format!("unknown backend `{s}` (use gpu, cpu or reference)")))
    }
}

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub backend: Backend,
    /// KV-cache capacity in positions.
    pub context: usize,
    /// Optional device features the GPU kernels may use.
    pub gpu: GpuOptions,
    /// How K and V are kept in the cache: f32, or f16 (half the memory and bandwidth; values
    /// rounded to nearest-even f16 on both backends).
    pub kv: KvType,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { backend: Backend::Gpu, context: crate::DEFAULT_CONTEXT, gpu: GpuOptions::default(), kv: KvType::F32 }
    }
}

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    pub sampler: SamplerConfig,
    /// Rows of the next-token table reported with each token.
    pub report_top: usize,
    /// Read back this layer's attention weights after every step (for the attention view; off
    /// by default so that decoding does no extra readback).
    pub attention_layer: Option<usize>,
    /// Read back every layer's attention weights for the newest query after every step (the
    /// overview of layers × heads).
    pub attention_all_layers: bool,
    /// With `attention_layer`: prefill the prompt one token at a time and report that layer's
    /// weights for each prompt position's query too (the rows of the attention matrix that a
    /// batched prefill does not keep).
    pub attention_prompt: bool,
    /// Decode without the cache: re-run the whole sequence at every step (for comparison).
    pub no_cache: bool,
    /// Greedy only: pick the argmax on the GPU and read back 8 bytes instead of the logits row;
    /// with a `report_top` of at most `ops::TOP_K`, the next-token table is made on the GPU too
    /// (136 bytes read back), a larger one is left empty.
    pub gpu_argmax: bool,
    /// Feed each generated token back through a deliberately broken cache (teaching; see
    /// `crate::flaw`). The rows the flaw wrote are then never reused (a next chat turn keeps only
    /// the rows before them).
    pub flaw: Flaw,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: 64,
            sampler: SamplerConfig::default(),
            report_top: 5,
            attention_layer: None,
            attention_all_layers: false,
            attention_prompt: false,
            no_cache: false,
            gpu_argmax: false,
            flaw: Flaw::None,
        }
    }
}

/// One generated token, as the UI and `--json` see it.
#[derive(Debug, Clone, Serialize)]
pub struct TokenEvent {
    pub id: u32,
    /// The text this token completes (empty while a UTF-8 character is still split).
    pub text: String,
    /// The most probable next tokens under the logits this token was picked from.
    pub top: Vec<TokenProb>,
    /// Position of the token in the sequence; the cache holds rows 0..pos when it is reported,
    /// and the token's K and V go into row pos when it is fed back.
    pub pos: usize,
    /// Milliseconds of the step that produced this token (forward pass + pick); for the first
    /// token, the pick after the prefill (the prefill's time is the summary's `prefill_ms`).
    pub ms: f64,
    /// With `attention_layer`: that layer's attention weights for the query that produced this
    /// token, [h × pos] row-major (each row sums to 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attention: Option<Vec<f32>>,
    /// With `attention_all_layers`: every layer's weights for that query, [L × h × pos].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attention_layers: Option<Vec<f32>>,
    /// First token of a generation with `attention_prompt`: for each prompt position i fed in
    /// this call, `attention_layer`'s weights of its query, [h × (start + i + 1)].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_attention: Option<Vec<Vec<f32>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    Eos,
    MaxTokens,
    ContextFull,
    Stopped,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub ttft_ms: f64,
    pub prefill_ms: f64,
    pub prefill_tps: f64,
    pub decode_ms: f64,
    pub decode_tps: f64,
    pub stop: StopReason,
    pub backend: String,
    pub text: String,
}

enum Model {
    Cpu(Box<CpuModel>),
    Gpu(Box<GpuModel>),
}

pub struct Engine {
    pub cfg: Config,
    /// Shared so that a caller can render tokens while the engine is busy generating.
    pub tokenizer: std::sync::Arc<Tokenizer>,
    model: Model,
    /// KV-cache capacity in positions.
    pub context: usize,
    /// Token ids whose K and V are in the cache, in position order.
    cached: Vec<u32>,
    /// A token chosen but not yet run through the model; the next feed starts with it.
    pending: Option<u32>,
    /// While set (by `generate` with `gpu_argmax`), feeds read back only the GPU's argmax, into
    /// `gpu_pick`, and `logits` is not updated.
    argmax_only: bool,
    /// With `argmax_only`: read back the GPU's next-token table (`ops::TOP_K` entries, the argmax
    /// first) into `gpu_top` in place of the argmax alone.
    top_on_gpu: bool,
    gpu_top: Vec<TokenProb>,
    gpu_pick: Option<(u32, f32)>,
    /// `logits` is older than the last fed position (that feed read back only the argmax).
    logits_stale: bool,
    /// [V] logits after the last fed position.
    logits: Vec<f32>,
    /// Attention weights read back after the last step, when asked for: one layer's, all layers',
    /// and the prompt positions'.
    attention: Option<Vec<f32>>,
    attention_layers: Option<Vec<f32>>,
    prompt_attention: Option<Vec<Vec<f32>>>,
    /// Cache rows the last fed query attended over (the cached positions, except under
    /// `Flaw::SameRow`).
    attended: usize,
    /// The first cache row a flawed generation has fed: from there on the rows no longer hold
    /// the K and V of `cached` (the prompt's rows before it are still right).
    tainted_from: Option<usize>,
    /// With `Flaw::SameRow`: the one row every generated token is written to.
    same_row: Option<usize>,
    /// Positions per GPU submit while prefilling.
    pub prefill_chunk: usize,
    /// Set from outside (another thread, or the page's Stop button) to end generation after the
    /// current step or prefill chunk.
    stop: Arc<AtomicBool>,
}

impl Engine {
    pub async fn load(mut bytes: &[u8], opts: LoadOptions) -> Result<Self> {
        Self::load_from(&mut bytes, opts).await
    }

    /// Loads from any byte source: the header is parsed first, then each tensor is read and
    /// uploaded in turn.
    pub async fn load_from(src: &mut dyn ByteSource, opts: LoadOptions) -> Result<Self> {
        let header = read_header(src)?;
        let g = Gguf::parse_prefix(&header, src.len())?;
        let (cfg, tokenizer) = Self::check(&g, &opts)?;
        let tokenizer = std::sync::Arc::new(tokenizer);
        let model = match opts.backend {
            Backend::Cpu => Model::Cpu(Box::new(CpuModel::load(&g, &cfg, opts.context, opts.kv, Weights::Blocks, src)?)),
            Backend::Reference => Model::Cpu(Box::new(CpuModel::load(&g, &cfg, opts.context, opts.kv, Weights::F32, src)?)),
            Backend::Gpu => Model::Gpu(Box::new(GpuModel::load(&g, &cfg, opts.context, opts.gpu, opts.kv, src).await?)),
        };
        let prefill_chunk = match &model {
            Model::Gpu(m) => m.chunk(),
            Model::Cpu(m) => m.batch,
        };
        Ok(Engine {
            logits: vec![0.0; cfg.vocab_size],
            cached: Vec::with_capacity(opts.context),
            pending: None,
            argmax_only: false,
            top_on_gpu: false,
            gpu_top: Vec::with_capacity(crate::gpu::ops::TOP_K),
            tainted_from: None,
            same_row: None,
            gpu_pick: None,
            logits_stale: false,
            attention: None,
            attention_layers: None,
            prompt_attention: None,
            attended: 0,
            context: opts.context,
            cfg,
            tokenizer,
            model,
            prefill_chunk,
            stop: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Every check a load runs short of reading the weights, from the header alone: the
    /// architecture and its tensors, the vocabulary and chat template, the context, and the
    /// shapes the chosen backend's kernels take. `inspect` and the page's model plan call it
    /// too, so a model they pass is one that loads (device limits aside).
    pub fn check(g: &Gguf, opts: &LoadOptions) -> Result<(Config, Tokenizer)> {
        let cfg = Config::from_gguf(g)?;
        let tokenizer = Tokenizer::from_gguf(g)?;
        if opts.context == 0 || opts.context > 1 << 20 {
            return Err(Error::Option(format!("context length {} is outside 1..=1048576", opts.context)));
        }
        if opts.backend == Backend::Gpu {
            crate::gpu::ops::check_shapes(g, &cfg, opts.context)?;
        }
        Ok((cfg, tokenizer))
    }

    /// A handle that stops a running `generate` when set (it is cleared when generation starts).
    pub fn stop_handle(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    pub fn backend(&self) -> String {
        match &self.model {
            Model::Cpu(m) if m.weights == Weights::F32 => "reference".into(),
            Model::Cpu(_) => "cpu".into(),
            Model::Gpu(m) => format!("gpu: {}", m.ctx.adapter_name()),
        }
    }

    /// Bytes of weights and of KV cache the model holds (GPU buffers, or CPU memory).
    pub fn memory(&self) -> (u64, u64) {
        match &self.model {
            Model::Gpu(m) => (m.weights.bytes, self.cfg.kv_cache_bytes(m.kv.capacity, m.kv.ty)),
            Model::Cpu(m) => (m.weight_bytes() as u64, m.kv_bytes() as u64),
        }
    }

    /// How the cache stores K and V.
    pub fn kv_type(&self) -> KvType {
        match &self.model {
            Model::Cpu(m) => m.kv_type,
            Model::Gpu(m) => m.kv.ty,
        }
    }

    pub fn gpu(&self) -> Option<&GpuModel> {
        match &self.model {
            Model::Gpu(m) => Some(m),
            Model::Cpu(_) => None,
        }
    }

    /// Where the GPU time goes (`crate::gpu::profile`): one decode step at the current position
    /// and one whole prefill chunk ending there (the last cached positions, rewritten with their
    /// own tokens: its attention spans the whole cache). Needs at least two cached positions;
    /// the GPU backend only.
    pub async fn profile(&mut self) -> Result<Vec<crate::gpu::Profile>> {
        let at = self.cached.len();
        let Model::Gpu(m) = &mut self.model else {
            return Err(Error::Option("profiles are of the GPU backend's dispatches".into()));
        };
        let chunk = m.chunk().min(at);
        if chunk < 2 || at >= self.context {
            return Err(Error::Option(format!("profiling needs 2..{} cached positions and room for one more", self.context)));
        }
        Ok(vec![m.profile(at, 1).await?, m.profile(at - chunk, chunk).await?])
    }

    /// GPU decode steps (forward pass and GPU argmax) at `positions`, in order, each timed in ms:
    /// a step at position p attends over cache rows 0..=p whatever they hold, so steps at a short
    /// and a long context can alternate under the same load on a noisy machine. The rows stepped
    /// at are overwritten, so the cache is emptied afterwards. The GPU backend only.
    pub async fn time_steps(&mut self, positions: &[usize]) -> Result<Vec<f64>> {
        let Model::Gpu(m) = &mut self.model else {
            return Err(Error::Option("timing single steps is for the GPU backend".into()));
        };
        if let Some(p) = positions.iter().find(|&&p| p >= self.context) {
            return Err(Error::Option(format!("position {p} is past the context of {}", self.context)));
        }
        let mut times = Vec::with_capacity(positions.len());
        let mut pick = (0, 0.0);
        for &p in positions {
            let t0 = now_ms();
            m.forward(&[pick.0], p, Readback::Argmax(&mut pick), Flaw::None).await?;
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
        self.logits_stale = false;
        if self.tainted_from.is_some_and(|t| n <= t) {
            self.tainted_from = None;
            self.same_row = None;
        }
    }

    /// Keeps the longest cached prefix of `ids` and forgets the rest, so that only `ids[n..]` has
    /// to be fed (a new chat turn after the previous ones). Returns n, always below `ids.len()`
    /// so that the last id is fed again and its logits are fresh.
    pub fn reuse_prefix(&mut self, ids: &[u32]) -> usize {
        let seq = self.cached.iter().chain(self.pending.iter());
        let common = seq.zip(ids).take_while(|(a, b)| a == b).count().min(ids.len().saturating_sub(1));
        // Rows a flawed generation wrote are not reused.
        let mut common = common.min(self.tainted_from.unwrap_or(usize::MAX));
        // A sliding-window layer's ring holds the last W + B positions: going back more than B
        // loses rows of the window before `common`, so the whole sequence is fed again.
        if self.cfg.sliding_window > 0 && self.cached.len().saturating_sub(common) > crate::config::PREFILL_CHUNK {
            common = 0;
        }
        if common <= self.cached.len() {
            self.rewind(common);
        }
        common
    }

    /// Positions whose K and V are cached.
    pub fn position(&self) -> usize {
        self.cached.len()
    }

    pub fn cached_tokens(&self) -> &[u32] {
        &self.cached
    }

    pub fn logits(&self) -> &[f32] {
        &self.logits
    }

    /// Runs `ids` (after any pending token) through the model, appending their K and V to the
    /// cache, and leaves the logits after the last one in `logits()`.
    pub async fn feed(&mut self, ids: &[u32]) -> Result<()> {
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= self.cfg.vocab_size) {
            return Err(Error::BadToken { id: bad, vocab: self.cfg.vocab_size });
        }
        let extra = self.pending.is_some() as usize;
        let total = self.cached.len() + extra + ids.len();
        if total > self.context {
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
    /// to `cached`.
    async fn run(&mut self, ids: &[u32], flaw: Flaw) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let start = match (flaw, self.same_row) {
            (Flaw::SameRow, Some(row)) => row,
            _ => self.cached.len(),
        };
        // Positions are processed in chunks; between chunks a stop request is honoured, leaving
        // the chunks done so far in the cache (and no fresh logits: `Error::Stopped`).
        let chunk = self.prefill_chunk;
        let n_chunks = ids.len().div_ceil(chunk);
        for (c, part) in ids.chunks(chunk).enumerate() {
            let last = c + 1 == n_chunks;
            let at = start + c * chunk;
            match &mut self.model {
                Model::Cpu(m) => {
                    m.forward(part, at, last, flaw);
                    if last {
                        self.logits.copy_from_slice(&m.logits);
                    }
                }
                Model::Gpu(m) => {
                    let mut pick = (0, 0.0);
                    let readback = match (last, self.argmax_only, self.top_on_gpu) {
                        (false, _, _) => Readback::None,
                        (true, false, _) => Readback::Logits(&mut self.logits[..]),
                        (true, true, false) => Readback::Argmax(&mut pick),
                        (true, true, true) => Readback::Top(&mut self.gpu_top),
                    };
                    m.forward(part, at, readback, flaw).await?;
                    if last {
                        self.logits_stale = self.argmax_only;
                        if self.top_on_gpu {
                            pick = (self.gpu_top.first().map_or(0, |t| t.id), 0.0);
                        }
                        if self.argmax_only {
                            self.gpu_pick = Some(pick);
                        }
                    }
                    if !last {
                        m.ctx.wait_idle().await?;
                    }
                }
            }
            self.cached.extend_from_slice(part);
            self.attended = at + part.len();
            if let Model::Cpu(_) = self.model {
                crate::clock::yield_now().await;
            }
            if !last && self.stop_requested() {
                return Err(Error::Stopped);
            }
        }
        Ok(())
    }

    /// Zeroes K and V in every cache row from `from` on.
    async fn clear_rows(&mut self, from: usize) -> Result<()> {
        match &mut self.model {
            Model::Cpu(m) => m.clear_rows(from),
            Model::Gpu(m) => m.clear_rows(from).await?,
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
            true => Some(self.attention_in(0..self.cfg.n_layers).await?),
            false => None,
        };
        Ok(())
    }

    /// Layer `l`'s attention weights for the last fed position: [h × n], n = positions attended.
    pub async fn attention_weights(&self, l: usize) -> Result<Vec<f32>> {
        if l >= self.cfg.n_layers {
            return Err(Error::Option(format!("layer {l} does not exist (the model has {})", self.cfg.n_layers)));
        }
        self.attention_in(l..l + 1).await
    }

    /// The attention weights for the last fed position in `layers`: [layers × h × n].
    async fn attention_in(&self, layers: std::ops::Range<usize>) -> Result<Vec<f32>> {
        let n = self.attended;
        match &self.model {
            Model::Cpu(m) => Ok(m.attention_weights(layers, n)),
            Model::Gpu(m) => m.attention_weights(layers, n).await,
        }
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
            out.extend_from_slice(&self.logits);
        }
        Ok(out)
    }

    /// Feeds `prompt`, then picks tokens one at a time until EOS, `max_tokens`, a full context, or
    /// `on_token` returning false. Each chosen token is fed back right after it is reported, so
    /// the cache grows by one row per step and, when this returns, holds every token and the
    /// logits predict the next one (except after EOS, which is not fed, and at a full context,
    /// where the last token waits as pending).
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
        self.stop.store(false, Ordering::Relaxed);
        if prompt.is_empty() && self.pending.is_none() && self.logits_stale {
            // The last feed read back only an argmax: run the last position again for its logits.
            let n = self.cached.len();
            let last = self.cached[n - 1];
            self.rewind(n - 1);
            self.feed(&[last]).await?;
        }
        let on_gpu = opts.gpu_argmax && opts.sampler.is_greedy() && self.gpu().is_some();
        self.argmax_only = on_gpu;
        // The table comes from the GPU too when it asks for no more than the GPU keeps.
        self.top_on_gpu = on_gpu && (1..=crate::gpu::ops::TOP_K).contains(&opts.report_top);
        let r = self.generate_inner(prompt, opts, on_gpu, on_token).await;
        self.argmax_only = false;
        self.top_on_gpu = false;
        self.gpu_pick = None;
        r
    }

    async fn generate_inner(
        &mut self,
        prompt: &[u32],
        opts: &GenerateOptions,
        on_gpu: bool,
        on_token: &mut dyn FnMut(&TokenEvent) -> bool,
    ) -> Result<Summary> {
        let mut run = Progress::new(prompt.len());
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
                self.decode(opts, on_gpu, &mut run, on_token).await?
            }
        };
        Ok(run.summary(stop, self.backend()))
    }

    /// Picks, reports and feeds back one token at a time, until a stop condition.
    async fn decode(
        &mut self,
        opts: &GenerateOptions,
        on_gpu: bool,
        run: &mut Progress,
        on_token: &mut dyn FnMut(&TokenEvent) -> bool,
    ) -> Result<StopReason> {
        let mut sampler = Sampler::new(opts.sampler);
        loop {
            if run.generated >= opts.max_tokens {
                return Ok(StopReason::MaxTokens);
            }
            let (id, top) = self.pick(&mut sampler, opts, on_gpu);
            let stop_token = self.tokenizer.is_stop(id);
            let text = if stop_token { String::new() } else { run.utf8.push(self.tokenizer.token_bytes(id)) };
            let ms = run.token(&text);
            let go_on = on_token(&TokenEvent {
                id,
                text,
                top,
                pos: self.position(),
                ms,
                attention: self.attention.take(),
                attention_layers: self.attention_layers.take(),
                prompt_attention: self.prompt_attention.take(),
            });
            if stop_token {
                return Ok(StopReason::Eos);
            }
            if self.position() >= self.context {
                self.pending = Some(id);
                return Ok(StopReason::ContextFull);
            }
            run.step_started();
            match self.feed_back(id, opts).await {
                Err(Error::Stopped) => return Ok(StopReason::Stopped),
                r => r?,
            }
            self.observe(opts).await?;
            if !go_on || self.stop_requested() {
                return Ok(StopReason::Stopped);
            }
        }
    }

    /// The next token and the next-token table: the GPU's argmax (and table) where it picked one,
    /// else the sampler over the logits.
    fn pick(&self, sampler: &mut Sampler, opts: &GenerateOptions, on_gpu: bool) -> (u32, Vec<TokenProb>) {
        match self.gpu_pick {
            Some((id, _)) if on_gpu => {
                let n = if self.top_on_gpu { opts.report_top.min(self.gpu_top.len()) } else { 0 };
                (id, self.gpu_top[..n].to_vec())
            }
            _ => {
                let top = if opts.report_top > 0 { top_k(&self.logits, opts.report_top, 1.0) } else { Vec::new() };
                (sampler.sample(&self.logits), top)
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
        if self.tainted_from.is_none() {
            // The rows the flaw leaves unwritten read as zeros, not as whatever an earlier
            // generation left there, so a flawed run does not depend on what ran before it.
            self.clear_rows(at).await?;
            self.tainted_from = Some(at);
        }
        if opts.flaw == Flaw::SameRow {
            self.same_row.get_or_insert(at);
        }
        self.run(&[id], opts.flaw).await
    }
}

/// A generation's text and timings as it goes, for the per-token events and the summary.
struct Progress {
    prompt_tokens: usize,
    t0: f64,
    /// Set when the prompt has been fed.
    prefill_ms: Option<f64>,
    ttft_ms: f64,
    t_decode: f64,
    /// When the step producing the next token began.
    t_step: f64,
    generated: usize,
    text: String,
    utf8: Utf8Stream,
}

impl Progress {
    fn new(prompt_tokens: usize) -> Self {
        let t0 = now_ms();
        Progress {
            prompt_tokens,
            t0,
            prefill_ms: None,
            ttft_ms: 0.0,
            t_decode: t0,
            t_step: t0,
            generated: 0,
            text: String::new(),
            utf8: Utf8Stream::default(),
        }
    }

    fn prefilled(&mut self) {
        let now = now_ms();
        self.prefill_ms = Some(now - self.t0);
        self.t_decode = now;
        self.t_step = now;
    }

    /// Counts a token whose text is `piece`; returns the milliseconds of the step that made it.
    fn token(&mut self, piece: &str) -> f64 {
        let now = now_ms();
        if self.generated == 0 {
            self.ttft_ms = now - self.t0;
        }
        self.generated += 1;
        self.text.push_str(piece);
        now - self.t_step
    }

    fn step_started(&mut self) {
        self.t_step = now_ms();
    }

    fn summary(mut self, stop: StopReason, backend: String) -> Summary {
        let rest = self.utf8.finish();
        self.text.push_str(&rest);
        let now = now_ms();
        let prefill_ms = self.prefill_ms.unwrap_or(now - self.t0);
        let decode_ms = if self.prefill_ms.is_some() { now - self.t_decode } else { 0.0 };
        Summary {
            prompt_tokens: self.prompt_tokens,
            generated_tokens: self.generated,
            ttft_ms: self.ttft_ms,
            prefill_ms,
            prefill_tps: if self.prefill_ms.is_some() { self.prompt_tokens as f64 / (prefill_ms / 1e3).max(1e-9) } else { 0.0 },
            decode_ms,
            decode_tps: if self.generated > 0 { self.generated as f64 / (decode_ms / 1e3).max(1e-9) } else { 0.0 },
            stop,
            backend,
            text: self.text,
        }
    }
}
