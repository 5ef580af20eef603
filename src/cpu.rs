//! The reference forward pass: plain f32, one operation per line, every buffer allocated once.
//! It is the specification of the model and the oracle for every GPU test.
//!
//! Names: d = dim, f = ffn_dim, h = n_heads, h_kv = n_kv_heads, d_h = head_dim,
//! kv = h_kv · d_h, V = vocab_size, T = context length.

use crate::config::{Act, Config, KvType, RopeSpec};
use crate::error::{Error, Result};
use crate::flaw::Flaw;
use crate::gguf::{ByteSource, Gguf};
use crate::quant::dequantize_vec;

/// out = x / sqrt(mean(x²) + eps) ⊙ w          x, w, out: [n]
pub fn rmsnorm(out: &mut [f32], x: &[f32], w: &[f32], eps: f32) {
    let ss = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let scale = 1.0 / (ss + eps).sqrt();
    for ((o, v), g) in out.iter_mut().zip(x).zip(w) {
        *o = v * scale * g;
    }
}

/// out[r] = Σ_c w[r·cols + c] · x[c]         w: [rows × cols] row-major, x: [cols], out: [rows]
pub fn matvec(out: &mut [f32], w: &[f32], x: &[f32]) {
    let cols = x.len();
    for (o, row) in out.iter_mut().zip(w.chunks_exact(cols)) {
        // Four partial sums let the compiler vectorise without reordering within a lane.
        let mut acc = [0.0f32; 4];
        for (r4, x4) in row.chunks_exact(4).zip(x.chunks_exact(4)) {
            for k in 0..4 {
                acc[k] += r4[k] * x4[k];
            }
        }
        *o = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    }
}

/// cos and sin of the RoPE angle for pair i at position pos:
/// θ = pos · scale · base^(−2i/d_h) / factor (factor: `rope_freqs.weight`[i], else 1).
/// Computed in f64 so that CPU and GPU (which reads a table of these) agree exactly.
pub fn rope_angle(pos: usize, i: usize, head_dim: usize, r: RopeSpec, factor: f32) -> (f32, f32) {
    let theta = pos as f64 * r.scale as f64 * (r.base as f64).powf(-2.0 * i as f64 / head_dim as f64) / factor as f64;
    (theta.cos() as f32, theta.sin() as f32)
}

/// The table the GPU reads: [T × d_h/2] pairs (cos, sin). `factors`: [d_h/2], or empty.
pub fn rope_table(context: usize, head_dim: usize, r: RopeSpec, factors: &[f32]) -> Vec<f32> {
    let mut t = Vec::with_capacity(context * head_dim);
    for pos in 0..context {
        for i in 0..head_dim / 2 {
            let (c, s) = rope_angle(pos, i, head_dim, r, factors.get(i).copied().unwrap_or(1.0));
            t.push(c);
            t.push(s);
        }
    }
    t
}

/// Rotates pair i of every head by θ(pos, i): pairs (x[2i], x[2i+1]) (the GGUF/llama.cpp "normal"
/// RoPE; the converter already permuted Llama's Q and K for it) or, with `r.neox`,
/// (x[i], x[i + d_h/2]):  (x0, x1) ← (x0·cos θ − x1·sin θ, x0·sin θ + x1·cos θ).
/// x: [heads × d_h]
pub fn rope(x: &mut [f32], head_dim: usize, pos: usize, r: RopeSpec, factors: &[f32]) {
    let half = head_dim / 2;
    for head in x.chunks_exact_mut(head_dim) {
        for i in 0..half {
            let (c, s) = rope_angle(pos, i, head_dim, r, factors.get(i).copied().unwrap_or(1.0));
            let (a, b) = if r.neox { (i, i + half) } else { (2 * i, 2 * i + 1) };
            let (x0, x1) = (head[a], head[b]);
            head[a] = x0 * c - x1 * s;
            head[b] = x0 * s + x1 * c;
        }
    }
}

/// In-place softmax over x.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in x.iter_mut() {
        *v /= sum;
    }
}

/// Attention of one query over the cached positions `seen` (all of 0..n, or a sliding window
/// ending at n − 1), grouped-query: query head h reads KV head h / (h / h_kv).
///   att[h, t] = softmax_t(q_h · k[t, kvh] · scale)        t ∈ seen; 0 for the other t < n
///   out[h]    = Σ_t att[h, t] · v[t, kvh]
/// q, out: [h × d_h]; k_cache, v_cache: [T × kv]; att: [h × n] (the weights, kept for display)
#[allow(clippy::too_many_arguments)]
pub fn attention(
    out: &mut [f32],
    att: &mut [f32],
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    seen: std::ops::Range<usize>,
    n_kv_heads: usize,
    head_dim: usize,
    scale: f32,
) {
    let n_heads = q.len() / head_dim;
    let group = n_heads / n_kv_heads;
    let kv = n_kv_heads * head_dim;
    let n = seen.end;
    for h in 0..n_heads {
        let kvh = h / group;
        let qh = &q[h * head_dim..(h + 1) * head_dim];
        let row = &mut att[h * n..(h + 1) * n];
        row[..seen.start].fill(0.0);
        let a = &mut row[seen.start..];
        for (t, s) in seen.clone().zip(a.iter_mut()) {
            let k = &k_cache[t * kv + kvh * head_dim..][..head_dim];
            *s = qh.iter().zip(k).map(|(x, y)| x * y).sum::<f32>() * scale;
        }
        softmax(a);
        let o = &mut out[h * head_dim..(h + 1) * head_dim];
        o.fill(0.0);
        for (t, &p) in seen.clone().zip(a.iter()) {
            let v = &v_cache[t * kv + kvh * head_dim..][..head_dim];
            for (oi, vi) in o.iter_mut().zip(v) {
                *oi += p * vi;
            }
        }
    }
}

/// out = act(gate) ⊙ up (see `Act`).
pub fn glu(out: &mut [f32], gate: &[f32], up: &[f32], act: Act) {
    for ((o, &g), u) in out.iter_mut().zip(gate).zip(up) {
        let a = match act {
            Act::Silu => g / (1.0 + (-g).exp()),
            Act::GeluTanh => 0.5 * g * (1.0 + (0.797_884_6 * (g + 0.044715 * g * g * g)).tanh()),
        };
        *o = a * u;
    }
}

/// RMSNorm of each d_h-wide head of x in place, every head with the same weight [d_h].
fn head_norm(x: &mut [f32], w: &[f32], eps: f32, tmp: &mut [f32]) {
    for head in x.chunks_exact_mut(w.len()) {
        rmsnorm(tmp, head, w, eps);
        head.copy_from_slice(tmp);
    }
}

/// One layer's weights, dequantised to f32, matrices row-major [out × in]; q = h · d_h.
/// The optional ones exist where the architecture has them (`Config`).
struct Layer {
    attn_norm: Vec<f32>,              // [d]
    wq: Vec<f32>,                     // [q × d]
    wk: Vec<f32>,                     // [kv × d]
    wv: Vec<f32>,                     // [kv × d]
    bias: Option<[Vec<f32>; 3]>,      // [q], [kv], [kv]
    qk_norm: Option<[Vec<f32>; 2]>,   // [d_h] each
    wo: Vec<f32>,                     // [d × q]
    post_attn_norm: Option<Vec<f32>>, // [d]
    ffn_norm: Vec<f32>,               // [d]
    w_gate: Vec<f32>,                 // [f × d]
    w_up: Vec<f32>,                   // [f × d]
    w_down: Vec<f32>,                 // [d × f]
    post_ffw_norm: Option<Vec<f32>>,  // [d]
}

/// The CPU model: weights, KV cache and activations, all allocated at load.
pub struct CpuModel {
    pub cfg: Config,
    pub context: usize,
    token_embd: Vec<f32>, // [V × d]
    layers: Vec<Layer>,
    output_norm: Vec<f32>,    // [d]
    output: Option<Vec<f32>>, // [V × d]; None: tied to token_embd
    k_cache: Vec<Vec<f32>>,   // per layer [T × kv]
    v_cache: Vec<Vec<f32>>,   // per layer [T × kv]
    /// F16: cache values rounded to f16 (nearest even) as they are written, as the GPU stores them.
    pub kv_type: KvType,
    rope_freqs: Vec<f32>, // [d_h/2] or empty
    x: Vec<f32>,          // [d] residual stream
    xb: Vec<f32>,         // [d] normed input of a sublayer
    xb2: Vec<f32>,        // [d] a sublayer's output before its post-norm
    q: Vec<f32>,          // [q]
    k: Vec<f32>,          // [kv]
    v: Vec<f32>,          // [kv]
    head: Vec<f32>,       // [d_h]
    att_out: Vec<f32>,    // [q]
    att: Vec<f32>,        // [h × T] attention weights of the last step
    gate: Vec<f32>,       // [f]
    up: Vec<f32>,         // [f]
    hb: Vec<f32>,         // [f]
    pub logits: Vec<f32>, // [V]
}

fn load_tensor(g: &Gguf, src: &mut dyn ByteSource, name: &str) -> Result<Vec<f32>> {
    let t = g.tensor(name).ok_or_else(|| Error::MissingTensor(name.into()))?;
    let mut bytes = Vec::new();
    src.read(g.tensor_range(t), &mut bytes)?;
    Ok(dequantize_vec(t.ty, &bytes, t.n_elements() as usize))
}

/// `rope_freqs.weight` [d_h/2] (each pair's frequency divisor), or empty where the model has none.
pub fn rope_factors(g: &Gguf, cfg: &Config, src: &mut dyn ByteSource) -> Result<Vec<f32>> {
    Ok(load_if(cfg.rope_freqs, g, src, "rope_freqs.weight")?.unwrap_or_default())
}

/// `load_tensor`, or None where the architecture does not have it.
fn load_if(has: bool, g: &Gguf, src: &mut dyn ByteSource, name: &str) -> Result<Option<Vec<f32>>> {
    has.then(|| load_tensor(g, src, name)).transpose()
}

impl CpuModel {
    pub fn load(g: &Gguf, cfg: &Config, context: usize, kv_type: KvType, src: &mut dyn ByteSource) -> Result<Self> {
        let layers = (0..cfg.n_layers)
            .map(|l| {
                let mut t = |n: &str| load_tensor(g, src, &format!("blk.{l}.{n}"));
                let bias = match cfg.qkv_bias {
                    true => Some([t("attn_q.bias")?, t("attn_k.bias")?, t("attn_v.bias")?]),
                    false => None,
                };
                let qk_norm = match cfg.qk_norm {
                    true => Some([t("attn_q_norm.weight")?, t("attn_k_norm.weight")?]),
                    false => None,
                };
                let post = |src: &mut dyn ByteSource, n: &str| load_if(cfg.post_norms, g, src, &format!("blk.{l}.{n}.weight"));
                Ok(Layer {
                    attn_norm: t("attn_norm.weight")?,
                    wq: t("attn_q.weight")?,
                    wk: t("attn_k.weight")?,
                    wv: t("attn_v.weight")?,
                    bias,
                    qk_norm,
                    wo: t("attn_output.weight")?,
                    ffn_norm: t("ffn_norm.weight")?,
                    w_gate: t("ffn_gate.weight")?,
                    w_up: t("ffn_up.weight")?,
                    w_down: t("ffn_down.weight")?,
                    post_attn_norm: post(src, "post_attention_norm")?,
                    post_ffw_norm: post(src, "post_ffw_norm")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let (d, kv, f) = (cfg.dim, cfg.kv_dim(), cfg.ffn_dim);
        Ok(CpuModel {
            token_embd: load_tensor(g, src, "token_embd.weight")?,
            output_norm: load_tensor(g, src, "output_norm.weight")?,
            output: load_if(!cfg.tied_output, g, src, "output.weight")?,
            rope_freqs: rope_factors(g, cfg, src)?,
            layers,
            k_cache: vec![vec![0.0; context * kv]; cfg.n_layers],
            v_cache: vec![vec![0.0; context * kv]; cfg.n_layers],
            x: vec![0.0; d],
            xb: vec![0.0; d],
            xb2: vec![0.0; d],
            q: vec![0.0; cfg.q_dim()],
            k: vec![0.0; kv],
            v: vec![0.0; kv],
            head: vec![0.0; cfg.head_dim],
            att_out: vec![0.0; cfg.q_dim()],
            att: vec![0.0; cfg.n_layers * cfg.n_heads * context],
            gate: vec![0.0; f],
            up: vec![0.0; f],
            hb: vec![0.0; f],
            logits: vec![0.0; cfg.vocab_size],
            cfg: cfg.clone(),
            context,
            kv_type,
        })
    }

    /// Runs token `token` at position `pos` (0-based): writes its K and V into cache row `pos`,
    /// attends over rows 0..=pos, and (when `want_logits`) leaves the next-token logits in `self.logits`.
    /// `flaw` (teaching only, `crate::flaw`): `NoAppend` skips the cache write, `RopePos0`
    /// rotates q and k as position 0.
    pub fn forward(&mut self, token: u32, pos: usize, want_logits: bool, flaw: Flaw) {
        let rope_pos = if flaw == Flaw::RopePos0 { 0 } else { pos };
        let c = &self.cfg;
        let (d, kv, hd) = (c.dim, c.kv_dim(), c.head_dim);
        let row = token as usize * d;
        self.x.copy_from_slice(&self.token_embd[row..row + d]);
        if c.embed_scale != 1.0 {
            self.x.iter_mut().for_each(|v| *v *= c.embed_scale);
        }

        for (l, w) in self.layers.iter().enumerate() {
            // Attention: q, k, v for this token only (+ biases; each head normed where the
            // architecture does it, then turned by RoPE); k and v go straight into cache row pos.
            rmsnorm(&mut self.xb, &self.x, &w.attn_norm, c.rms_eps);
            matvec(&mut self.q, &w.wq, &self.xb);
            matvec(&mut self.k, &w.wk, &self.xb);
            matvec(&mut self.v, &w.wv, &self.xb);
            if let Some([bq, bk, bv]) = &w.bias {
                add(&mut self.q, bq);
                add(&mut self.k, bk);
                add(&mut self.v, bv);
            }
            if let Some([qn, kn]) = &w.qk_norm {
                head_norm(&mut self.q, qn, c.rms_eps, &mut self.head);
                head_norm(&mut self.k, kn, c.rms_eps, &mut self.head);
            }
            let r = c.rope_of(l);
            rope(&mut self.q, hd, rope_pos, r, &self.rope_freqs);
            rope(&mut self.k, hd, rope_pos, r, &self.rope_freqs);
            if flaw != Flaw::NoAppend {
                self.k_cache[l][pos * kv..(pos + 1) * kv].copy_from_slice(&self.k);
                self.v_cache[l][pos * kv..(pos + 1) * kv].copy_from_slice(&self.v);
                if self.kv_type == KvType::F16 {
                    for x in self.k_cache[l][pos * kv..(pos + 1) * kv].iter_mut().chain(&mut self.v_cache[l][pos * kv..(pos + 1) * kv]) {
                        *x = half::f16::from_f32(*x).to_f32();
                    }
                }
            }
            let seen = c.attended(l, pos);
            let att = &mut self.att[l * c.n_heads * self.context..][..c.n_heads * (pos + 1)];
            attention(&mut self.att_out, att, &self.q, &self.k_cache[l], &self.v_cache[l], seen, c.n_kv_heads, hd, c.attn_scale);
            matvec(&mut self.xb2, &w.wo, &self.att_out);
            residual(&mut self.x, &mut self.xb2, w.post_attn_norm.as_deref(), c.rms_eps, &mut self.xb);

            // Gated FFN.
            rmsnorm(&mut self.xb, &self.x, &w.ffn_norm, c.rms_eps);
            matvec(&mut self.gate, &w.w_gate, &self.xb);
            matvec(&mut self.up, &w.w_up, &self.xb);
            glu(&mut self.hb, &self.gate, &self.up, c.act);
            matvec(&mut self.xb2, &w.w_down, &self.hb);
            residual(&mut self.x, &mut self.xb2, w.post_ffw_norm.as_deref(), c.rms_eps, &mut self.xb);
        }

        if want_logits {
            rmsnorm(&mut self.xb, &self.x, &self.output_norm, c.rms_eps);
            let out = self.output.as_ref().unwrap_or(&self.token_embd);
            matvec(&mut self.logits, out, &self.xb);
        }
    }

    /// Zeroes K and V in every cache row from `from` on.
    pub fn clear_rows(&mut self, from: usize) {
        let kv = self.cfg.kv_dim();
        for c in self.k_cache.iter_mut().chain(&mut self.v_cache) {
            c[from * kv..].fill(0.0);
        }
    }

    /// The attention weights of the last step in `layers`: [layers × h × n] for n = pos + 1.
    pub fn attention_weights(&self, layers: std::ops::Range<usize>, n: usize) -> Vec<f32> {
        // Layer l's weights are [h × n] from l · h · T (see `forward`).
        let h = self.cfg.n_heads;
        layers.flat_map(|l| self.att[l * h * self.context..][..h * n].iter().copied()).collect()
    }
}

/// x += y, or x += rmsnorm(y) ⊙ post_norm where the architecture norms a sublayer's output
/// (`tmp`: [d] scratch).
fn residual(x: &mut [f32], y: &mut [f32], post_norm: Option<&[f32]>, eps: f32, tmp: &mut [f32]) {
    match post_norm {
        Some(w) => {
            rmsnorm(tmp, y, w, eps);
            add(x, tmp);
        }
        None => add(x, y),
    }
}

/// x += y
pub fn add(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}
