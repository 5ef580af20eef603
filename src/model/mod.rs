//! The GPU model: weights, activations and KV cache on the device, and the forward pass as
//! recorded programs: `decode` (embedding + every layer for one position, with mat-vec kernels,
//! bound to the per-position step table) and `prefill` (the same layers for a chunk of up to
//! `CHUNK` tokens, with tiled mat-mul kernels and causal attention over the cache), each followed
//! by `head` (final norm + logits of the last token). A decode step is one submit and one readback.

pub mod kv_cache;
pub mod weights;

use crate::clock::now_ms;
use crate::config::{Config, KvType};
use crate::cpu::rope_table;
use crate::error::{Error, Result};
use crate::gguf::{ByteSource, Gguf};
use crate::gpu::{params, GpuContext, GpuOptions, Kernel, Program, Recorder, StepTable};
use kv_cache::KvCache;
use weights::Weights;

/// Tokens per prefill chunk: the rows of every activation buffer.
pub const CHUNK: usize = 32;

/// Activation buffers, each allocated once for the model's shapes, one row per token of a chunk
/// (B = `CHUNK`; decoding uses row 0).
struct Activations {
    x: wgpu::Buffer,              // [B × d] residual stream
    xb: wgpu::Buffer,             // [B × d] normed sublayer input
    qkv: wgpu::Buffer,            // [B × (d + 2·kv)], rows [q | k | v]
    att_out: wgpu::Buffer,        // [B × d] attention output, heads concatenated
    att: wgpu::Buffer,            // [L × h × T] the last token's attention weights per layer, then [B × h × T] scratch
    att_part: wgpu::Buffer,       // [B × h × splits × (4 + d_h)] attention statistics and outputs per split
    gate_up: wgpu::Buffer,        // [B × 2f], rows [gate | up]
    hb: wgpu::Buffer,             // [B × f] silu(gate) ⊙ up
    logits: wgpu::Buffer,         // [V]
    tokens: wgpu::Buffer,         // [T] u32, token id per position
    rope: wgpu::Buffer,           // [T × d_h/2] (cos, sin)
    staging: wgpu::Buffer,        // [V] f32, MAP_READ
    att_staging: wgpu::Buffer,    // [h × T] f32, MAP_READ: one layer's weights, for the view
    argmax: wgpu::Buffer,         // [2] u32: argmax id, f32 bits of its logit
    argmax_staging: wgpu::Buffer, // [2] u32, MAP_READ
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
    pub counters: GpuCounters,
}

impl GpuModel {
    pub async fn load(
        g: &Gguf<'_>,
        cfg: &Config,
        context: usize,
        opts: GpuOptions,
        kv: KvType,
        src: &mut dyn ByteSource,
    ) -> Result<Self> {
        let ctx = GpuContext::with_options(opts).await?;
        Self::load_on(ctx, g, cfg, context, kv, src)
    }

    pub fn load_on(ctx: GpuContext, g: &Gguf<'_>, cfg: &Config, context: usize, kv: KvType, src: &mut dyn ByteSource) -> Result<Self> {
        let (d, kv, f, h, v) = (cfg.dim as u64, cfg.kv_dim() as u64, cfg.ffn_dim as u64, cfg.n_heads as u64, cfg.vocab_size as u64);
        let (t, b) = (context as u64, CHUNK as u64);
        check_limits(&ctx, g, cfg, context)?;
        let weights = Weights::upload(&ctx, g, cfg, src)?;
        let kv_cache = KvCache::new(&ctx, cfg, context, kv)?;
        let act = Activations {
            x: ctx.storage("x", b * d * 4)?,
            xb: ctx.storage("xb", b * d * 4)?,
            qkv: ctx.storage("qkv", b * (d + 2 * kv) * 4)?,
            att_out: ctx.storage("att_out", b * d * 4)?,
            att: ctx.storage("att", (cfg.n_layers as u64 + b) * h * t * 4)?,
            att_part: ctx.storage("attention splits", b * h * attention_splits(&ctx, context).1 as u64 * (4 + cfg.head_dim as u64) * 4)?,
            gate_up: ctx.storage("gate_up", b * 2 * f * 4)?,
            hb: ctx.storage("hb", b * f * 4)?,
            logits: ctx.storage("logits", v * 4)?,
            tokens: ctx.storage("tokens", t * 4)?,
            rope: ctx.storage_with("rope table", bytemuck::cast_slice(&rope_table(context, cfg.head_dim, cfg.rope_base)))?,
            staging: ctx.staging("logits staging", v * 4),
            att_staging: ctx.staging("attention staging", h * t * 4),
            argmax: ctx.storage("argmax", 8)?,
            argmax_staging: ctx.staging("argmax staging", 8),
        };
        let steps = StepTable::new(&ctx, context)?;
        let chunk_step = StepTable::chunk(&ctx);
        let decode = record_body(&ctx, cfg, &weights, &kv_cache, &act, context, &steps, None)?;
        let prefill = record_body(&ctx, cfg, &weights, &kv_cache, &act, context, &chunk_step, Some(CHUNK as u32))?;
        let head = record_head(&ctx, cfg, &weights, &act, &steps)?;
        let prefill_head = record_head(&ctx, cfg, &weights, &act, &chunk_step)?;
        let mut rec = Recorder::new(&ctx);
        rec.push("argmax", Kernel::Argmax, &[&act.argmax, &act.logits], &params::Argmax { n: cfg.vocab_size as u32 }, 1, false)?;
        let argmax = rec.finish("argmax", None)?;
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
            counters: GpuCounters::default(),
        })
    }

    pub fn dispatches_per_token(&self) -> usize {
        self.decode.len() + self.head.len()
    }

    /// GPU buffer bytes: weights, KV cache and activations.
    pub fn buffer_bytes(&self) -> u64 {
        let a = &self.act;
        let act: u64 = [
            &a.x,
            &a.xb,
            &a.qkv,
            &a.att_out,
            &a.att,
            &a.att_part,
            &a.gate_up,
            &a.hb,
            &a.logits,
            &a.tokens,
            &a.rope,
            &a.staging,
            &a.att_staging,
            &a.argmax,
            &a.argmax_staging,
        ]
        .iter()
        .map(|b| b.size())
        .sum();
        self.weights.bytes + self.kv.bytes_allocated() + act + self.steps.buffer.size() + self.chunk_step.buffer.size()
    }

    /// Processes `tokens` at positions start.., then reads back what `readback` asks for from the
    /// last position: the whole logits row, or only the argmax (8 bytes, picked on the GPU), or
    /// nothing. One token runs the decode program (one submit, no uniform writes); more run the
    /// prefill program, one submit per chunk of up to `CHUNK` tokens.
    pub async fn forward(&mut self, tokens: &[u32], start: usize, readback: Readback<'_>) -> Result<()> {
        let n = tokens.len();
        if start + n > self.kv.capacity {
            return Err(Error::ContextFull { used: start, capacity: self.kv.capacity });
        }
        let want = n > 0 && !matches!(readback, Readback::None);
        let t_encode = now_ms();
        self.ctx.queue.write_buffer(&self.act.tokens, start as u64 * 4, bytemuck::cast_slice(tokens));
        let chunks = if n == 1 { 1 } else { n.div_ceil(CHUNK) };
        for c in 0..chunks {
            let at = start + c * CHUNK;
            let len = (n - c * CHUNK).min(CHUNK);
            let last = c + 1 == chunks;
            let (body, head, steps, slot) = if n == 1 {
                (&self.decode, &self.head, &self.steps, at)
            } else {
                self.chunk_step.set_chunk(&self.ctx.queue, at, len);
                (&self.prefill, &self.prefill_head, &self.chunk_step, 0)
            };
            let mut enc = self.ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("forward") });
            {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("forward"), timestamp_writes: None });
                body.encode(&mut pass, steps, slot);
                self.counters.dispatches += body.len() as u64;
                if last && want {
                    head.encode(&mut pass, steps, slot);
                    self.counters.dispatches += head.len() as u64;
                    if matches!(readback, Readback::Argmax(_)) {
                        self.argmax.encode(&mut pass, steps, slot);
                        self.counters.dispatches += self.argmax.len() as u64;
                    }
                }
            }
            if last {
                match readback {
                    Readback::Logits(_) if want => {
                        enc.copy_buffer_to_buffer(&self.act.logits, 0, &self.act.staging, 0, self.act.logits.size())
                    }
                    Readback::Argmax(_) if want => enc.copy_buffer_to_buffer(&self.act.argmax, 0, &self.act.argmax_staging, 0, 8),
                    _ => {}
                }
            }
            self.ctx.queue.submit([enc.finish()]);
            self.counters.submits += 1;
        }
        self.counters.encode_ms += now_ms() - t_encode;
        if !want {
            return Ok(());
        }
        match readback {
            Readback::Logits(out) => {
                self.ctx.read_staging(&self.act.staging, bytemuck::cast_slice_mut(out)).await?;
                self.counters.readback_bytes += (out.len() * 4) as u64;
            }
            Readback::Argmax(out) => {
                let mut raw = [0u8; 8];
                self.ctx.read_staging(&self.act.argmax_staging, &mut raw).await?;
                let [a, b, c, d, e, f, g, h] = raw;
                *out = (u32::from_le_bytes([a, b, c, d]), f32::from_le_bytes([e, f, g, h]));
                self.counters.readback_bytes += 8;
            }
            Readback::None => {}
        }
        self.counters.maps += 1;
        Ok(())
    }

    /// Reads layer `l`'s attention weights for the last processed position: [h × n], n = positions
    /// cached. One extra copy and map, made only when the attention view asks.
    pub async fn attention_weights(&self, l: usize, n: usize) -> Result<Vec<f32>> {
        let (h, t) = (self.cfg.n_heads, self.kv.capacity);
        let bytes = (h * t * 4) as u64;
        let mut enc = self.ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("attention readback") });
        enc.copy_buffer_to_buffer(&self.act.att, l as u64 * bytes, &self.act.att_staging, 0, bytes);
        self.ctx.queue.submit([enc.finish()]);
        let mut raw = vec![0u8; bytes as usize];
        self.ctx.read_staging(&self.act.att_staging, &mut raw).await?;
        let all: Vec<f32> = bytemuck::pod_collect_to_vec(&raw);
        Ok(all.chunks(t).flat_map(|row| row[..n].iter().copied()).collect())
    }
}

/// Refuses a model or context that the device cannot hold, before anything is allocated: every
/// buffer the model will create is checked against the device's limits, largest first.
fn check_limits(ctx: &GpuContext, g: &Gguf<'_>, cfg: &Config, context: usize) -> Result<()> {
    let (h, t, l) = (cfg.n_heads as u64, context as u64, cfg.n_layers as u64);
    let needed = cfg.expected_tensors();
    let mut plan: Vec<(String, u64, bool)> = g
        .tensors
        .iter()
        .filter(|i| needed.iter().any(|(n, _)| *n == i.name))
        .map(|i| (format!("tensor `{}`", i.name), i.size, true))
        .collect();
    plan.push((format!("the KV cache of one layer (K or V) at {context} positions"), t * cfg.kv_dim() as u64 * 4, true));
    plan.push((format!("attention weights at {context} positions"), (l + CHUNK as u64) * h * t * 4, true));
    plan.push((format!("position uniforms for {context} positions"), t * crate::gpu::program::SLOT, false));
    plan.sort_by_key(|p| std::cmp::Reverse(p.1));
    for (what, size, storage) in plan {
        ctx.check_size(&what, size, storage)?;
    }
    if context > MAX_CONTEXT {
        return Err(Error::Option(format!(
            "a context of {context} positions is more than the {MAX_CONTEXT} the GPU attention kernels take"
        )));
    }
    Ok(())
}

/// y (+)= W·x at `out_offset` of each token row: the mat-vec kernel when decoding (`batch` is
/// None), the tiled mat-mul over a chunk's rows otherwise.
#[allow(clippy::too_many_arguments)]
fn project(
    rec: &mut Recorder,
    batch: Option<u32>,
    label: String,
    w: &weights::Tensor,
    out: (&wgpu::Buffer, u32),
    x: (&wgpu::Buffer, u32),
    out_offset: u32,
    accumulate: bool,
) -> Result<()> {
    let (rows, cols, row_bytes, accumulate) = (w.rows(), w.cols(), w.row_bytes(), accumulate as u32);
    match batch {
        None => {
            let p = params::MatVec { rows, cols, row_bytes, out_offset, accumulate };
            rec.push(label, Kernel::MatVec(w.ty), &[out.0, &w.buffer, x.0], &p, rows.div_ceil(rec.ctx().matvec_rows), true)
        }
        Some(b) => {
            let p = params::MatMul { rows, cols, row_bytes, out_offset, accumulate, y_stride: out.1, x_stride: x.1 };
            rec.push_tokens(
                label,
                Kernel::MatMul(w.ty),
                &[out.0, &w.buffer, x.0],
                &p,
                rows.div_ceil(rec.ctx().matmul_rows),
                true,
                b.div_ceil(MATMUL_TOKENS),
            )
        }
    }
}

/// Tokens per invocation of the mat-mul kernel (`TB` in shaders/matmul.wgsl).
const MATMUL_TOKENS: u32 = 8;

/// Query heads per attention workgroup: the largest of 4, 3, 2, 1 dividing the group size h / h_kv.
fn attention_group(cfg: &Config) -> u32 {
    let g = (cfg.n_heads / cfg.n_kv_heads) as u32;
    (1..=4).rev().find(|k| g.is_multiple_of(*k)).unwrap_or(1)
}

/// (S, ⌈T / S⌉): cache rows per attention split (the device's least, more for long contexts)
/// and the number of splits, at most 64.
fn attention_splits(ctx: &GpuContext, context: usize) -> (u32, u32) {
    let s = ctx.attention_split.max(context.div_ceil(64)) as u32;
    (s, (context as u32).div_ceil(s))
}

/// The longest context the attention kernels take: 64 splits of at most 256 rows (the rows of
/// one split are held in workgroup memory).
pub const MAX_CONTEXT: usize = 64 * 256;

/// Embedding + every layer: 1 + 10 · n_layers dispatches (13 per layer where q/k/v and gate/up
/// are not fused), for one position (`batch` None, bound to the per-position table) or for a
/// chunk of up to `batch` tokens (bound to the chunk table).
#[allow(clippy::too_many_arguments)]
fn record_body(
    ctx: &GpuContext,
    cfg: &Config,
    w: &Weights,
    kv: &KvCache,
    a: &Activations,
    context: usize,
    steps: &StepTable,
    batch: Option<u32>,
) -> Result<Program> {
    let (d, kvd, f, h, hkv, hd) =
        (cfg.dim as u32, cfg.kv_dim() as u32, cfg.ffn_dim as u32, cfg.n_heads as u32, cfg.n_kv_heads as u32, cfg.head_dim as u32);
    if hd % 4 != 0 || hd > 256 {
        return Err(Error::NotSupported(format!("head dimension {hd} (the GPU kernels take a multiple of 4, at most 256)")));
    }
    let z = batch.unwrap_or(1);
    let qkv_row = d + 2 * kvd;
    let mut rec = Recorder::new(ctx);
    let embd = w.get("token_embd.weight");
    rec.push_tokens(
        "embed",
        Kernel::Embed(embd.ty),
        &[&a.x, &embd.buffer, &a.tokens],
        &params::Embed { dim: d, row_bytes: embd.row_bytes() },
        d / 32,
        true,
        z,
    )?;
    let norm = params::RmsNorm { n: d, eps: cfg.rms_eps, last: 0 };
    let group = attention_group(cfg);
    let (split, n_splits) = attention_splits(ctx, context);
    for l in 0..cfg.n_layers {
        let t = |n: &str| w.layer(l, n);
        // x → xb = rmsnorm(x) → q, k, v (into qkv) → RoPE on q and k, k and v into cache rows.
        rec.push_tokens(format!("L{l}.attn_norm"), Kernel::RmsNorm, &[&a.xb, &a.x, &t("attn_norm").buffer], &norm, 1, false, z)?;
        if let Some(wqkv) = w.fused(l, "attn_qkv") {
            project(&mut rec, batch, format!("L{l}.attn_qkv"), wqkv, (&a.qkv, qkv_row), (&a.xb, d), 0, false)?;
        } else {
            project(&mut rec, batch, format!("L{l}.attn_q"), t("attn_q"), (&a.qkv, qkv_row), (&a.xb, d), 0, false)?;
            project(&mut rec, batch, format!("L{l}.attn_k"), t("attn_k"), (&a.qkv, qkv_row), (&a.xb, d), d, false)?;
            project(&mut rec, batch, format!("L{l}.attn_v"), t("attn_v"), (&a.qkv, qkv_row), (&a.xb, d), d + kvd, false)?;
        }
        rec.push_tokens(
            format!("L{l}.rope_kv"),
            Kernel::RopeKv { kv_f16: kv.f16() },
            &[&a.qkv, &kv.k[l], &kv.v[l], &a.rope],
            &params::RopeKv { n_heads: h, n_kv_heads: hkv, head_dim: hd },
            (h + 2 * hkv) * hd / 2,
            true,
            z,
        )?;
        // Each query attends over cache rows 0..=its position; x += W_o · att_out.
        let ap = params::Attention {
            n_heads: h,
            n_kv_heads: hkv,
            att_stride: context as u32,
            att_offset: (l * cfg.n_heads * context) as u32,
            scratch_offset: (cfg.n_layers * cfg.n_heads * context) as u32,
            scale: 1.0 / (hd as f32).sqrt(),
            split,
            n_splits,
        };
        rec.push_tokens(
            format!("L{l}.attention"),
            Kernel::Attention { head_dim: hd, group, kv_f16: kv.f16() },
            &[&a.att_part, &a.att, &a.qkv, &kv.k[l], &kv.v[l]],
            &ap,
            h / group * n_splits,
            false,
            z,
        )?;
        let mp = params::AttentionMerge {
            n_heads: h,
            head_dim: hd,
            att_stride: ap.att_stride,
            att_offset: ap.att_offset,
            scratch_offset: ap.scratch_offset,
            split,
            n_splits,
        };
        rec.push_tokens(format!("L{l}.attention_merge"), Kernel::AttentionMerge, &[&a.att_out, &a.att, &a.att_part], &mp, h, false, z)?;
        project(&mut rec, batch, format!("L{l}.attn_output"), t("attn_output"), (&a.x, d), (&a.att_out, d), 0, true)?;
        // x += W_down · (silu(W_gate · xb) ⊙ W_up · xb), xb = rmsnorm(x).
        rec.push_tokens(format!("L{l}.ffn_norm"), Kernel::RmsNorm, &[&a.xb, &a.x, &t("ffn_norm").buffer], &norm, 1, false, z)?;
        if let Some(wgu) = w.fused(l, "ffn_gate_up") {
            project(&mut rec, batch, format!("L{l}.ffn_gate_up"), wgu, (&a.gate_up, 2 * f), (&a.xb, d), 0, false)?;
        } else {
            project(&mut rec, batch, format!("L{l}.ffn_gate"), t("ffn_gate"), (&a.gate_up, 2 * f), (&a.xb, d), 0, false)?;
            project(&mut rec, batch, format!("L{l}.ffn_up"), t("ffn_up"), (&a.gate_up, 2 * f), (&a.xb, d), f, false)?;
        }
        rec.push_tokens(format!("L{l}.swiglu"), Kernel::SwiGlu, &[&a.hb, &a.gate_up], &params::SwiGlu { n: f }, f, true, z)?;
        project(&mut rec, batch, format!("L{l}.ffn_down"), t("ffn_down"), (&a.x, d), (&a.hb, f), 0, true)?;
    }
    rec.finish(if batch.is_some() { "prefill" } else { "decode" }, Some(steps))
}

/// logits = W_out · rmsnorm(x of the last token), W_out = token_embd when the output is tied.
fn record_head(ctx: &GpuContext, cfg: &Config, w: &Weights, a: &Activations, steps: &StepTable) -> Result<Program> {
    let mut rec = Recorder::new(ctx);
    rec.push(
        "output_norm",
        Kernel::RmsNorm,
        &[&a.xb, &a.x, &w.get("output_norm.weight").buffer],
        &params::RmsNorm { n: cfg.dim as u32, eps: cfg.rms_eps, last: 1 },
        1,
        false,
    )?;
    let out = if cfg.tied_output { w.get("token_embd.weight") } else { w.get("output.weight") };
    project(&mut rec, None, "output".into(), out, (&a.logits, 0), (&a.xb, 0), 0, false)?;
    rec.finish("head", Some(steps))
}
