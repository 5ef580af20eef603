//! The GPU model: weights, activations and KV cache on the device, and the forward pass as two
//! recorded programs — `body` (embedding + every layer, for one position) and `head` (final norm +
//! logits) — replayed per token inside one compute pass, one submit and one readback.

pub mod kv_cache;
pub mod weights;

use crate::clock::now_ms;
use crate::config::Config;
use crate::cpu::rope_table;
use crate::error::{Error, Result};
use crate::gguf::{ByteSource, Gguf};
use crate::gpu::{params, GpuContext, Kernel, Program, Recorder, StepTable};
use kv_cache::KvCache;
use weights::Weights;

/// Activation buffers, each allocated once for the model's shapes.
struct Activations {
    x: wgpu::Buffer,              // [d] residual stream
    xb: wgpu::Buffer,             // [d] normed sublayer input
    qkv: wgpu::Buffer,            // [d + 2·kv] = [q | k | v] of the current token
    att_out: wgpu::Buffer,        // [d] attention output, heads concatenated
    att: wgpu::Buffer,            // [L × h × T] attention weights of the current token, per layer
    gate_up: wgpu::Buffer,        // [2f] = [gate | up]
    hb: wgpu::Buffer,             // [f] silu(gate) ⊙ up
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
    body: Program,
    head: Program,
    /// The greedy pick on the GPU, after `head`.
    argmax: Program,
    pub counters: GpuCounters,
}

impl GpuModel {
    pub async fn load(g: &Gguf<'_>, cfg: &Config, context: usize, src: &mut dyn ByteSource) -> Result<Self> {
        let ctx = GpuContext::new().await?;
        Self::load_on(ctx, g, cfg, context, src)
    }

    pub fn load_on(ctx: GpuContext, g: &Gguf<'_>, cfg: &Config, context: usize, src: &mut dyn ByteSource) -> Result<Self> {
        let (d, kv, f, h, v) = (cfg.dim as u64, cfg.kv_dim() as u64, cfg.ffn_dim as u64, cfg.n_heads as u64, cfg.vocab_size as u64);
        let t = context as u64;
        check_limits(&ctx, g, cfg, context)?;
        let weights = Weights::upload(&ctx, g, cfg, src)?;
        let kv_cache = KvCache::new(&ctx, cfg, context)?;
        let act = Activations {
            x: ctx.storage("x", d * 4)?,
            xb: ctx.storage("xb", d * 4)?,
            qkv: ctx.storage("qkv", (d + 2 * kv) * 4)?,
            att_out: ctx.storage("att_out", d * 4)?,
            att: ctx.storage("att", cfg.n_layers as u64 * h * t * 4)?,
            gate_up: ctx.storage("gate_up", 2 * f * 4)?,
            hb: ctx.storage("hb", f * 4)?,
            logits: ctx.storage("logits", v * 4)?,
            tokens: ctx.storage("tokens", t * 4)?,
            rope: ctx.storage_with("rope table", bytemuck::cast_slice(&rope_table(context, cfg.head_dim, cfg.rope_base)))?,
            staging: ctx.staging("logits staging", v * 4),
            att_staging: ctx.staging("attention staging", h * t * 4),
            argmax: ctx.storage("argmax", 8)?,
            argmax_staging: ctx.staging("argmax staging", 8),
        };
        let steps = StepTable::new(&ctx, context)?;
        let body = record_body(&ctx, cfg, &weights, &kv_cache, &act, context, &steps)?;
        let head = record_head(&ctx, cfg, &weights, &act)?;
        let mut rec = Recorder::new(&ctx);
        rec.push("argmax", Kernel::Argmax, &[&act.argmax, &act.logits], &params::Argmax { n: cfg.vocab_size as u32 }, 1, false)?;
        let argmax = rec.finish("argmax", None)?;
        ctx.check_errors()?;
        Ok(GpuModel { ctx, cfg: cfg.clone(), weights, kv: kv_cache, act, steps, body, head, argmax, counters: GpuCounters::default() })
    }

    pub fn dispatches_per_token(&self) -> usize {
        self.body.len() + self.head.len()
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
        self.weights.bytes + self.kv.bytes_allocated() + act + self.steps.buffer.size()
    }

    /// Processes `tokens` at positions start.. in one command buffer and one submit, then reads
    /// back what `readback` asks for from the last position: the whole logits row, or only the
    /// argmax (8 bytes, picked on the GPU), or nothing.
    pub async fn forward(&mut self, tokens: &[u32], start: usize, readback: Readback<'_>) -> Result<()> {
        let t_encode = now_ms();
        let n = tokens.len();
        if start + n > self.kv.capacity {
            return Err(Error::ContextFull { used: start, capacity: self.kv.capacity });
        }
        let want = n > 0 && !matches!(readback, Readback::None);
        self.ctx.queue.write_buffer(&self.act.tokens, start as u64 * 4, bytemuck::cast_slice(tokens));
        let mut enc = self.ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("forward") });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("forward"), timestamp_writes: None });
            for i in 0..n {
                self.body.encode(&mut pass, &self.steps, start + i);
            }
            if want {
                self.head.encode(&mut pass, &self.steps, start + n - 1);
                self.counters.dispatches += self.head.len() as u64;
            }
            if want && matches!(readback, Readback::Argmax(_)) {
                self.argmax.encode(&mut pass, &self.steps, start + n - 1);
                self.counters.dispatches += self.argmax.len() as u64;
            }
        }
        match readback {
            Readback::Logits(_) if want => enc.copy_buffer_to_buffer(&self.act.logits, 0, &self.act.staging, 0, self.act.logits.size()),
            Readback::Argmax(_) if want => enc.copy_buffer_to_buffer(&self.act.argmax, 0, &self.act.argmax_staging, 0, 8),
            _ => {}
        }
        self.ctx.queue.submit([enc.finish()]);
        self.counters.encode_ms += now_ms() - t_encode;
        self.counters.submits += 1;
        self.counters.dispatches += (n * self.body.len()) as u64;
        self.kv.len = start + n;
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
    plan.push((format!("attention weights at {context} positions"), l * h * t * 4, true));
    plan.push((format!("position uniforms for {context} positions"), t * crate::gpu::program::SLOT, false));
    plan.sort_by_key(|p| std::cmp::Reverse(p.1));
    for (what, size, storage) in plan {
        ctx.check_size(&what, size, storage)?;
    }
    Ok(())
}

fn matvec(
    rec: &mut Recorder,
    label: String,
    w: &weights::Tensor,
    out: &wgpu::Buffer,
    x: &wgpu::Buffer,
    out_offset: u32,
    accumulate: bool,
) -> Result<()> {
    let p = params::MatVec { rows: w.rows(), cols: w.cols(), row_bytes: w.row_bytes(), out_offset, accumulate: accumulate as u32 };
    rec.push(label, Kernel::MatVec(w.ty), &[out, &w.buffer, x], &p, w.rows(), true)
}

/// Embedding + every layer for one position: 1 + 13 · n_layers dispatches.
fn record_body(
    ctx: &GpuContext,
    cfg: &Config,
    w: &Weights,
    kv: &KvCache,
    a: &Activations,
    context: usize,
    steps: &StepTable,
) -> Result<Program> {
    let (d, kvd, f, h, hkv, hd) =
        (cfg.dim as u32, cfg.kv_dim() as u32, cfg.ffn_dim as u32, cfg.n_heads as u32, cfg.n_kv_heads as u32, cfg.head_dim as u32);
    let mut rec = Recorder::new(ctx);
    let embd = w.get("token_embd.weight");
    rec.push(
        "embed",
        Kernel::Embed(embd.ty),
        &[&a.x, &embd.buffer, &a.tokens],
        &params::Embed { dim: d, row_bytes: embd.row_bytes() },
        d / 32,
        true,
    )?;
    let norm = params::RmsNorm { n: d, eps: cfg.rms_eps };
    for l in 0..cfg.n_layers {
        let t = |n: &str| w.layer(l, n);
        // x → xb = rmsnorm(x) → q, k, v (into qkv) → RoPE on q and k → k, v into cache row pos.
        rec.push(format!("L{l}.attn_norm"), Kernel::RmsNorm, &[&a.xb, &a.x, &t("attn_norm").buffer], &norm, 1, false)?;
        matvec(&mut rec, format!("L{l}.attn_q"), t("attn_q"), &a.qkv, &a.xb, 0, false)?;
        matvec(&mut rec, format!("L{l}.attn_k"), t("attn_k"), &a.qkv, &a.xb, d, false)?;
        matvec(&mut rec, format!("L{l}.attn_v"), t("attn_v"), &a.qkv, &a.xb, d + kvd, false)?;
        rec.push(
            format!("L{l}.rope"),
            Kernel::Rope,
            &[&a.qkv, &a.rope],
            &params::Rope { n_rot_heads: h + hkv, head_dim: hd },
            (h + hkv) * hd / 2,
            true,
        )?;
        rec.push(
            format!("L{l}.kv_write"),
            Kernel::KvWrite,
            &[&kv.k[l], &kv.v[l], &a.qkv],
            &params::KvWrite { q_dim: d, kv_dim: kvd },
            kvd,
            true,
        )?;
        // q attends over cache rows 0..=pos; x += W_o · att_out.
        let ap = params::Attention {
            n_heads: h,
            n_kv_heads: hkv,
            head_dim: hd,
            att_stride: context as u32,
            att_offset: (l * cfg.n_heads * context) as u32,
            scale: 1.0 / (hd as f32).sqrt(),
        };
        rec.push(format!("L{l}.attention"), Kernel::Attention, &[&a.att_out, &a.att, &a.qkv, &kv.k[l], &kv.v[l]], &ap, h, false)?;
        matvec(&mut rec, format!("L{l}.attn_output"), t("attn_output"), &a.x, &a.att_out, 0, true)?;
        // x += W_down · (silu(W_gate · xb) ⊙ W_up · xb), xb = rmsnorm(x).
        rec.push(format!("L{l}.ffn_norm"), Kernel::RmsNorm, &[&a.xb, &a.x, &t("ffn_norm").buffer], &norm, 1, false)?;
        matvec(&mut rec, format!("L{l}.ffn_gate"), t("ffn_gate"), &a.gate_up, &a.xb, 0, false)?;
        matvec(&mut rec, format!("L{l}.ffn_up"), t("ffn_up"), &a.gate_up, &a.xb, f, false)?;
        rec.push(format!("L{l}.swiglu"), Kernel::SwiGlu, &[&a.hb, &a.gate_up], &params::SwiGlu { n: f }, f, true)?;
        matvec(&mut rec, format!("L{l}.ffn_down"), t("ffn_down"), &a.x, &a.hb, 0, true)?;
    }
    rec.finish("body", Some(steps))
}

/// logits = W_out · rmsnorm(x), W_out = token_embd when the output is tied.
fn record_head(ctx: &GpuContext, cfg: &Config, w: &Weights, a: &Activations) -> Result<Program> {
    let mut rec = Recorder::new(ctx);
    rec.push(
        "output_norm",
        Kernel::RmsNorm,
        &[&a.xb, &a.x, &w.get("output_norm.weight").buffer],
        &params::RmsNorm { n: cfg.dim as u32, eps: cfg.rms_eps },
        1,
        false,
    )?;
    let out = if cfg.tied_output { w.get("token_embd.weight") } else { w.get("output.weight") };
    matvec(&mut rec, "output".into(), out, &a.logits, &a.xb, 0, false)?;
    rec.finish("head", None)
}
