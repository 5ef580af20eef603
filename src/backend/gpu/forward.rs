//! The forward pass as recorded programs, read top to bottom like the CPU reference's `forward`:
//! `decode` (embedding + every layer for one position, with mat-vec kernels, bound to the
//! per-position step table) and `prefill` (the same layers for a chunk of up to B tokens, with
//! tiled mat-mul kernels and causal attention over the cache), each followed by a `head` (final
//! norm + logits of the last token), then, when the engine wants them, the greedy pick or the
//! next-token table made on the GPU.

use crate::backend::gpu::kv_cache::KvCache;
use crate::backend::gpu::model::Activations;
use crate::backend::gpu::ops::attention::{self, AttentionBuffers, Plan};
use crate::backend::gpu::ops::rms_norm::{self, NormRows};
use crate::backend::gpu::ops::rope_kv::{self, RopeKvBuffers};
use crate::backend::gpu::ops::{add_bias, argmax, embed, glu, head_norm, project, top_k, Heads, Rows, Tokens, Write};
use crate::backend::gpu::weights::{self, Weights};
use crate::backend::gpu::{GpuContext, Program, Recorder, StepTable};
use crate::core::config::Config;
use crate::error::Result;

/// Every program of the model, recorded once at load.
pub struct Programs {
    pub decode: Program,
    pub prefill: Program,
    pub head: Program,
    pub prefill_head: Program,
    /// The greedy pick on the GPU, after a head.
    pub argmax: Program,
    /// The next-token table on the GPU, after a head.
    pub top: Program,
}

impl Programs {
    /// Records the programs over the model's buffers: decode and its head bound to the
    /// per-position table, prefill and its head to the chunk table (`steps`).
    pub fn record(
        ctx: &GpuContext,
        cfg: &Config,
        w: &Weights,
        kv: &KvCache,
        a: &Activations,
        plan: &Plan,
        (steps, chunk_steps): (&StepTable, &StepTable),
    ) -> Result<Self> {
        let layers = Layers { cfg, w, kv, a, plan };
        let chunk = Tokens::Chunk(ctx.tuning.prefill_chunk);
        let mut rec = Recorder::new(ctx);
        argmax::record(&mut rec, &a.argmax, &a.logits, cfg.vocab_size as u32)?;
        let argmax = rec.finish("argmax", None)?;
        let mut rec = Recorder::new(ctx);
        top_k::record(&mut rec, &a.top, &a.top_part, &a.logits, cfg.vocab_size as u32)?;
        let top = rec.finish("top-k", None)?;
        Ok(Programs {
            decode: layers.record(ctx, Tokens::One, steps)?,
            prefill: layers.record(ctx, chunk, chunk_steps)?,
            head: record_head(ctx, cfg, w, a, steps)?,
            prefill_head: record_head(ctx, cfg, w, a, chunk_steps)?,
            argmax,
            top,
        })
    }
}

/// What the layers read and write, and the attention's plan, for recording them.
struct Layers<'a> {
    cfg: &'a Config,
    w: &'a Weights,
    kv: &'a KvCache,
    a: &'a Activations,
    plan: &'a Plan,
}

impl Layers<'_> {
    /// Embedding + every layer: 1 + 10 · n_layers dispatches for Llama (13 per layer where q/k/v
    /// and gate/up are not fused; + 1 for Qwen 2's biases, + 1 for q/k head norms, + 2 for
    /// Gemma's post-norms), for one position (bound to the per-position table) or for a chunk
    /// (bound to the chunk table).
    fn record(&self, ctx: &GpuContext, tokens: Tokens, steps: &StepTable) -> Result<Program> {
        let (cfg, w, a) = (self.cfg, self.w, self.a);
        let mut rec = Recorder::new(ctx);
        embed::record(&mut rec, tokens, &a.x, w.table("token_embd.weight"), &a.tokens, cfg.embed_scale)?;
        for l in 0..cfg.n_layers {
            self.attention_block(&mut rec, tokens, l)?;
            self.ffn_block(&mut rec, tokens, l)?;
        }
        rec.finish(if tokens == Tokens::One { "decode" } else { "prefill" }, Some(steps))
    }

    /// x → xb = rmsnorm(x) → q, k, v (into qkv; + biases; heads normed) → RoPE on q and k, k and
    /// v into their cache rows → each query attends over the positions it sees → x += W_o ·
    /// att_out (normed first with post-norms).
    fn attention_block(&self, r: &mut Recorder, tokens: Tokens, l: usize) -> Result<()> {
        let (cfg, w, kv, a) = (self.cfg, self.w, self.kv, self.a);
        let heads = Heads::of(cfg);
        let t = |n: &str| w.layer(l, n);
        let norm = (t("attn_norm"), cfg.rms_eps);
        rms_norm::record(r, tokens, format!("L{l}.attn_norm"), &a.xb, &a.x, norm, NormRows::Each, Write::Set)?;
        self.project_group(r, tokens, l, "attn_qkv", Rows::new(&a.qkv, heads.qkv_row()))?;
        if cfg.qkv_bias {
            add_bias::record(r, tokens, format!("L{l}.attn_qkv_bias"), &a.qkv, w.get(&format!("blk.{l}.attn_qkv.bias")))?;
        }
        if cfg.qk_norm {
            head_norm::record(r, tokens, format!("L{l}.qk_norm"), &a.qkv, [t("attn_q_norm"), t("attn_k_norm")], heads, cfg.rms_eps)?;
        }
        let sliding = cfg.is_sliding(l);
        let table = match (&a.rope_local, sliding) {
            (Some(local), true) => local,
            _ => &a.rope,
        };
        let rows = kv.rows[l] as u32;
        let rb = RopeKvBuffers { qkv: &a.qkv, k_cache: &kv.k[l], v_cache: &kv.v[l], table, rows };
        rope_kv::record(r, tokens, format!("L{l}.rope_kv"), &rb, heads, kv.ty, cfg.rope.neox)?;
        let bufs = AttentionBuffers { out: &a.att_out, att: &a.att, part: &a.att_part, qkv: &a.qkv, k_cache: &kv.k[l], v_cache: &kv.v[l] };
        let window = if sliding { cfg.sliding_window as u32 } else { 0 };
        attention::record(r, tokens, &format!("L{l}"), &bufs, &self.plan.shape(tokens).layer(l).windowed(window, rows))?;
        let (out, write) = self.sublayer_out();
        project::record(r, tokens, format!("L{l}.attn_output"), t("attn_output"), out, Rows::new(&a.att_out, cfg.q_dim() as u32), write)?;
        self.post_norm(r, tokens, l, "post_attention_norm")
    }

    /// x += W_down · (act(W_gate · xb) ⊙ W_up · xb), xb = rmsnorm(x) (normed first with
    /// post-norms).
    fn ffn_block(&self, r: &mut Recorder, tokens: Tokens, l: usize) -> Result<()> {
        let (cfg, a) = (self.cfg, self.a);
        let f = cfg.ffn_dim as u32;
        let norm = (self.w.layer(l, "ffn_norm"), cfg.rms_eps);
        rms_norm::record(r, tokens, format!("L{l}.ffn_norm"), &a.xb, &a.x, norm, NormRows::Each, Write::Set)?;
        self.project_group(r, tokens, l, "ffn_gate_up", Rows::new(&a.gate_up, 2 * f))?;
        glu::record(r, tokens, format!("L{l}.glu"), &a.hb, &a.gate_up, f, cfg.act)?;
        let (out, write) = self.sublayer_out();
        project::record(r, tokens, format!("L{l}.ffn_down"), self.w.layer(l, "ffn_down"), out, Rows::new(&a.hb, f), write)?;
        self.post_norm(r, tokens, l, "post_ffw_norm")
    }

    /// Where a sublayer's output goes: straight into the residual stream, or (post-norms) into
    /// xb, to be normed and then added.
    fn sublayer_out(&self) -> (Rows<'_>, Write) {
        let d = self.cfg.dim as u32;
        match self.cfg.post_norms {
            true => (Rows::new(&self.a.xb, d), Write::Set),
            false => (Rows::new(&self.a.x, d), Write::Add),
        }
    }

    /// x += rmsnorm(xb) ⊙ w, where the architecture norms a sublayer's output.
    fn post_norm(&self, r: &mut Recorder, tokens: Tokens, l: usize, name: &str) -> Result<()> {
        if !self.cfg.post_norms {
            return Ok(());
        }
        let norm = (self.w.layer(l, name), self.cfg.rms_eps);
        rms_norm::record(r, tokens, format!("L{l}.{name}"), &self.a.x, &self.a.xb, norm, NormRows::Each, Write::Add)
    }

    /// out[t] = [W_a | W_b | …] · xb[t] for the members of a group that read the same input
    /// (`weights::FUSED`): one projection where they are stored together, else one per member,
    /// each writing after the rows of the one before.
    fn project_group(&self, r: &mut Recorder, tokens: Tokens, l: usize, group: &str, out: Rows) -> Result<()> {
        let x = Rows::new(&self.a.xb, self.cfg.dim as u32);
        if let Some(w) = self.w.fused(l, group) {
            return project::record(r, tokens, format!("L{l}.{group}"), w, out, x, Write::Set);
        }
        let mut offset = 0;
        for m in weights::members(group) {
            let w = self.w.layer(l, m);
            project::record(r, tokens, format!("L{l}.{m}"), w, out.at(offset), x, Write::Set)?;
            offset += w.rows();
        }
        Ok(())
    }
}

/// logits = W_out · rmsnorm(x of the last token), W_out = token_embd when the output is tied.
fn record_head(ctx: &GpuContext, cfg: &Config, w: &Weights, a: &Activations, steps: &StepTable) -> Result<Program> {
    let mut rec = Recorder::new(ctx);
    let norm = (w.get("output_norm.weight"), cfg.rms_eps);
    rms_norm::record(&mut rec, Tokens::One, "output_norm".into(), &a.xb, &a.x, norm, NormRows::LastIntoFirst, Write::Set)?;
    let out = w.table(if cfg.tied_output { "token_embd.weight" } else { "output.weight" });
    let d = cfg.dim as u32;
    for (i, part) in out.iter().enumerate() {
        let logits = Rows::new(&a.logits, 0).at(part.first_row);
        let label = if out.len() == 1 { "output".to_string() } else { format!("output part {i}") };
        project::record(&mut rec, Tokens::One, label, &part.tensor, logits, Rows::new(&a.xb, d), Write::Set)?;
    }
    rec.finish("head", Some(steps))
}
