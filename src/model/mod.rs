//! The GPU model: weights, activations and KV cache on the device, and the forward pass as
//! recorded programs: `decode` (embedding + every layer for one position, with mat-vec kernels,
//! bound to the per-position step table) and `prefill` (the same layers for a chunk of up to
//! B tokens, with tiled mat-mul kernels and causal attention over the cache), each followed
//! by `head` (final norm + logits of the last token). A decode step is one submit and one readback.
//! The chunk size B is the adapter's (`Tuning::prefill_chunk`).

pub mod kv_cache;
pub mod weights;

use crate::clock::now_ms;
use crate::config::{Config, KvType};
use crate::cpu::{rope_factors, rope_table};
use crate::error::{Error, Result};
use crate::flaw::Flaw;
use crate::gguf::{ByteSource, Gguf};
use crate::gpu::ops::{self, AttentionBuffers, Heads, NormRows, RopeKvBuffers, Rows, Tokens, Write};
use crate::gpu::{GpuContext, GpuOptions, Profile, Program, Recorder, StepTable};
use crate::sampler::TokenProb;
use kv_cache::KvCache;
use weights::Weights;

pub use crate::gpu::ops::MAX_CONTEXT;

/// Activation buffers, each allocated once for the model's shapes, one row per token of a chunk
/// (B = the prefill chunk; decoding uses row 0).
struct Activations {
    x: wgpu::Buffer,                  // [B × d] residual stream
    xb: wgpu::Buffer,                 // [B × d] normed sublayer input
    qkv: wgpu::Buffer,                // [B × (q + 2·kv)], rows [q | k | v], q = h · d_h
    att_out: wgpu::Buffer,            // [B × q] attention output, heads concatenated
    att: wgpu::Buffer,                // [L × h × T] the last token's attention scores per layer, then [L × h × 2] (M, L)
    att_part: wgpu::Buffer,           // [B × h × splits × (4 + d_h)] attention statistics and outputs per split
    gate_up: wgpu::Buffer,            // [B × 2f], rows [gate | up]
    hb: wgpu::Buffer,                 // [B × f] act(gate) ⊙ up
    logits: wgpu::Buffer,             // [V]
    tokens: wgpu::Buffer,             // [T] u32, token id per position
    rope: wgpu::Buffer,               // [T × d_h/2] (cos, sin) of the full-attention layers
    rope_local: Option<wgpu::Buffer>, // the same for the sliding-window layers, where their RoPE differs
    staging: wgpu::Buffer,            // [V] f32, MAP_READ
    att_staging: wgpu::Buffer,        // [L × h × (T + 2)] f32, MAP_READ: the layers' scores and statistics, for the views
    argmax: wgpu::Buffer,             // [2] u32: argmax id, f32 bits of its logit
    argmax_staging: wgpu::Buffer,     // [2] u32, MAP_READ
    top: wgpu::Buffer,                // [2 + 2K] u32: softmax max and sum, K × (id, logit)
    top_part: wgpu::Buffer,           // [slices × (2 + 2K)] u32
    top_staging: wgpu::Buffer,        // [2 + 2K] u32, MAP_READ
}

/// The bytes of every buffer the model allocates besides the weights, computed once: the limit
/// check and the allocation both read them. B = the prefill chunk, rows per token buffer.
struct Sizes {
    stream: u64,   // [B × d] f32: x, xb
    att_out: u64,  // [B × q]
    qkv: u64,      // [B × (q + 2·kv)]
    gate_up: u64,  // [B × 2f]
    hb: u64,       // [B × f]
    logits: u64,   // [V]
    tokens: u64,   // [T] u32
    att: u64,      // [L × h × (T + 2)]
    part: u64,     // [B × h × splits × (4 + d_h)]
    kv_layer: u64, // [T × kv]: the largest layer's K or V
    steps: u64,    // [T] 256-byte uniform slots
}

impl Sizes {
    /// `attn`: decode's attention shape; `chunk_attn`: the prefill chunk's (`Attention::for_chunk`).
    fn new(cfg: &Config, context: usize, kv: KvType, attn: &ops::Attention, chunk_attn: &ops::Attention, chunk: u32) -> Self {
        let (d, q, kvd, f, b) = (cfg.dim as u64, cfg.q_dim() as u64, cfg.kv_dim() as u64, cfg.ffn_dim as u64, chunk as u64);
        Sizes {
            stream: b * d * 4,
            att_out: b * q * 4,
            qkv: b * (q + 2 * kvd) * 4,
            gate_up: b * 2 * f * 4,
            hb: b * f * 4,
            logits: cfg.vocab_size as u64 * 4,
            tokens: context as u64 * 4,
            att: attn.att_bytes(cfg.n_layers),
            part: attn.part_bytes(1).max(chunk_attn.part_bytes(chunk)),
            kv_layer: (0..cfg.n_layers).map(|l| cfg.kv_layer_bytes(cfg.cache_rows(l, context), kv)).max().unwrap_or(0),
            steps: StepTable::bytes(context),
        }
    }

    /// The buffers that grow with the context or the vocabulary, named for the limit check:
    /// (what, bytes, bound as storage).
    fn checked(&self, context: usize) -> [(String, u64, bool); 5] {
        [
            (format!("the KV cache of one layer (K or V) at {context} positions"), self.kv_layer, true),
            (format!("attention weights at {context} positions"), self.att, true),
            (format!("attention splits at {context} positions"), self.part, true),
            (format!("position uniforms for {context} positions"), self.steps, false),
            ("the logits".to_string(), self.logits, true),
        ]
    }
}

/// What the forward passes cost, counted as they run.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct GpuCounters {
    pub submits: u64,
    pub dispatches: u64,
    pub readback_bytes: u64,
    pub maps: u64,
    /// CPU milliseconds spent encoding and submitting command buffers.
    pub encode_ms: f64,
}

/// What a forward pass reads back from its last position.
pub enum Readback<'a> {
    None,
    /// The whole [V] logits row.
    Logits(&'a mut [f32]),
    /// (argmax id, its logit), picked on the GPU.
    Argmax(&'a mut (u32, f32)),
    /// The next-token table of the `ops::TOP_K` largest logits with their probabilities, made on
    /// the GPU (its first entry is the argmax).
    Top(&'a mut Vec<TokenProb>),
}

impl Readback<'_> {
    fn wanted(&self) -> bool {
        !matches!(self, Readback::None)
    }
}

pub struct GpuModel {
    pub ctx: GpuContext,
    pub cfg: Config,
    pub weights: Weights,
    pub kv: KvCache,
    act: Activations,
    steps: StepTable,
    chunk_step: StepTable,
    decode: Program,
    prefill: Program,
    head: Program,
    prefill_head: Program,
    /// The greedy pick on the GPU, after `head`.
    argmax: Program,
    /// The next-token table on the GPU, after `head`.
    top: Program,
    pub counters: GpuCounters,
}

impl GpuModel {
    pub async fn load(g: &Gguf<'_>, cfg: &Config, context: usize, opts: GpuOptions, kv: KvType, src: &mut dyn ByteSource) -> Result<Self> {
        let ctx = GpuContext::with_options(opts).await?;
        Self::load_on(ctx, g, cfg, context, kv, src)
    }

    pub fn load_on(ctx: GpuContext, g: &Gguf<'_>, cfg: &Config, context: usize, kv: KvType, src: &mut dyn ByteSource) -> Result<Self> {
        let heads = Heads { n_heads: cfg.n_heads as u32, n_kv_heads: cfg.n_kv_heads as u32, head_dim: cfg.head_dim as u32 };
        let t = &ctx.tuning;
        let attn = ops::Attention::new(heads, kv, context, cfg.n_layers, t.attention_split as usize, t.attention_lanes, cfg.attn_scale);
        let chunk_attn = attn.for_chunk(if attn.lanes > 0 { t.attention_lane_tokens } else { t.attention_tokens });
        let chunk = ctx.tuning.prefill_chunk;
        let factors = rope_factors(g, cfg, src)?;
        let table = |r| rope_table(context, cfg.head_dim, r, &factors);
        let sizes = Sizes::new(cfg, context, kv, &attn, &chunk_attn, chunk);
        check_limits(&ctx, g, cfg, context, &sizes)?;
        let weights = Weights::upload(&ctx, g, cfg, src)?;
        let kv_cache = KvCache::new(&ctx, cfg, context, kv)?;
        let act = Activations {
            x: ctx.storage("x", sizes.stream)?,
            xb: ctx.storage("xb", sizes.stream)?,
            qkv: ctx.storage("qkv", sizes.qkv)?,
            att_out: ctx.storage("att_out", sizes.att_out)?,
            att: ctx.storage("att", sizes.att)?,
            att_part: ctx.storage("attention splits", sizes.part)?,
            gate_up: ctx.storage("gate_up", sizes.gate_up)?,
            hb: ctx.storage("hb", sizes.hb)?,
            logits: ctx.storage("logits", sizes.logits)?,
            tokens: ctx.storage("tokens", sizes.tokens)?,
            rope: ctx.storage_with("rope table", bytemuck::cast_slice(&table(cfg.rope)))?,
            rope_local: match cfg.rope_local != cfg.rope && cfg.sliding_window > 0 {
                true => Some(ctx.storage_with("rope table, sliding-window layers", bytemuck::cast_slice(&table(cfg.rope_local)))?),
                false => None,
            },
            staging: ctx.staging("logits staging", sizes.logits)?,
            att_staging: ctx.staging("attention staging", attn.att_bytes(cfg.n_layers))?,
            argmax: ctx.storage("argmax", 8)?,
            argmax_staging: ctx.staging("argmax staging", 8)?,
            top: ctx.storage("top-k", ops::top_k_words() as u64 * 4)?,
            top_part: ctx.storage("top-k slices", (ops::TOP_K_SLICES as usize * ops::top_k_words()) as u64 * 4)?,
            top_staging: ctx.staging("top-k staging", ops::top_k_words() as u64 * 4)?,
        };
        let steps = StepTable::new(&ctx, context)?.with_grids(&ctx, attn.split_grid())?;
        let chunk_step = StepTable::chunk(&ctx)?.with_grids(&ctx, chunk_attn.split_grid())?;
        let layers = Layers { cfg, w: &weights, kv: &kv_cache, a: &act, attn, chunk_attn };
        let decode = layers.record(&ctx, Tokens::One, &steps)?;
        let prefill = layers.record(&ctx, Tokens::Chunk(chunk), &chunk_step)?;
        let head = record_head(&ctx, cfg, &weights, &act, &steps)?;
        let prefill_head = record_head(&ctx, cfg, &weights, &act, &chunk_step)?;
        let mut rec = Recorder::new(&ctx);
        ops::argmax(&mut rec, &act.argmax, &act.logits, cfg.vocab_size as u32)?;
        let argmax = rec.finish("argmax", None)?;
        let mut rec = Recorder::new(&ctx);
        ops::top_k(&mut rec, &act.top, &act.top_part, &act.logits, cfg.vocab_size as u32)?;
        let top = rec.finish("top-k", None)?;
        ctx.check_errors()?;
        Ok(GpuModel {
            ctx,
            cfg: cfg.clone(),
            weights,
            kv: kv_cache,
            act,
            steps,
            chunk_step,
            decode,
            prefill,
            head,
            prefill_head,
            argmax,
            top,
            counters: GpuCounters::default(),
        })
    }

    /// B: tokens per prefill submit.
    pub fn chunk(&self) -> usize {
        self.ctx.tuning.prefill_chunk as usize
    }

    pub fn dispatches_per_token(&self) -> usize {
        self.decode.len() + self.head.len()
    }

    /// GPU buffer bytes: weights, KV cache, activations, uniforms and staging, as created.
    pub fn buffer_bytes(&self) -> u64 {
        self.ctx.buffer_bytes()
    }

    /// Processes `tokens` at positions start.., then reads back what `readback` asks for from the
    /// last position: the whole logits row, or only the argmax (8 bytes, picked on the GPU), or
    /// nothing. One token runs the decode program (one submit, no uniform writes); more run the
    /// prefill program, one submit per chunk of up to B tokens.
    ///
    /// `flaw` (teaching only, see `crate::flaw`) selects a flawed cache append or RoPE for a
    /// single decoded token; prefill is always correct.
    pub async fn forward(&mut self, tokens: &[u32], start: usize, readback: Readback<'_>, flaw: Flaw) -> Result<()> {
        let n = tokens.len();
        if start + n > self.kv.capacity {
            return Err(Error::ContextFull { used: start, capacity: self.kv.capacity });
        }
        if n == 0 {
            return Ok(());
        }
        let t_encode = now_ms();
        self.ctx.queue.write_buffer(&self.act.tokens, start as u64 * 4, bytemuck::cast_slice(tokens));
        let b = self.chunk();
        let chunks = if n == 1 { 1 } else { n.div_ceil(b) };
        for c in 0..chunks {
            let last = c + 1 == chunks;
            let mut enc = self.ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("forward") });
            let readback = if last { Some(&readback) } else { None };
            self.encode_chunk(&mut enc, n, start + c * b, (n - c * b).min(b), readback, flaw);
            self.ctx.queue.submit([enc.finish()]);
            self.counters.submits += 1;
        }
        self.counters.encode_ms += now_ms() - t_encode;
        self.read(readback).await
    }

    /// Encodes one submit's work: `len` tokens at `at` (the decode program when the whole
    /// forward is one token), then for the last chunk the head and what `readback` wants.
    fn encode_chunk(&mut self, enc: &mut wgpu::CommandEncoder, n: usize, at: usize, len: usize, readback: Option<&Readback>, flaw: Flaw) {
        let (body, head, offset) = if n == 1 {
            (&self.decode, &self.head, self.steps.offset(at, flaw.kernel_code()))
        } else {
            self.chunk_step.set_chunk(&self.ctx.queue, at, len);
            (&self.prefill, &self.prefill_head, self.chunk_step.offset(0, 0))
        };
        let readback = readback.filter(|r| r.wanted());
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("forward"), timestamp_writes: None });
            let pick = match readback {
                Some(Readback::Argmax(_)) => Some(&self.argmax),
                Some(Readback::Top(_)) => Some(&self.top),
                _ => None,
            };
            let programs = [Some(body), readback.map(|_| head), pick];
            for p in programs.into_iter().flatten() {
                p.encode(&mut pass, offset);
                self.counters.dispatches += p.len() as u64;
            }
        }
        if let Some((from, staging, bytes)) = readback.map(|r| self.staged(r)) {
            enc.copy_buffer_to_buffer(from, 0, staging, 0, bytes);
        }
    }

    /// The buffer a readback copies, the staging buffer it goes through, and its bytes.
    fn staged(&self, r: &Readback) -> (&wgpu::Buffer, &wgpu::Buffer, u64) {
        let a = &self.act;
        match r {
            Readback::Argmax(_) => (&a.argmax, &a.argmax_staging, 8),
            Readback::Top(_) => (&a.top, &a.top_staging, a.top.size()),
            _ => (&a.logits, &a.staging, a.logits.size()),
        }
    }

    /// Maps the staging buffer of `readback` and decodes it into the caller's place.
    async fn read(&mut self, readback: Readback<'_>) -> Result<()> {
        let bytes = match readback {
            Readback::None => return Ok(()),
            Readback::Logits(out) => {
                self.ctx.read_staging(&self.act.staging, bytemuck::cast_slice_mut(out)).await?;
                out.len() * 4
            }
            Readback::Argmax(out) => {
                let mut raw = [0u32; 2];
                self.ctx.read_staging(&self.act.argmax_staging, bytemuck::cast_slice_mut(&mut raw)).await?;
                *out = (raw[0], f32::from_bits(raw[1]));
                8
            }
            Readback::Top(out) => {
                let mut raw = [0u32; ops::top_k_words()];
                self.ctx.read_staging(&self.act.top_staging, bytemuck::cast_slice_mut(&mut raw)).await?;
                let (max, sum) = (f32::from_bits(raw[0]), f32::from_bits(raw[1]));
                out.clear();
                for e in raw[2..].chunks_exact(2).filter(|e| e[0] != u32::MAX) {
                    out.push(TokenProb { id: e[0], p: (f32::from_bits(e[1]) - max).exp() / sum });
                }
                raw.len() * 4
            }
        };
        self.counters.readback_bytes += bytes as u64;
        self.counters.maps += 1;
        Ok(())
    }

    /// Zeroes K and V in every cache row from `from` on (one submit; no allocation).
    /// A sliding-window layer's ring is cleared only from 0: past that its rows hold the window.
    pub async fn clear_rows(&mut self, from: usize) -> Result<()> {
        let row = self.cfg.kv_layer_bytes(1, self.kv.ty);
        let mut enc = self.ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("clear cache rows") });
        for (l, &rows) in self.kv.rows.iter().enumerate() {
            if rows == self.kv.capacity || from == 0 {
                enc.clear_buffer(&self.kv.k[l], from as u64 * row, None);
                enc.clear_buffer(&self.kv.v[l], from as u64 * row, None);
            }
        }
        self.ctx.queue.submit([enc.finish()]);
        self.counters.submits += 1;
        self.ctx.wait_idle().await
    }

    /// Where the GPU time of one forward goes (`crate::gpu::profile`): `len` tokens at position
    /// `at` (one: a decode step with its head and GPU argmax; more: one prefill chunk and its
    /// head), their ids already in the token buffer. Overwrites cache rows at.. like a forward.
    pub async fn profile(&mut self, at: usize, len: usize) -> Result<Profile> {
        if len == 0 || len > self.chunk() || at + len > self.kv.capacity {
            return Err(Error::Option(format!(
                "cannot profile {len} tokens at position {at} (chunk {}, context {})",
                self.chunk(),
                self.kv.capacity
            )));
        }
        let what =
            if len == 1 { format!("decode step at context {at}") } else { format!("prefill chunk of {len} tokens at position {at}") };
        let mut p = Profile::new(&self.ctx, what).await?;
        if len == 1 {
            let offset = self.steps.offset(at, 0);
            for program in [&self.decode, &self.head, &self.argmax] {
                p.add(&self.ctx, program, offset).await?;
            }
        } else {
            self.chunk_step.set_chunk(&self.ctx.queue, at, len);
            for program in [&self.prefill, &self.prefill_head] {
                p.add(&self.ctx, program, 0).await?;
            }
        }
        Ok(p)
    }

    /// Reads the attention weights of the last processed position in `layers`: [layers × h × n],
    /// n = positions fed. One extra copy and map, made only when a view asks: the layers' scores
    /// and softmax statistics, normalised here (`ops::softmax_weights`).
    pub async fn attention_weights(&self, layers: std::ops::Range<usize>, n: usize) -> Result<Vec<f32>> {
        let (t, h) = (self.kv.capacity, self.cfg.n_heads);
        let (scores, stats) = ((h * t * 4) as u64, (h * 2 * 4) as u64);
        let (count, first) = (layers.len() as u64, layers.start as u64);
        let stats_at = self.cfg.n_layers as u64 * scores;
        let mut enc = self.ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("attention readback") });
        enc.copy_buffer_to_buffer(&self.act.att, first * scores, &self.act.att_staging, 0, count * scores);
        enc.copy_buffer_to_buffer(&self.act.att, stats_at + first * stats, &self.act.att_staging, count * scores, count * stats);
        self.ctx.queue.submit([enc.finish()]);
        let mut raw = vec![0u8; (count * (scores + stats)) as usize];
        self.ctx.read_staging(&self.act.att_staging, &mut raw).await?;
        let all: Vec<f32> = bytemuck::pod_collect_to_vec(&raw);
        let (all_scores, all_stats) = all.split_at(layers.len() * h * t);
        Ok(layers
            .enumerate()
            .flat_map(|(i, l)| {
                let lo = self.cfg.attended(l, n.saturating_sub(1)).start;
                ops::softmax_weights(&all_scores[i * h * t..][..h * t], &all_stats[i * h * 2..][..h * 2], t, lo, n)
            })
            .collect())
    }
}

/// Refuses a model or context that the device cannot hold, before anything is allocated: every
/// buffer the model will create that grows with the model or the context is checked against the
/// device's limits, largest first.
fn check_limits(ctx: &GpuContext, g: &Gguf<'_>, cfg: &Config, context: usize, sizes: &Sizes) -> Result<()> {
    let needed = cfg.expected_tensors();
    let mut plan: Vec<(String, u64, bool)> = g
        .tensors
        .iter()
        .filter(|i| needed.iter().any(|(n, _)| *n == i.name))
        .map(|i| match weights::TABLES.contains(&i.name.as_str()) {
            // Split by rows where it must be: each part is checked.
            true => (format!("a part of tensor `{}`", i.name), weights::table_parts(ctx, i).part_bytes(), true),
            false => (format!("tensor `{}`", i.name), i.size, true),
        })
        .collect();
    plan.extend(sizes.checked(context));
    plan.sort_by_key(|p| std::cmp::Reverse(p.1));
    for (what, size, storage) in plan {
        ctx.check_size(&what, size, storage)?;
    }
    Ok(())
}

/// What the layers read and write, and the attention shape, for recording them.
struct Layers<'a> {
    cfg: &'a Config,
    w: &'a Weights,
    kv: &'a KvCache,
    a: &'a Activations,
    /// The attention's shape for one token and for a prefill chunk.
    attn: ops::Attention,
    chunk_attn: ops::Attention,
}

impl Layers<'_> {
    /// Embedding + every layer: 1 + 10 · n_layers dispatches for Llama (13 per layer where q/k/v
    /// and gate/up are not fused; + 1 for Qwen 2's biases, + 1 for q/k head norms, + 2 for
    /// Gemma's post-norms), for one position (bound to the per-position table) or for a chunk
    /// (bound to the chunk table).
    fn record(&self, ctx: &GpuContext, tokens: Tokens, steps: &StepTable) -> Result<Program> {
        let (cfg, w, kv, a) = (self.cfg, self.w, self.kv, self.a);
        let (d, f, q) = (cfg.dim as u32, cfg.ffn_dim as u32, cfg.q_dim() as u32);
        let heads = self.attn.heads;
        let qkv = Rows::new(&a.qkv, heads.qkv_row());
        let (x, xb) = (Rows::new(&a.x, d), Rows::new(&a.xb, d));
        let gate_up = Rows::new(&a.gate_up, 2 * f);
        // A sublayer's output goes straight into the residual stream, or (post-norms) into xb,
        // to be normed and then added.
        let (sub_out, sub_write) = if cfg.post_norms { (xb, Write::Set) } else { (x, Write::Add) };
        let mut rec = Recorder::new(ctx);
        ops::embed(&mut rec, tokens, &a.x, w.table("token_embd.weight"), &a.tokens, cfg.embed_scale)?;
        for l in 0..cfg.n_layers {
            let t = |n: &str| w.layer(l, n);
            let r = &mut rec;
            let eps = cfg.rms_eps;
            let post_norm = |r: &mut Recorder, name: &str| -> Result<()> {
                match cfg.post_norms {
                    true => ops::rms_norm(r, tokens, format!("L{l}.{name}"), &a.x, &a.xb, (t(name), eps), NormRows::Each, Write::Add),
                    false => Ok(()),
                }
            };
            // x → xb = rmsnorm(x) → q, k, v (into qkv; + biases; heads normed) → RoPE on q and k,
            // k and v into their cache rows.
            ops::rms_norm(r, tokens, format!("L{l}.attn_norm"), &a.xb, &a.x, (t("attn_norm"), eps), NormRows::Each, Write::Set)?;
            self.project_group(r, tokens, l, "attn_qkv", qkv, xb)?;
            if cfg.qkv_bias {
                ops::add_bias(r, tokens, format!("L{l}.attn_qkv_bias"), &a.qkv, w.get(&format!("blk.{l}.attn_qkv.bias")))?;
            }
            if cfg.qk_norm {
                ops::head_norm(r, tokens, format!("L{l}.qk_norm"), &a.qkv, [t("attn_q_norm"), t("attn_k_norm")], heads, eps)?;
            }
            let sliding = cfg.is_sliding(l);
            let table = match (&a.rope_local, sliding) {
                (Some(local), true) => local,
                _ => &a.rope,
            };
            let rows = kv.rows[l] as u32;
            let rb = RopeKvBuffers { qkv: &a.qkv, k_cache: &kv.k[l], v_cache: &kv.v[l], table, rows };
            ops::rope_kv(r, tokens, format!("L{l}.rope_kv"), &rb, heads, kv.ty, cfg.rope.neox)?;
            // Each query attends over the positions it sees; x += W_o · att_out (normed first
            // with post-norms).
            let bufs =
                AttentionBuffers { out: &a.att_out, att: &a.att, part: &a.att_part, qkv: &a.qkv, k_cache: &kv.k[l], v_cache: &kv.v[l] };
            let window = if sliding { cfg.sliding_window as u32 } else { 0 };
            let shape = if tokens == Tokens::One { self.attn } else { self.chunk_attn };
            ops::attention(r, tokens, &format!("L{l}"), &bufs, &shape.layer(l).windowed(window, rows))?;
            ops::project(r, tokens, format!("L{l}.attn_output"), t("attn_output"), sub_out, Rows::new(&a.att_out, q), sub_write)?;
            post_norm(r, "post_attention_norm")?;
            // x += W_down · (act(W_gate · xb) ⊙ W_up · xb), xb = rmsnorm(x).
            ops::rms_norm(r, tokens, format!("L{l}.ffn_norm"), &a.xb, &a.x, (t("ffn_norm"), eps), NormRows::Each, Write::Set)?;
            self.project_group(r, tokens, l, "ffn_gate_up", gate_up, xb)?;
            ops::glu(r, tokens, format!("L{l}.glu"), &a.hb, &a.gate_up, f, cfg.act)?;
            ops::project(r, tokens, format!("L{l}.ffn_down"), t("ffn_down"), sub_out, Rows::new(&a.hb, f), sub_write)?;
            post_norm(r, "post_ffw_norm")?;
        }
        rec.finish(if tokens == Tokens::One { "decode" } else { "prefill" }, Some(steps))
    }

    /// out[t] = [W_a | W_b | …] · x[t] for the members of a group that read the same input
    /// (`weights::FUSED`): one projection where they are stored together, else one per member,
    /// each writing after the rows of the one before.
    fn project_group(&self, r: &mut Recorder, tokens: Tokens, l: usize, group: &str, out: Rows, x: Rows) -> Result<()> {
        if let Some(w) = self.w.fused(l, group) {
            return ops::project(r, tokens, format!("L{l}.{group}"), w, out, x, Write::Set);
        }
        let mut offset = 0;
        for m in weights::members(group) {
            let w = self.w.layer(l, m);
            ops::project(r, tokens, format!("L{l}.{m}"), w, out.at(offset), x, Write::Set)?;
            offset += w.rows();
        }
        Ok(())
    }
}

/// logits = W_out · rmsnorm(x of the last token), W_out = token_embd when the output is tied.
fn record_head(ctx: &GpuContext, cfg: &Config, w: &Weights, a: &Activations, steps: &StepTable) -> Result<Program> {
    let mut rec = Recorder::new(ctx);
    let norm = (w.get("output_norm.weight"), cfg.rms_eps);
    ops::rms_norm(&mut rec, Tokens::One, "output_norm".into(), &a.xb, &a.x, norm, NormRows::LastIntoFirst, Write::Set)?;
    let out = w.table(if cfg.tied_output { "token_embd.weight" } else { "output.weight" });
    let d = cfg.dim as u32;
    for (i, part) in out.iter().enumerate() {
        let logits = Rows::new(&a.logits, 0).at(part.first_row);
        let label = if out.len() == 1 { "output".to_string() } else { format!("output part {i}") };
        ops::project(&mut rec, Tokens::One, label, &part.tensor, logits, Rows::new(&a.xb, d), Write::Set)?;
    }
    rec.finish("head", Some(steps))
}
