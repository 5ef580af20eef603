//! The CPU forward pass: one operation per line, every buffer allocated once. With f32 weights
//! (`Weights::F32`) it is the reference: the specification of the model and the oracle for every
//! GPU and CPU-backend test; with `Weights::Blocks` it is the CPU backend.
//!
//! Names: d = dim, f = ffn_dim, h = n_heads, h_kv = n_kv_heads, d_h = head_dim,
//! kv = h_kv · d_h, V = vocab_size, T = context length.

mod evicting;
mod matrix;

pub use evicting::Evicting;

pub use matrix::{dot, Matrix, Scratch};

use crate::core::config::{Act, Config, KvType, RopeSpec, PREFILL_CHUNK};
use crate::core::flaw::Flaw;
use crate::core::gguf::{ByteSource, Gguf};
use crate::core::kv_policy::{Eviction, KvPolicy};
use crate::core::quant::dequantize_vec;
use crate::error::{Error, Result};

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
    for (o, row) in out.iter_mut().zip(w.chunks_exact(x.len())) {
        *o = dot(row, x);
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

/// One layer's weights; matrices [out × in]; q = h · d_h. The optional ones exist where the
/// architecture has them (`Config`).
struct Layer {
    attn_norm: Vec<f32>,              // [d]
    wq: Matrix,                       // [q × d]
    wk: Matrix,                       // [kv × d]
    wv: Matrix,                       // [kv × d]
    bias: Option<[Vec<f32>; 3]>,      // [q], [kv], [kv]
    qk_norm: Option<[Vec<f32>; 2]>,   // [d_h] each
    wo: Matrix,                       // [d × q]
    post_attn_norm: Option<Vec<f32>>, // [d]
    ffn_norm: Vec<f32>,               // [d]
    w_gate: Matrix,                   // [f × d]
    w_up: Matrix,                     // [f × d]
    w_down: Matrix,                   // [d × f]
    post_ffw_norm: Option<Vec<f32>>,  // [d]
}

impl Layer {
    /// One token's q, k and v before attention: + biases, each head normed (where the layer
    /// has them), q and k turned by RoPE at `rope_pos`. `tmp`: [d_h] scratch.
    fn shape_qkv(&self, [q, k, v]: [&mut [f32]; 3], c: &Config, rope_pos: usize, r: RopeSpec, freqs: &[f32], tmp: &mut [f32]) {
        if let Some([bq, bk, bv]) = &self.bias {
            add(q, bq);
            add(k, bk);
            add(v, bv);
        }
        if let Some([qn, kn]) = &self.qk_norm {
            head_norm(q, qn, c.rms_eps, tmp);
            head_norm(k, kn, c.rms_eps, tmp);
        }
        rope(q, c.head_dim, rope_pos, r, freqs);
        rope(k, c.head_dim, rope_pos, r, freqs);
    }
}

/// A cache row ← `row` as the cache keeps it: rounded to f16 (nearest even) where the cache is
/// f16, as the GPU stores it; quantised to ggml's Q8_0 or Q4_0 blocks and read back where the
/// cache keeps blocks (a row of h_kv · d_h values is whole blocks of 32).
fn write_row(cache_row: &mut [f32], row: &[f32], kv: KvType, blocks: &mut Vec<u8>) {
    match kv.blocks() {
        Some(ty) => {
            // `blocks` has room for a row's blocks: nothing is allocated per row.
            crate::core::quant::quantize_into(ty, row, blocks);
            crate::core::quant::dequantize(ty, blocks, cache_row);
        }
        None => cache_row.copy_from_slice(row),
    }
    if kv == KvType::F16 {
        cache_row.iter_mut().for_each(|x| *x = half::f16::from_f32(*x).to_f32());
    }
}

/// Positions by which the CPU cache grows.
pub const CACHE_STEP: usize = 64;

/// How a `CpuModel` keeps its matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weights {
    /// Expanded to f32: the exact reference.
    F32,
    /// In their GGUF blocks, decoded as they are used (memory ≈ the file).
    Blocks,
}

/// A CPU model: weights, KV cache and activations, all allocated at load. Up to `batch` positions
/// run through each layer together (B below), so that a weight block is decoded once per batch.
pub struct CpuModel {
    pub cfg: Config,
    pub context: usize,
    /// Positions per `forward` call at most.
    pub batch: usize,
    pub weights: Weights,
    token_embd: Matrix, // [V × d]
    layers: Vec<Layer>,
    output_norm: Vec<f32>,  // [d]
    output: Option<Matrix>, // [V × d]; None: tied to token_embd
    k_cache: Vec<Vec<f32>>, // per layer [rows × kv], rows ≤ `max_rows` growing in steps of CACHE_STEP
    v_cache: Vec<Vec<f32>>, // per layer [rows × kv]
    /// Cache rows a layer keeps at most: T (row p holds position p), or an eviction policy's
    /// S slots (`Evicting`), whatever the context.
    max_rows: usize,
    /// F16: cache values rounded to f16 (nearest even) as they are written, as the GPU stores
    /// them; Q8_0, Q4_0: through ggml's blocks.
    pub kv_type: KvType,
    /// A block cache's codes of one row, as it is written ([row bytes]).
    row_blocks: Vec<u8>,
    /// An eviction policy's state (None: every position held).
    pub evicting: Option<Evicting>,
    rope_freqs: Vec<f32>, // [d_h/2] or empty
    x: Vec<f32>,          // [B × d] residual stream
    xb: Vec<f32>,         // [B × d] normed input of a sublayer
    xb2: Vec<f32>,        // [B × d] a sublayer's output before its post-norm
    q: Vec<f32>,          // [B × q]
    k: Vec<f32>,          // [B × kv]
    v: Vec<f32>,          // [B × kv]
    head: Vec<f32>,       // [d_h]
    att_out: Vec<f32>,    // [B × q]
    att: Vec<f32>,        // [L × h × T] attention weights of the last position fed (its last T positions)
    gate: Vec<f32>,       // [B × f]
    up: Vec<f32>,         // [B × f]
    hb: Vec<f32>,         // [B × f]
    scratch: Scratch,     // decoded weight rows (`Matrix::matmul`)
    pub logits: Vec<f32>, // [V]
}

/// The tensor's bytes, read from `src`.
fn tensor_bytes<'a>(g: &'a Gguf, src: &mut dyn ByteSource, name: &str) -> Result<(&'a crate::core::gguf::TensorInfo, Vec<u8>)> {
    let t = g.tensor(name).ok_or_else(|| Error::MissingTensor(name.into()))?;
    let mut bytes = Vec::new();
    src.read(g.tensor_range(t), &mut bytes)?;
    Ok((t, bytes))
}

fn load_tensor(g: &Gguf, src: &mut dyn ByteSource, name: &str) -> Result<Vec<f32>> {
    let (t, bytes) = tensor_bytes(g, src, name)?;
    Ok(dequantize_vec(t.ty, &bytes, t.n_elements() as usize))
}

/// A 2-D tensor as a `Matrix` [dims[1] × dims[0]].
fn load_matrix(g: &Gguf, src: &mut dyn ByteSource, name: &str, weights: Weights) -> Result<Matrix> {
    let (t, bytes) = tensor_bytes(g, src, name)?;
    let cols = t.dims[0] as usize;
    Ok(Matrix::new(t.ty, t.n_elements() as usize / cols, cols, bytes, weights == Weights::F32))
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
    pub fn load(g: &Gguf, cfg: &Config, context: usize, policy: KvPolicy, weights: Weights, src: &mut dyn ByteSource) -> Result<Self> {
        let kv_type = policy.precision;
        let evicting = (policy.eviction != Eviction::None).then(|| Evicting::new(policy.eviction, cfg));
        let layers = (0..cfg.n_layers)
            .map(|l| {
                let name = |n: &str| format!("blk.{l}.{n}");
                let mut t = |n: &str| load_tensor(g, src, &name(n));
                let bias = match cfg.qkv_bias {
                    true => Some([t("attn_q.bias")?, t("attn_k.bias")?, t("attn_v.bias")?]),
                    false => None,
                };
                let qk_norm = match cfg.qk_norm {
                    true => Some([t("attn_q_norm.weight")?, t("attn_k_norm.weight")?]),
                    false => None,
                };
                let attn_norm = t("attn_norm.weight")?;
                let ffn_norm = t("ffn_norm.weight")?;
                let mut m = |n: &str| load_matrix(g, src, &name(n), weights);
                let (wq, wk, wv, wo) = (m("attn_q.weight")?, m("attn_k.weight")?, m("attn_v.weight")?, m("attn_output.weight")?);
                let (w_gate, w_up, w_down) = (m("ffn_gate.weight")?, m("ffn_up.weight")?, m("ffn_down.weight")?);
                let post = |src: &mut dyn ByteSource, n: &str| load_if(cfg.post_norms, g, src, &name(&format!("{n}.weight")));
                Ok(Layer {
                    attn_norm,
                    wq,
                    wk,
                    wv,
                    bias,
                    qk_norm,
                    wo,
                    ffn_norm,
                    w_gate,
                    w_up,
                    w_down,
                    post_attn_norm: post(src, "post_attention_norm")?,
                    post_ffw_norm: post(src, "post_ffw_norm")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let token_embd = load_matrix(g, src, "token_embd.weight", weights)?;
        let output = (!cfg.tied_output).then(|| load_matrix(g, src, "output.weight", weights)).transpose()?;
        let widest = layers.iter().flat_map(|w| [w.wo.cols(), w.w_down.cols()]).chain([cfg.dim]).max().unwrap_or(0);
        let (d, kv, f, b) = (cfg.dim, cfg.kv_dim(), cfg.ffn_dim, PREFILL_CHUNK);
        Ok(CpuModel {
            token_embd,
            output_norm: load_tensor(g, src, "output_norm.weight")?,
            output,
            rope_freqs: rope_factors(g, cfg, src)?,
            layers,
            k_cache: vec![Vec::new(); cfg.n_layers],
            v_cache: vec![Vec::new(); cfg.n_layers],
            x: vec![0.0; b * d],
            xb: vec![0.0; b * d],
            xb2: vec![0.0; b * d],
            q: vec![0.0; b * cfg.q_dim()],
            k: vec![0.0; b * kv],
            v: vec![0.0; b * kv],
            head: vec![0.0; cfg.head_dim],
            att_out: vec![0.0; b * cfg.q_dim()],
            att: vec![0.0; cfg.n_layers * cfg.n_heads * context],
            gate: vec![0.0; b * f],
            up: vec![0.0; b * f],
            hb: vec![0.0; b * f],
            scratch: Scratch::new(widest, b),
            logits: vec![0.0; cfg.vocab_size],
            cfg: cfg.clone(),
            context,
            // An eviction policy decides at every position: one position per call.
            batch: if policy.eviction == Eviction::None { b } else { 1 },
            weights,
            kv_type,
            row_blocks: Vec::with_capacity(kv_type.row_bytes(cfg.kv_dim()) as usize),
            max_rows: evicting.as_ref().map_or(context, |e| e.slots),
            evicting,
        })
    }

    /// Bytes of weights held (the file's tensor bytes with `Weights::Blocks`).
    pub fn weight_bytes(&self) -> usize {
        let norms = |w: &Layer| w.attn_norm.len() + w.ffn_norm.len();
        self.layers
            .iter()
            .map(|w| [&w.wq, &w.wk, &w.wv, &w.wo, &w.w_gate, &w.w_up, &w.w_down].iter().map(|m| m.bytes()).sum::<usize>() + 4 * norms(w))
            .sum::<usize>()
            + self.token_embd.bytes()
            + self.output.as_ref().map_or(0, Matrix::bytes)
    }

    /// Bytes of KV cache allocated so far (f32 values).
    pub fn kv_bytes(&self) -> usize {
        self.k_cache.iter().chain(&self.v_cache).map(|c| c.len() * 4).sum()
    }

    /// Makes room for cache rows 0..rows: the cache grows with the text, CACHE_STEP positions at
    /// a time (up to `max_rows`), so that memory follows the positions used rather than the
    /// context allowed.
    fn grow(&mut self, rows: usize) {
        let (kv, rows) = (self.cfg.kv_dim(), rows.min(self.max_rows));
        if self.k_cache.first().is_some_and(|c| c.len() >= rows * kv) {
            return;
        }
        let len = rows.next_multiple_of(CACHE_STEP).min(self.max_rows) * kv;
        for c in self.k_cache.iter_mut().chain(&mut self.v_cache) {
            c.reserve_exact(len - c.len());
            c.resize(len, 0.0);
        }
    }

    /// Runs `tokens` at positions start, start + 1, …: writes their K and V into those cache
    /// rows (or, under an eviction policy, the slots `Evicting::admit` gives them; positions may
    /// then run past T), each attending over the rows up to its own, and (when `want_logits`)
    /// leaves the logits after the last one in `self.logits`. At most `batch` tokens.
    /// `flaw` (teaching only, `crate::core::flaw`) may skip the cache write or rotate q and k at
    /// another position.
    pub fn forward(&mut self, tokens: &[u32], start: usize, want_logits: bool, flaw: Flaw) {
        let n = tokens.len();
        assert!(n <= self.batch, "forward: {n} tokens in one call, at most {}", self.batch);
        self.grow(start + n);
        let c = &self.cfg;
        let (d, kv, hd, qd, f) = (c.dim, c.kv_dim(), c.head_dim, c.q_dim(), c.ffn_dim);
        let x = &mut self.x[..n * d];
        for (xi, &t) in x.chunks_exact_mut(d).zip(tokens) {
            self.token_embd.row(t as usize, xi);
        }
        if c.embed_scale != 1.0 {
            x.iter_mut().for_each(|v| *v *= c.embed_scale);
        }
        let (xb, xb2) = (&mut self.xb[..n * d], &mut self.xb2[..n * d]);
        let (q, k, v, att_out) = (&mut self.q[..n * qd], &mut self.k[..n * kv], &mut self.v[..n * kv], &mut self.att_out[..n * qd]);
        let (gate, up, hb) = (&mut self.gate[..n * f], &mut self.up[..n * f], &mut self.hb[..n * f]);

        for (l, w) in self.layers.iter().enumerate() {
            // Attention: q, k, v for the new positions only (+ biases; each head normed where the
            // architecture does it, then turned by RoPE); k and v go straight into their cache rows.
            for (o, xi) in xb.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
                rmsnorm(o, xi, &w.attn_norm, c.rms_eps);
            }
            w.wq.matmul(q, xb, &mut self.scratch);
            w.wk.matmul(k, xb, &mut self.scratch);
            w.wv.matmul(v, xb, &mut self.scratch);
            let r = c.rope_of(l);
            for (i, ((qi, ki), vi)) in q.chunks_exact_mut(qd).zip(k.chunks_exact_mut(kv)).zip(v.chunks_exact_mut(kv)).enumerate() {
                let pos = start + i;
                // With cache positions (StreamingLLM) q and k are turned in `Evicting::attend`.
                let rope_pos = if self.evicting.as_ref().is_some_and(|e| e.policy.cache_positions()) { 0 } else { flaw.rope_position(pos) };
                w.shape_qkv([qi, ki, vi], c, rope_pos, r, &self.rope_freqs, &mut self.head);
                if flaw.appends() {
                    let row = self.evicting.as_mut().map_or(pos, |e| e.admit(l, pos));
                    write_row(&mut self.k_cache[l][row * kv..(row + 1) * kv], ki, self.kv_type, &mut self.row_blocks);
                    write_row(&mut self.v_cache[l][row * kv..(row + 1) * kv], vi, self.kv_type, &mut self.row_blocks);
                }
            }
            for (i, (oi, qi)) in att_out.chunks_exact_mut(qd).zip(q.chunks_exact_mut(qd)).enumerate() {
                let pos = start + i;
                // [h × n]: the weights of the last n ≤ T positions (all of them within the context).
                let n = (pos + 1).min(self.context);
                let att = &mut self.att[l * c.n_heads * self.context..][..c.n_heads * n];
                match &mut self.evicting {
                    Some(e) => {
                        e.attend(l, pos, c.attended(l, pos), qi, oi, att, [&self.k_cache[l], &self.v_cache[l]], c, (r, &self.rope_freqs))
                    }
                    None => attention(oi, att, qi, &self.k_cache[l], &self.v_cache[l], c.attended(l, pos), c.n_kv_heads, hd, c.attn_scale),
                }
            }
            w.wo.matmul(xb2, att_out, &mut self.scratch);
            for ((xi, yi), tmp) in x.chunks_exact_mut(d).zip(xb2.chunks_exact_mut(d)).zip(xb.chunks_exact_mut(d)) {
                residual(xi, yi, w.post_attn_norm.as_deref(), c.rms_eps, tmp);
            }

            // Gated FFN.
            for (o, xi) in xb.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
                rmsnorm(o, xi, &w.ffn_norm, c.rms_eps);
            }
            w.w_gate.matmul(gate, xb, &mut self.scratch);
            w.w_up.matmul(up, xb, &mut self.scratch);
            glu(hb, gate, up, c.act);
            w.w_down.matmul(xb2, hb, &mut self.scratch);
            for ((xi, yi), tmp) in x.chunks_exact_mut(d).zip(xb2.chunks_exact_mut(d)).zip(xb.chunks_exact_mut(d)) {
                residual(xi, yi, w.post_ffw_norm.as_deref(), c.rms_eps, tmp);
            }
        }

        if want_logits {
            let last = &x[(n - 1) * d..];
            rmsnorm(&mut xb[..d], last, &self.output_norm, c.rms_eps);
            let out = self.output.as_ref().unwrap_or(&self.token_embd);
            out.matmul(&mut self.logits, &xb[..d], &mut self.scratch);
        }
    }

    /// Zeroes K and V in every cache row from `from` on (under an eviction policy: forgets the
    /// positions from `from` on, whose slots are written again before they are read).
    pub fn clear_rows(&mut self, from: usize) {
        if let Some(e) = &mut self.evicting {
            e.clear(from);
            return;
        }
        let kv = self.cfg.kv_dim();
        for c in self.k_cache.iter_mut().chain(&mut self.v_cache) {
            let from = (from * kv).min(c.len());
            c[from..].fill(0.0);
        }
    }

    /// The attention weights of the last position fed in `layers`: [layers × h × n] for
    /// n = pos + 1, at most T (past the context: the last T positions, pos + 1 − T ..= pos).
    pub fn attention_weights(&self, layers: std::ops::Range<usize>, n: usize) -> Vec<f32> {
        // Layer l's weights are [h × n] from l · h · T (see `forward`).
        let (h, n) = (self.cfg.n_heads, n.min(self.context));
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
