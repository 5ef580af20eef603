//! The GPU model: weights, activations and KV cache on the device, and the forward pass as the
//! programs `forward` records: a decode step is one submit and one readback of what the engine
//! wants (`Want`). The chunk size B is the adapter's (`Tuning::prefill_chunk`).

use crate::backend::cpu::{rope_factors, rope_table};
use crate::backend::gpu::forward::Programs;
use crate::backend::gpu::kv_cache::KvCache;
use crate::backend::gpu::ops::attention::{self, softmax_weights, Plan};
use crate::backend::gpu::ops::{top_k, Heads};
use crate::backend::gpu::weights::{self, Weights};
use crate::backend::gpu::{GpuContext, GpuOptions, Profile, StepTable};
use crate::backend::{Readout, Want};
use crate::clock::now_ms;
use crate::core::config::{Config, KvType};
use crate::core::flaw::Flaw;
use crate::core::gguf::{ByteSource, Gguf};
use crate::core::kv_policy::KvPolicy;
use crate::error::{Error, Result};

/// Activation buffers, each allocated once for the model's shapes, one row per token of a chunk
/// (B = the prefill chunk; decoding uses row 0).
pub struct Activations {
    pub(super) x: wgpu::Buffer,                  // [B × d] residual stream
    pub(super) x2: wgpu::Buffer,                 // [d] the residual stream's second buffer (a fused decode step with post-norms)
    pub(super) xb: wgpu::Buffer,                 // [B × d] normed sublayer input
    pub(super) qkv: wgpu::Buffer,                // [B × (q + 2·kv)], rows [q | k | v], q = h · d_h
    pub(super) att_out: wgpu::Buffer,            // [B × q] attention output, heads concatenated
    pub(super) att: wgpu::Buffer,                // [L × h × T] the last token's attention scores per layer, then [L × h × 2] (M, L)
    pub(super) att_part: wgpu::Buffer,           // [B × h × splits × (4 + d_h)] attention statistics and outputs per split
    pub(super) gate_up: wgpu::Buffer,            // [B × 2f], rows [gate | up]
    pub(super) hb: wgpu::Buffer,                 // [B × f] act(gate) ⊙ up
    pub(super) logits: wgpu::Buffer,             // [V]
    pub(super) tokens: wgpu::Buffer,             // [T] u32, token id per position
    pub(super) rope: wgpu::Buffer,               // [T × d_h/2] (cos, sin) of the full-attention layers
    pub(super) rope_local: Option<wgpu::Buffer>, // the same for the sliding-window layers, where their RoPE differs
    pub(super) staging: wgpu::Buffer,            // [V] f32, MAP_READ
    pub(super) att_staging: wgpu::Buffer,        // [L × h × (T + 2)] f32, MAP_READ: the layers' scores and statistics, for the views
    pub(super) argmax: wgpu::Buffer,             // [2] u32: argmax id, f32 bits of its logit
    pub(super) argmax_staging: wgpu::Buffer,     // [2] u32, MAP_READ
    pub(super) top: wgpu::Buffer,                // [2 + 2K] u32: softmax max and sum, K × (id, logit)
    pub(super) top_part: wgpu::Buffer,           // [slices × (2 + 2K)] u32
    pub(super) top_staging: wgpu::Buffer,        // [2 + 2K] u32, MAP_READ
}

/// The bytes of every buffer the model allocates besides the weights, computed once: the limit
/// check and the allocation both read them. B = the prefill chunk, rows per token buffer.
#[derive(Clone, Copy)]
struct Sizes {
    stream: u64,   // [B × d] f32: x, xb
    row: u64,      // [d] f32: x2
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
    fn new(cfg: &Config, context: usize, kv: KvType, plan: &Plan, chunk: u32) -> Self {
        let (d, q, kvd, f, b) = (cfg.dim as u64, cfg.q_dim() as u64, cfg.kv_dim() as u64, cfg.ffn_dim as u64, chunk as u64);
        Sizes {
            stream: b * d * 4,
            row: d * 4,
            att_out: b * q * 4,
            qkv: b * (q + 2 * kvd) * 4,
            gate_up: b * 2 * f * 4,
            hb: b * f * 4,
            logits: cfg.vocab_size as u64 * 4,
            tokens: context as u64 * 4,
            att: plan.decode.att_bytes(cfg.n_layers),
            part: plan.decode.part_bytes(1).max(plan.chunk.part_bytes(chunk)),
            kv_layer: (0..cfg.n_layers).map(|l| cfg.kv_layer_bytes(cfg.cache_rows(l, context), kv)).max().unwrap_or(0),
            steps: StepTable::bytes(context),
        }
    }

    /// Bytes of every buffer sized here but the cache (x and xb; the logits and their staging).
    fn total(&self) -> u64 {
        let Sizes { stream, row, att_out, qkv, gate_up, hb, logits, tokens, att, part, kv_layer: _, steps } = *self;
        2 * stream + row + att_out + qkv + gate_up + hb + 2 * logits + tokens + att + part + steps
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

impl Activations {
    /// Every activation, table and staging buffer, sized by `sizes`.
    fn new(ctx: &GpuContext, sizes: &Sizes, rope: Vec<f32>, rope_local: Option<Vec<f32>>) -> Result<Self> {
        let table = |label: &str, t: &[f32]| ctx.storage_with(label, bytemuck::cast_slice(t));
        let top = top_k::WORDS as u64 * 4;
        Ok(Activations {
            x: ctx.storage("x", sizes.stream)?,
            x2: ctx.storage("x (second buffer)", sizes.row)?,
            xb: ctx.storage("xb", sizes.stream)?,
            qkv: ctx.storage("qkv", sizes.qkv)?,
            att_out: ctx.storage("att_out", sizes.att_out)?,
            att: ctx.storage("att", sizes.att)?,
            att_part: ctx.storage("attention splits", sizes.part)?,
            gate_up: ctx.storage("gate_up", sizes.gate_up)?,
            hb: ctx.storage("hb", sizes.hb)?,
            logits: ctx.storage("logits", sizes.logits)?,
            tokens: ctx.storage("tokens", sizes.tokens)?,
            rope: table("rope table", &rope)?,
            rope_local: rope_local.map(|t| table("rope table, sliding-window layers", &t)).transpose()?,
            staging: ctx.staging("logits staging", sizes.logits)?,
            att_staging: ctx.staging("attention staging", sizes.att)?,
            argmax: ctx.storage("argmax", 8)?,
            argmax_staging: ctx.staging("argmax staging", 8)?,
            top: ctx.storage("top-k", top)?,
            top_part: ctx.storage("top-k slices", top_k::SLICES as u64 * top)?,
            top_staging: ctx.staging("top-k staging", top)?,
        })
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

pub struct GpuModel {
    pub ctx: GpuContext,
    pub cfg: Config,
    pub weights: Weights,
    pub kv: KvCache,
    act: Activations,
    steps: StepTable,
    chunk_step: StepTable,
    programs: Programs,
    pub counters: GpuCounters,
}

impl GpuModel {
    pub async fn load(
        g: &Gguf<'_>,
        cfg: &Config,
        context: usize,
        opts: GpuOptions,
        policy: KvPolicy,
        src: &mut dyn ByteSource,
    ) -> Result<Self> {
        let ctx = GpuContext::with_options(opts).await?;
        Self::load_on(ctx, g, cfg, context, policy, src).await
    }

    /// Loads onto `ctx` with a cache of `policy` (its precision, and a `window-N`'s ring;
    /// `backend::check_policy` has refused what the kernels do not run).
    pub async fn load_on(
        ctx: GpuContext,
        g: &Gguf<'_>,
        cfg: &Config,
        context: usize,
        policy: KvPolicy,
        src: &mut dyn ByteSource,
    ) -> Result<Self> {
        let kv = policy.precision;
        let plan = Plan::new(&ctx, Heads::of(cfg), kv, context, cfg.n_layers, cfg.attn_scale);
        let sizes = Sizes::new(cfg, context, kv, &plan, ctx.tuning.prefill_chunk);
        check_device(&ctx, g, cfg, context, policy)?;
        let factors = rope_factors(g, cfg, src)?;
        let table = |r| rope_table(context, cfg.head_dim, r, &factors);
        let local = (cfg.rope_local != cfg.rope && cfg.sliding_window > 0).then(|| table(cfg.rope_local));
        let weights = Weights::upload(&ctx, g, cfg, src).await?;
        let kv_cache = KvCache::new(&ctx, cfg, context, policy)?;
        let act = Activations::new(&ctx, &sizes, table(cfg.rope), local)?;
        let steps = StepTable::new(&ctx, context)?.with_grids(&ctx, plan.decode.split_grid())?;
        let chunk_step = StepTable::chunk(&ctx)?.with_grids(&ctx, plan.chunk.split_grid())?;
        let programs = Programs::record(&ctx, cfg, &weights, &kv_cache, &act, &plan, (&steps, &chunk_step))?;
        ctx.check_errors()?;
        Ok(GpuModel { ctx, cfg: cfg.clone(), weights, kv: kv_cache, act, steps, chunk_step, programs, counters: GpuCounters::default() })
    }

    /// B: tokens per prefill submit.
    pub fn chunk(&self) -> usize {
        self.ctx.tuning.prefill_chunk as usize
    }

    pub fn dispatches_per_token(&self) -> usize {
        self.programs.decode.len() + self.programs.head.len()
    }

    /// GPU buffer bytes: weights, KV cache, activations, uniforms and staging, as created.
    pub fn buffer_bytes(&self) -> u64 {
        self.ctx.buffer_bytes()
    }

    /// Processes `tokens` at positions start.., then reads back what `want` asks for from the
    /// last position into `out`: the whole logits row, the argmax (8 bytes, picked on the GPU),
    /// the next-token table (136 bytes), or nothing. One token runs the decode program (one
    /// submit, no uniform writes); more run the prefill program, one submit per chunk of up to B
    /// tokens.
    ///
    /// `flaw` (teaching only, see `crate::core::flaw`) selects a flawed cache append or RoPE for a
    /// single decoded token; prefill is always correct.
    pub async fn forward(&mut self, tokens: &[u32], start: usize, want: Want, flaw: Flaw, out: &mut Readout) -> Result<()> {
        let n = tokens.len();
        if start + n > self.kv.capacity {
            return Err(Error::ContextFull { used: start, capacity: self.kv.capacity });
        }
        out.clear();
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
            self.encode_chunk(&mut enc, n, start + c * b, (n - c * b).min(b), if last { want } else { Want::Nothing }, flaw);
            self.ctx.queue.submit([enc.finish()]);
            self.counters.submits += 1;
        }
        self.counters.encode_ms += now_ms() - t_encode;
        self.read(want, out).await
    }

    /// Encodes one submit's work: `len` tokens at `at` (the decode program when the whole
    /// forward is one token), then, where something is wanted, the head and the pick.
    fn encode_chunk(&mut self, enc: &mut wgpu::CommandEncoder, n: usize, at: usize, len: usize, want: Want, flaw: Flaw) {
        let p = &self.programs;
        let (body, head, offset) = if n == 1 {
            (&p.decode, &p.head, self.steps.offset(at, flaw.kernel_code()))
        } else {
            self.chunk_step.set_chunk(&self.ctx.queue, at, len);
            (&p.prefill, &p.prefill_head, self.chunk_step.offset(0, 0))
        };
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("forward"), timestamp_writes: None });
            let pick = match want {
                Want::Argmax => Some(&p.argmax),
                Want::Top => Some(&p.top),
                _ => None,
            };
            let programs = [Some(body), (want != Want::Nothing).then_some(head), pick];
            for program in programs.into_iter().flatten() {
                program.encode(&mut pass, offset);
                self.counters.dispatches += program.len() as u64;
            }
        }
        if let Some((from, staging, bytes)) = self.staged(want) {
            enc.copy_buffer_to_buffer(from, 0, staging, 0, bytes);
        }
    }

    /// The buffer a readback copies, the staging buffer it goes through, and its bytes.
    fn staged(&self, want: Want) -> Option<(&wgpu::Buffer, &wgpu::Buffer, u64)> {
        let a = &self.act;
        match want {
            Want::Nothing => None,
            Want::Logits => Some((&a.logits, &a.staging, a.logits.size())),
            Want::Argmax => Some((&a.argmax, &a.argmax_staging, 8)),
            Want::Top => Some((&a.top, &a.top_staging, a.top.size())),
        }
    }

    /// Maps the staging buffer of `want` and decodes it into `out`.
    async fn read(&mut self, want: Want, out: &mut Readout) -> Result<()> {
        let bytes = match want {
            Want::Nothing => return Ok(()),
            Want::Logits => {
                self.ctx.read_staging(&self.act.staging, bytemuck::cast_slice_mut(&mut out.logits)).await?;
                out.has_logits = true;
                out.logits.len() * 4
            }
            Want::Argmax => {
                let mut raw = [0u32; 2];
                self.ctx.read_staging(&self.act.argmax_staging, bytemuck::cast_slice_mut(&mut raw)).await?;
                out.argmax = Some(raw[0]);
                8
            }
            Want::Top => {
                let mut raw = [0u32; top_k::WORDS];
                self.ctx.read_staging(&self.act.top_staging, bytemuck::cast_slice_mut(&mut raw)).await?;
                top_k::decode(&raw, &mut out.top);
                out.argmax = Some(out.top.first().map_or(0, |t| t.id));
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
            if rows != self.kv.capacity && from != 0 {
                continue;
            }
            for buf in [&self.kv.k[l], &self.kv.v[l]] {
                match self.kv.blocks(l, self.cfg.kv_dim()) {
                    // Codes and scales lie in two parts of the buffer.
                    Some(layout) => layout.row_ranges(from as u32).iter().for_each(|&(at, len)| enc.clear_buffer(buf, at, Some(len))),
                    None => enc.clear_buffer(buf, from as u64 * row, None),
                }
            }
        }
        self.ctx.queue.submit([enc.finish()]);
        self.counters.submits += 1;
        self.ctx.wait_idle().await
    }

    /// Where the GPU time of one forward goes (`crate::backend::gpu::profile`): `len` tokens at position
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
            for program in [&self.programs.decode, &self.programs.head, &self.programs.argmax] {
                p.add(&self.ctx, program, offset).await?;
            }
        } else {
            self.chunk_step.set_chunk(&self.ctx.queue, at, len);
            for program in [&self.programs.prefill, &self.programs.prefill_head] {
                p.add(&self.ctx, program, 0).await?;
            }
        }
        Ok(p)
    }

    /// Reads the attention weights of the last processed position in `layers`: [layers × h × n],
    /// n = positions fed. One extra copy and map, made only when a view asks: the layers' scores
    /// and softmax statistics, normalised here (`ops::attention::softmax_weights`).
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
                let w = self.kv.windows[l];
                let lo = if w > 0 { n.saturating_sub(w) } else { 0 };
                softmax_weights(&all_scores[i * h * t..][..h * t], &all_stats[i * h * 2..][..h * 2], t, lo, n)
            })
            .collect())
    }
}

/// Refuses a model the GPU kernels cannot run, from its header alone: a head dimension the
/// attention kernels do not take, a context past `attention::MAX_CONTEXT`, a weight row that is
/// not whole blocks of 32 elements. (The device's limits: `check_device`.)
pub fn check(g: &Gguf, cfg: &Config, context: usize) -> Result<()> {
    attention::check(cfg.head_dim, context)?;
    for (name, _) in cfg.expected_tensors() {
        let info = g.tensor(&name).ok_or_else(|| Error::MissingTensor(name.clone()))?;
        // The kernels read rows in blocks of 32 elements, within the type's own blocks.
        let block = info.ty.block_elems().max(32) as u64;
        if info.dims.len() == 2 && info.dims[0] % block != 0 {
            return Err(Error::NotSupported(format!(
                "tensor `{name}` of type {} with rows of {} elements (the GPU kernels need a multiple of {block})",
                info.ty.name(),
                info.dims[0]
            )));
        }
    }
    Ok(())
}

/// What a model will hold on the device, planned from its header (`check_device`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footprint {
    /// Every weight buffer (fused groups, tables' parts).
    pub weights: u64,
    /// K and V of every layer at the context, as the cache policy stores them.
    pub cache: u64,
    /// Activations, tables and staging.
    pub other: u64,
}

impl Footprint {
    pub fn total(&self) -> u64 {
        self.weights + self.cache + self.other
    }
}

/// Refuses a model or context that the device cannot hold, before anything is allocated and
/// from the header alone (every load runs it before its upload; the page before a download):
/// every buffer the model will create that grows with the model or the context, against the
/// device's `maxBufferSize` and `maxStorageBufferBindingSize` (largest first), then the kernels'
/// own checks (`check`). Returns what the model will hold, for `check_allocation`.
pub fn check_device(ctx: &GpuContext, g: &Gguf<'_>, cfg: &Config, context: usize, policy: KvPolicy) -> Result<Footprint> {
    let plan = Plan::new(ctx, Heads::of(cfg), policy.precision, context, cfg.n_layers, cfg.attn_scale);
    let sizes = Sizes::new(cfg, context, policy.precision, &plan, ctx.tuning.prefill_chunk);
    let weights = weights::planned(ctx, g, cfg)?;
    let mut buffers: Vec<(String, u64, bool)> = weights.iter().map(|(what, b)| (what.clone(), *b, true)).collect();
    buffers.extend(sizes.checked(context));
    buffers.sort_by_key(|p| std::cmp::Reverse(p.1));
    for (what, size, storage) in &buffers {
        ctx.check_size(what, *size, *storage)?;
    }
    // The kernels' own limits after the device's (the figures a user can act on first).
    check(g, cfg, context)?;
    let (rows, _) = KvCache::rings(cfg, context, policy.eviction);
    Ok(Footprint {
        weights: weights.iter().map(|w| w.1).sum(),
        cache: rows.iter().map(|&r| 2 * cfg.kv_layer_bytes(r, policy.precision)).sum(),
        // The activations, and the RoPE table: [T × d_h/2] (cos, sin) f32.
        other: sizes.total() + 2 * context as u64 * cfg.head_dim as u64 * 4,
    })
}

/// Refuses a model whose buffers together (`need`, from `check_device`) are more than the device
/// can allocate, by asking for them (`GpuContext::probe`) — before a download, on a device of
/// its own that is then closed (a load does not probe: a device may free the probe's memory only
/// after later work, and the weights would meet it). CPU-type adapters (SwiftShader, lavapipe)
/// are not probed: their buffers are the host's memory, which they fill as they allocate it, so
/// a probe costs the model's size in memory and time and cannot fail short of the host's end.
pub async fn check_allocation(ctx: &GpuContext, need: &Footprint, context: usize, policy: KvPolicy) -> Result<()> {
    if ctx.info.device_type == wgpu::DeviceType::Cpu {
        return Ok(());
    }
    let got = ctx.probe(need.total()).await?;
    if got >= need.total() {
        return Ok(());
    }
    let mib = |b: u64| b.div_ceil(1 << 20);
    Err(Error::Memory {
        what: format!(
            "on the GPU the weights ({} MiB), the KV cache at {context} positions as {} ({} MiB) and the activations ({} MiB)",
            mib(need.weights),
            policy.name(),
            mib(need.cache),
            mib(need.other)
        ),
        need: need.total(),
        limit: format!("the {} MiB the device could allocate", got >> 20),
        hint: "choose a smaller context, a q8_0, q4_0 or window-N cache, a smaller model or the cpu backend",
    })
}
