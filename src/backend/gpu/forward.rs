//! The forward pass as recorded programs, read top to bottom like the CPU reference's `forward`:
//! `decode` (embedding + every layer for one position, with mat-vec kernels, bound to the
//! per-position step table) and `prefill` (the same layers for a chunk of up to B tokens, with
//! tiled mat-mul kernels and causal attention over the cache), each followed by a `head` (final
//! norm + logits of the last token), then, when the engine wants them, the greedy pick or the
//! next-token table made on the GPU.
//!
//! The decode step is fused where the model allows (`Fusion`): five dispatches a layer —
//!   q|k|v = W_qkv · rmsnorm(x) (+ bias)                      the norm in the projection's prologue
//!   attention pass 1, q and k normed and turned, k and v appended   in place of rope_kv, head_norm
//!   x += W_o · merge(splits)                                 the merge in the prologue
//!   hb = act(W_gate · rmsnorm(x)) ⊙ (W_up · rmsnorm(x))       norm prologue, gated activation epilogue
//!   x += W_down · hb
//! With Gemma's post-norms the projections write the sublayer's output, and the next norm's
//! prologue adds it (normed) to the residual stream first, which moves between two buffers (each
//! prologue reads one and writes the other). The head keeps its norm as a dispatch of its own
//! (see `record_decode`). Prefill keeps one dispatch per op. A block cache (Q8_0, Q4_0) takes
//! RoPE and its append (`kv_quantize`) as two dispatches before attention's pass 1: seven a layer.

use crate::backend::gpu::context::{FUSE_ATTENTION, FUSE_GLU, FUSE_MERGE, FUSE_NORM};
use crate::backend::gpu::kv_cache::KvCache;
use crate::backend::gpu::model::Activations;
use crate::backend::gpu::ops::attention::{self, AttentionBuffers, Fresh, Plan};
use crate::backend::gpu::ops::project::{Input, Output};
use crate::backend::gpu::ops::rms_norm::{self, NormRows};
use crate::backend::gpu::ops::rope_kv::{self, RopeKvBuffers};
use crate::backend::gpu::ops::{add_bias, argmax, embed, glu, head_norm, kv_quantize, project, top_k, Heads, Rows, Tokens, Write};
use crate::backend::gpu::weights::{Tensor, Weights};
use crate::backend::gpu::{GpuContext, Program, Recorder, StepTable};
use crate::core::config::{Config, KvType};
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
        let layers = Layers { cfg, w, kv, a, plan, fusion: Fusion::of(ctx, cfg, kv.ty) };
        let chunk = Tokens::Chunk(ctx.tuning.prefill_chunk);
        let mut rec = Recorder::new(ctx);
        argmax::record(&mut rec, &a.argmax, &a.logits, cfg.vocab_size as u32)?;
        let argmax = rec.finish("argmax", None)?;
        let mut rec = Recorder::new(ctx);
        top_k::record(&mut rec, &a.top, &a.top_part, &a.logits, cfg.vocab_size as u32)?;
        let top = rec.finish("top-k", None)?;
        let (decode, head) = layers.record_decode(ctx, steps)?;
        Ok(Programs {
            decode,
            head,
            prefill: layers.record(ctx, chunk, chunk_steps)?,
            prefill_head: record_head(ctx, cfg, w, a, chunk_steps)?,
            argmax,
            top,
        })
    }
}

/// Which ops of the decode step are fused, decided once for the model and adapter: asked for
/// (`GpuOptions::fuse`), and possible: the residual stream and attention's output small enough
/// to stage in a workgroup (`project::stages`), the heads' RoPE halves whole vec4s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fusion {
    /// RMSNorm (and Gemma's post-norm residual add) in the prologue of the projection after it.
    pub norm: bool,
    /// RoPE, q/k head norms and the cache append in attention's first pass.
    pub attention: bool,
    /// Attention's split merge in the output projection's prologue (either form of the first
    /// pass leaves its splits to it).
    pub merge: bool,
    /// The gated activation in the gate/up projection's epilogue.
    pub glu: bool,
}

impl Fusion {
    /// A block cache (`kv`: Q8_0, Q4_0) is appended by its own pass (`kv_quantize`): attention
    /// is not fused with it.
    pub fn of(ctx: &GpuContext, cfg: &Config, kv: KvType) -> Self {
        let on = |bit: u32| ctx.fuse & bit != 0;
        let attention = on(FUSE_ATTENTION) && attention::can_fuse(cfg.head_dim as u32, cfg.rope.neox) && kv.blocks().is_none();
        Fusion {
            norm: on(FUSE_NORM) && project::stages(cfg.dim as u32),
            attention,
            merge: on(FUSE_MERGE) && project::stages(cfg.q_dim() as u32),
            glu: on(FUSE_GLU),
        }
    }

    fn any(&self) -> bool {
        self.norm || self.attention || self.glu
    }
}

/// What the layers read and write, and the attention's plan, for recording them.
struct Layers<'a> {
    cfg: &'a Config,
    w: &'a Weights,
    kv: &'a KvCache,
    a: &'a Activations,
    plan: &'a Plan,
    fusion: Fusion,
}

impl<'a> Layers<'a> {
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
        self.rope_kv(r, tokens, l)?;
        let (_, rows, window) = self.layer_cache(l);
        let bufs = AttentionBuffers {
            out: &a.att_out,
            att: &a.att,
            part: &a.att_part,
            qkv: &a.qkv,
            k_cache: &kv.k[l],
            v_cache: &kv.v[l],
            fresh: None,
            merge_later: false,
        };
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
    /// (`weights::FUSED`): one projection per run of members stored together, each writing
    /// after the rows of the one before.
    fn project_group(&self, r: &mut Recorder, tokens: Tokens, l: usize, group: &str, out: Rows) -> Result<()> {
        let x = Rows::new(&self.a.xb, self.cfg.dim as u32);
        self.each_run(l, group, out, |w, out, label| project::record(r, tokens, label, w, out, x, Write::Set))
    }

    /// Calls `f(tensor, out at its rows, label)` for each stored run of a group.
    fn each_run(&self, l: usize, group: &str, out: Rows, mut f: impl FnMut(&Tensor, Rows, String) -> Result<()>) -> Result<()> {
        let runs = self.w.group(l, group);
        let mut offset = 0;
        for (i, w) in runs.iter().enumerate() {
            let label = if runs.len() == 1 { format!("L{l}.{group}") } else { format!("L{l}.{group}.{i}") };
            f(w, out.at(offset), label)?;
            offset += w.rows();
        }
        Ok(())
    }
}

/// The residual stream of a fused decode step: the buffer that holds it, and the output of the
/// last sublayer where a post-norm still has to add it (in `xb`, Gemma).
struct Residual<'a> {
    x: [&'a wgpu::Buffer; 2],
    cur: usize,
    /// The post-norm weights of the sublayer output waiting in `xb`.
    pending: Option<&'a Tensor>,
    sub: &'a wgpu::Buffer,
    d: u32,
}

impl<'a> Residual<'a> {
    fn new(a: &'a Activations, d: u32) -> Self {
        Residual { x: [&a.x, &a.x2], cur: 0, pending: None, sub: &a.xb, d }
    }

    /// A projection's input: the stream normed by `weight` — after the pending sublayer output is
    /// added, normed, into the other buffer, which then holds the stream. Unfused (`norm`
    /// false), the norms are dispatches of their own and the input is `xb`.
    fn input(&mut self, r: &mut Recorder, norm: bool, label: String, weight: &'a Tensor, eps: f32) -> Result<Input<'a>> {
        let x = self.x[self.cur];
        let post = self.pending.take();
        if !norm {
            if let Some(post) = post {
                rms_norm::record(r, Tokens::One, format!("{label}.post_norm"), x, self.sub, (post, eps), NormRows::Each, Write::Add)?;
            }
            rms_norm::record(r, Tokens::One, label, self.sub, x, (weight, eps), NormRows::Each, Write::Set)?;
            return Ok(Input::Rows(Rows::new(self.sub, self.d)));
        }
        Ok(match post {
            None => Input::Norm { x, weight, eps },
            Some(post) => {
                self.cur ^= 1;
                Input::PreAdd { x, sub: self.sub, post, x_next: self.x[self.cur], weight, eps }
            }
        })
    }

    /// Where a sublayer's output projection writes: added to the stream, or (a post-norm
    /// `post`) into `xb`, to be added by the next input.
    fn output(&mut self, post: Option<&'a Tensor>) -> (Rows<'a>, Write) {
        self.pending = post;
        match post {
            None => (Rows::new(self.x[self.cur], self.d), Write::Add),
            Some(_) => (Rows::new(self.sub, self.d), Write::Set),
        }
    }
}

impl<'a> Layers<'a> {
    /// The decode program and its head: fused (`Fusion`), or as prefill records them.
    fn record_decode(&self, ctx: &GpuContext, steps: &StepTable) -> Result<(Program, Program)> {
        let (cfg, w, a) = (self.cfg, self.w, self.a);
        if !self.fusion.any() {
            return Ok((self.record(ctx, Tokens::One, steps)?, record_head(ctx, cfg, w, a, steps)?));
        }
        let mut rec = Recorder::new(ctx);
        embed::record(&mut rec, Tokens::One, &a.x, w.table("token_embd.weight"), &a.tokens, cfg.embed_scale)?;
        let mut stream = Residual::new(a, cfg.dim as u32);
        for l in 0..cfg.n_layers {
            self.fused_attention(&mut rec, l, &mut stream)?;
            self.fused_ffn(&mut rec, l, &mut stream)?;
        }
        let decode = rec.finish("decode", Some(steps))?;
        // The head's norm stays a dispatch of its own: the output projection's V/(64·r)
        // workgroups would each compute it again (on SwiftShader that cost the step ~10%).
        let mut rec = Recorder::new(ctx);
        let input = stream.input(&mut rec, false, "output_norm".into(), w.get("output_norm.weight"), cfg.rms_eps)?;
        record_logits(&mut rec, cfg, w, a, input)?;
        Ok((decode, rec.finish("head", Some(steps))?))
    }

    /// q|k|v = W_qkv · rmsnorm(x) (+ bias); attention with the cache append; W_o · merge.
    fn fused_attention(&self, r: &mut Recorder, l: usize, stream: &mut Residual<'a>) -> Result<()> {
        let (cfg, w, kv, a, fusion) = (self.cfg, self.w, self.kv, self.a, self.fusion);
        let t = |n: &str| w.layer(l, n);
        let input = stream.input(r, fusion.norm, format!("L{l}.attn_norm"), t("attn_norm"), cfg.rms_eps)?;
        let output = match w.group_bias(l, "attn_qkv").filter(|_| cfg.qkv_bias) {
            Some(b) => Output::Bias(b),
            None => Output::Store(Write::Set),
        };
        let heads = Heads::of(cfg);
        let qkv = Rows::new(&a.qkv, heads.qkv_row());
        self.each_run(l, "attn_qkv", qkv, |wt, out, label| project::record_fused(r, Tokens::One, label, wt, out, input, output))?;
        let (table, rows, window) = self.layer_cache(l);
        let fresh = match fusion.attention {
            true => {
                Some(Fresh { table, neox: cfg.rope.neox, norms: cfg.qk_norm.then(|| ([t("attn_q_norm"), t("attn_k_norm")], cfg.rms_eps)) })
            }
            false => {
                self.rope_kv(r, Tokens::One, l)?;
                None
            }
        };
        let (part, att) = (&a.att_part, &a.att);
        let bufs = AttentionBuffers {
            out: &a.att_out,
            att,
            part,
            qkv: &a.qkv,
            k_cache: &kv.k[l],
            v_cache: &kv.v[l],
            fresh,
            merge_later: fusion.merge,
        };
        let shape = self.plan.decode.layer(l).windowed(window, rows);
        attention::record(r, Tokens::One, &format!("L{l}"), &bufs, &shape)?;
        let (out, write) = stream.output(cfg.post_norms.then(|| t("post_attention_norm")));
        let input = match fusion.merge {
            true => Input::Merge { part, att, shape: &shape },
            false => Input::Rows(Rows::new(&a.att_out, cfg.q_dim() as u32)),
        };
        project::record_fused(r, Tokens::One, format!("L{l}.attn_output"), t("attn_output"), out, input, Output::Store(write))
    }

    /// hb = act(W_gate · rmsnorm(x)) ⊙ (W_up · rmsnorm(x)); W_down · hb.
    fn fused_ffn(&self, r: &mut Recorder, l: usize, stream: &mut Residual<'a>) -> Result<()> {
        let (cfg, w, a) = (self.cfg, self.w, self.a);
        let f = cfg.ffn_dim as u32;
        let input = stream.input(r, self.fusion.norm, format!("L{l}.ffn_norm"), w.layer(l, "ffn_norm"), cfg.rms_eps)?;
        match w.group(l, "ffn_gate_up").as_slice() {
            [gate_up] if self.fusion.glu => project::record_fused(
                r,
                Tokens::One,
                format!("L{l}.ffn_gate_up"),
                gate_up,
                Rows::new(&a.hb, f),
                input,
                Output::Glu(cfg.act),
            )?,
            _ => {
                let out = Rows::new(&a.gate_up, 2 * f);
                self.each_run(l, "ffn_gate_up", out, |wt, out, label| {
                    project::record_fused(r, Tokens::One, label, wt, out, input, Output::Store(Write::Set))
                })?;
                glu::record(r, Tokens::One, format!("L{l}.glu"), &a.hb, &a.gate_up, f, cfg.act)?;
            }
        }
        let (out, write) = stream.output(cfg.post_norms.then(|| w.layer(l, "post_ffw_norm")));
        project::record(r, Tokens::One, format!("L{l}.ffn_down"), w.layer(l, "ffn_down"), out, Rows::new(&a.hb, f), write)
    }

    /// The q and k head norms where the model has them, then RoPE on q and k with k and v into
    /// their cache rows (a block cache: coded into them by `kv_quantize`).
    fn rope_kv(&self, r: &mut Recorder, tokens: Tokens, l: usize) -> Result<()> {
        let (cfg, w, kv, a) = (self.cfg, self.w, self.kv, self.a);
        let heads = Heads::of(cfg);
        if cfg.qk_norm {
            let norms = [w.layer(l, "attn_q_norm"), w.layer(l, "attn_k_norm")];
            head_norm::record(r, tokens, format!("L{l}.qk_norm"), &a.qkv, norms, heads, cfg.rms_eps)?;
        }
        let (table, rows, _) = self.layer_cache(l);
        let rb = RopeKvBuffers { qkv: &a.qkv, k_cache: &kv.k[l], v_cache: &kv.v[l], table, rows };
        rope_kv::record(r, tokens, format!("L{l}.rope_kv"), &rb, heads, kv.ty, cfg.rope.neox)?;
        match kv.blocks(l, cfg.kv_dim()) {
            Some(layout) => kv_quantize::record(r, tokens, format!("L{l}.kv_quantize"), [&kv.k[l], &kv.v[l]], &a.qkv, heads, layout),
            None => Ok(()),
        }
    }

    /// Layer `l`'s RoPE table, its cache rows and its window (0: every position).
    fn layer_cache(&self, l: usize) -> (&'a wgpu::Buffer, u32, u32) {
        let (cfg, a) = (self.cfg, self.a);
        let table = match (&a.rope_local, cfg.is_sliding(l)) {
            (Some(local), true) => local,
            _ => &a.rope,
        };
        (table, self.kv.rows[l] as u32, self.kv.windows[l] as u32)
    }
}

/// logits = W_out · rmsnorm(x of the last token), W_out = token_embd when the output is tied.
fn record_head(ctx: &GpuContext, cfg: &Config, w: &Weights, a: &Activations, steps: &StepTable) -> Result<Program> {
    let mut rec = Recorder::new(ctx);
    let norm = (w.get("output_norm.weight"), cfg.rms_eps);
    rms_norm::record(&mut rec, Tokens::One, "output_norm".into(), &a.xb, &a.x, norm, NormRows::LastIntoFirst, Write::Set)?;
    record_logits(&mut rec, cfg, w, a, Input::Rows(Rows::new(&a.xb, cfg.dim as u32)))?;
    rec.finish("head", Some(steps))
}

/// logits = W_out · input, W_out = token_embd when the output is tied, one projection per part
/// of the table.
fn record_logits(rec: &mut Recorder, cfg: &Config, w: &Weights, a: &Activations, input: Input) -> Result<()> {
    let out = w.table(if cfg.tied_output { "token_embd.weight" } else { "output.weight" });
    for (i, part) in out.iter().enumerate() {
        let logits = Rows::new(&a.logits, 0).at(part.first_row);
        let label = if out.len() == 1 { "output".to_string() } else { format!("output part {i}") };
        project::record_fused(rec, Tokens::One, label, &part.tensor, logits, input, Output::Store(Write::Set))?;
    }
    Ok(())
}
