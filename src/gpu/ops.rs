//! One function per op: its params, bindings and grid together, so the model's forward pass and
//! the kernel tests record an op the same way. Bindings are passed outputs first, then inputs, as
//! each shader declares them.

use crate::config::{Act, KvType};
use crate::error::{Error, Result};
use crate::gpu::{params, Grid, Kernel, Recorder, SplitGrid};
use crate::model::weights::{Part, Tensor};

/// Which tokens an op covers: one (decoding: mat-vec kernels, bound to the per-position step
/// table) or the rows of a prefill chunk of up to B tokens (mat-mul kernels; the chunk's step
/// uniform says how many are live).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tokens {
    One,
    Chunk(u32),
}

impl Tokens {
    /// Token rows a kernel spreads over workgroup z.
    pub fn rows(self) -> u32 {
        match self {
            Tokens::One => 1,
            Tokens::Chunk(b) => b,
        }
    }
}

/// Token rows in a buffer: row t of the chunk starts at element t · stride; an op reads or
/// writes `offset` elements into each row.
#[derive(Clone, Copy)]
pub struct Rows<'a> {
    pub buf: &'a wgpu::Buffer,
    pub stride: u32,
    pub offset: u32,
}

impl<'a> Rows<'a> {
    pub fn new(buf: &'a wgpu::Buffer, stride: u32) -> Self {
        Rows { buf, stride, offset: 0 }
    }

    pub fn at(self, offset: u32) -> Self {
        Rows { offset, ..self }
    }
}

/// Whether a projection replaces its output or adds to it (the residual add x ← x + W·h fused).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    Set,
    Add,
}

/// X[t] = E[tokens[pos + t]] · scale, one invocation per 32-element block of a row; one dispatch
/// per part of the table, each writing the tokens whose rows it holds.
pub fn embed(rec: &mut Recorder, tokens: Tokens, out: &wgpu::Buffer, table: &[Part], ids: &wgpu::Buffer, scale: f32) -> Result<()> {
    for (i, part) in table.iter().enumerate() {
        let t = &part.tensor;
        let (dim, row_bytes) = (t.cols(), t.row_bytes());
        let p = params::Embed { dim, row_bytes, scale, first_row: part.first_row, rows: t.rows() };
        let grid = Grid::invocations(dim / 32).layers(tokens.rows());
        let label = if table.len() == 1 { "embed".to_string() } else { format!("embed part {i}") };
        rec.push(label, Kernel::Embed(t.ty), &[out, &t.buffer, ids], &p, grid)?;
    }
    Ok(())
}

/// Which token rows a norm covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormRows {
    /// Every live row of the chunk, each in place.
    Each,
    /// Only the chunk's last row, written into row 0 (the head: logits of the last position).
    LastIntoFirst,
}

/// out[t] (+)= x[t] / sqrt(mean(x[t]²) + eps) ⊙ weight for the token rows `rows` says.
#[allow(clippy::too_many_arguments)]
pub fn rms_norm(
    rec: &mut Recorder,
    tokens: Tokens,
    label: String,
    out: &wgpu::Buffer,
    x: &wgpu::Buffer,
    (weight, eps): (&Tensor, f32),
    rows: NormRows,
    write: Write,
) -> Result<()> {
    let p = params::RmsNorm { n: weight.cols(), eps, last: (rows == NormRows::LastIntoFirst) as u32, add: (write == Write::Add) as u32 };
    rec.push(label, Kernel::RmsNorm, &[out, x, &weight.buffer], &p, Grid::workgroups(1).layers(tokens.rows()))
}

/// out[t, offset + r] (+)= Σ_c W[r, c] · x[t, c]: one kernel source, tiled for one token (the
/// mat-vec) or for a chunk's rows (the mat-mul).
pub fn project(rec: &mut Recorder, tokens: Tokens, label: String, w: &Tensor, out: Rows, x: Rows, write: Write) -> Result<()> {
    if x.offset != 0 {
        return Err(Error::Gpu(format!("{label}: the projection kernels read x from the start of its row")));
    }
    let (rows, cols, row_bytes, accumulate) = (w.rows(), w.cols(), w.row_bytes(), (write == Write::Add) as u32);
    let tuning = rec.ctx().tuning;
    let buffers = [out.buf, &w.buffer, x.buf];
    let p = params::MatMul { rows, cols, row_bytes, out_offset: out.offset, accumulate, y_stride: out.stride, x_stride: x.stride };
    match tokens {
        Tokens::One => rec.push(label, Kernel::MatVec(w.ty), &buffers, &p, Grid::invocations(rows.div_ceil(tuning.matvec_rows))),
        Tokens::Chunk(b) => {
            let grid = Grid::invocations(rows.div_ceil(tuning.matmul_rows)).layers(b.div_ceil(tuning.matmul_tokens));
            rec.push(label, Kernel::MatMul(w.ty), &buffers, &p, grid)
        }
    }
}

/// The heads of the model's attention, for `rope_kv` and `attention`.
#[derive(Clone, Copy, Debug)]
pub struct Heads {
    /// h
    pub n_heads: u32,
    /// h_kv
    pub n_kv_heads: u32,
    /// d_h
    pub head_dim: u32,
}

impl Heads {
    /// Elements of one token's qkv row: [q (h heads) | k (h_kv) | v (h_kv)].
    pub fn qkv_row(&self) -> u32 {
        (self.n_heads + 2 * self.n_kv_heads) * self.head_dim
    }
}

/// What `rope_kv` reads and writes.
pub struct RopeKvBuffers<'a> {
    /// [B × qkv_row]: q turned in place.
    pub qkv: &'a wgpu::Buffer,
    /// [T × h_kv · d_h] each: row pos + t receives token t's k (turned) and v.
    pub k_cache: &'a wgpu::Buffer,
    pub v_cache: &'a wgpu::Buffer,
    /// [T × d_h/2] (cos, sin) of the layer's RoPE.
    pub table: &'a wgpu::Buffer,
    /// R: the cache's rows.
    pub rows: u32,
}

/// RoPE on each token's q (in place) and k (into cache row (pos + t) mod R), v copied to its cache
/// row; adjacent pairs, or with `neox` the halves of each head.
pub fn rope_kv(rec: &mut Recorder, tokens: Tokens, label: String, b: &RopeKvBuffers, heads: Heads, kv: KvType, neox: bool) -> Result<()> {
    let p = params::RopeKv { n_heads: heads.n_heads, n_kv_heads: heads.n_kv_heads, head_dim: heads.head_dim, rows: b.rows };
    // One invocation per adjacent pair; NeoX: per two pairs that turn together.
    let units = heads.qkv_row() / if neox { 4 } else { 2 };
    let grid = Grid::invocations(units).layers(tokens.rows());
    rec.push(label, Kernel::RopeKv { kv, neox }, &[b.qkv, b.k_cache, b.v_cache, b.table], &p, grid)
}

/// RMSNorm of each q and k head of every token's qkv row, in place (q heads with `q_norm`,
/// k heads with `k_norm`, both [d_h]).
pub fn head_norm(
    rec: &mut Recorder,
    tokens: Tokens,
    label: String,
    qkv: &wgpu::Buffer,
    norms: [&Tensor; 2],
    heads: Heads,
    eps: f32,
) -> Result<()> {
    let p = params::HeadNorm { n_heads: heads.n_heads, n_kv_heads: heads.n_kv_heads, head_dim: heads.head_dim, eps };
    let grid = Grid::workgroups(heads.n_heads + heads.n_kv_heads).layers(tokens.rows());
    rec.push(label, Kernel::HeadNorm, &[qkv, &norms[0].buffer, &norms[1].buffer], &p, grid)
}

/// y[t] += bias over rows of `bias.cols()` elements.
pub fn add_bias(rec: &mut Recorder, tokens: Tokens, label: String, y: &wgpu::Buffer, bias: &Tensor) -> Result<()> {
    let n = bias.cols();
    rec.push(label, Kernel::AddBias, &[y, &bias.buffer], &params::AddBias { n }, Grid::invocations(n).layers(tokens.rows()))
}

/// Where one layer's attention reads and writes.
pub struct AttentionBuffers<'a> {
    /// [B × h · d_h] the heads' outputs, concatenated.
    pub out: &'a wgpu::Buffer,
    /// [L × h × T] each layer's scores for its last token, then [L × h × 2] their softmax
    /// statistics (`softmax_weights`).
    pub att: &'a wgpu::Buffer,
    /// [B × h × n_splits × (4 + d_h)] statistics and partial outputs per split (`part_bytes`).
    pub part: &'a wgpu::Buffer,
    /// [B × qkv_row] q read from each token's row.
    pub qkv: &'a wgpu::Buffer,
    pub k_cache: &'a wgpu::Buffer,
    pub v_cache: &'a wgpu::Buffer,
}

/// The shape of the attention passes for a model and context.
#[derive(Clone, Copy, Debug)]
pub struct Attention {
    pub heads: Heads,
    /// G: query heads per workgroup of pass 1 (dividing h / h_kv, at most 4).
    pub group: u32,
    pub kv: KvType,
    /// T: cache rows, the row length of `att`.
    pub context: u32,
    /// S: cache rows per split (at most 256), and ⌈T / S⌉ ≤ 64 splits.
    pub split: u32,
    /// Q: tokens per workgroup of pass 1 (1; for prefill, `for_chunk`'s: 2 in the workgroup form
    /// on CPU-type adapters where its memory allows, 4 in the online form).
    pub tokens: u32,
    /// Lanes of the online form of pass 1 (`Tuning::attention_lanes`); 0: the workgroup form,
    /// also where a lane would keep more than `ONLINE_VEC4S`.
    pub lanes: u32,
    pub n_splits: u32,
    /// Elements: where this layer's [h × T] scores and its [h × 2] statistics start in `att`.
    pub att_offset: u32,
    pub stats_offset: u32,
    /// Multiplies q·k.
    pub scale: f32,
    /// W: positions a sliding-window layer attends (0: all), and R: the cache's rows.
    pub window: u32,
    pub rows: u32,
}

/// The most vec4s of queries and sums one lane of the online form keeps (2 · d_h/4 · G · Q):
/// llvmpipe builds a kernel as a coroutine, and the time to build its frame grows much faster
/// than the values live in it. Measured cold (no shader cache) for SmolLM2's heads (d_h = 64,
/// G = 3): 96 vec4s ~1 s, 192 ~6 s, 384 ~20 s; Gemma 3's (d_h = 256, G = 4) at 2,048, minutes.
/// Shapes past it take fewer tokens per workgroup, or the workgroup form.
pub const ONLINE_VEC4S: u32 = 192;

/// The longest context the attention kernels take: 64 splits of at most 256 rows (the rows of
/// one split are held in workgroup memory).
pub const MAX_CONTEXT: usize = 64 * 256;

/// Refuses a model the GPU kernels cannot run, from its header alone: a head dimension the
/// attention kernels do not take, a context past `MAX_CONTEXT`, a weight row that is not whole
/// blocks of 32 elements.
pub fn check_shapes(g: &crate::gguf::Gguf, cfg: &crate::config::Config, context: usize) -> Result<()> {
    let hd = cfg.head_dim;
    if hd % 4 != 0 || hd > 256 {
        return Err(Error::NotSupported(format!("head dimension {hd} (the GPU kernels take a multiple of 4, at most 256)")));
    }
    if context > MAX_CONTEXT {
        return Err(Error::Option(format!("a context of {context} positions is more than the {MAX_CONTEXT} the GPU attention kernels take")));
    }
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

impl Attention {
    /// The shape for `context` positions and `layers` layer slices, for layer 0: G the largest of
    /// 4, 3, 2, 1 dividing h / h_kv; S the device's least rows per split (`least_split`), more
    /// when the context needs more than 64 splits.
    pub fn new(heads: Heads, kv: KvType, context: usize, layers: usize, least_split: usize, lanes: u32, scale: f32) -> Self {
        let g = heads.n_heads / heads.n_kv_heads;
        let group = (1..=4).rev().find(|k| g.is_multiple_of(*k)).unwrap_or(1);
        let split = least_split.max(context.div_ceil(64)) as u32;
        let lanes = if 2 * heads.head_dim / 4 * group <= ONLINE_VEC4S { lanes } else { 0 };
        Attention {
            heads,
            group,
            kv,
            context: context as u32,
            split,
            n_splits: (context as u32).div_ceil(split),
            tokens: 1,
            lanes,
            att_offset: 0,
            stats_offset: (layers as u32) * heads.n_heads * context as u32,
            scale,
            window: 0,
            rows: context as u32,
        }
    }

    /// The first pass's workgroups per step (`StepTable::with_grids`).
    pub fn split_grid(&self) -> SplitGrid {
        SplitGrid { groups: self.heads.n_heads / self.group, split: self.split, tokens: self.tokens }
    }

    /// The shape for prefill chunks: up to `q` tokens per workgroup in the online form (within
    /// `ONLINE_VEC4S`); in the workgroup
    /// form up to `q`, as many as its workgroup memory holds the queries of (Q·G·d_h/4 vec4s ≤
    /// 256) and the scores of, over splits of S ≤ 512 / Q rows (fewer rows per split than
    /// decode's where needed, while the context still fits 64 splits).
    pub fn for_chunk(self, q: u32) -> Self {
        if self.lanes > 0 {
            // The online form keeps the tile in registers: as many tokens as `ONLINE_VEC4S` allows.
            let fits = |q: u32| 2 * self.heads.head_dim / 4 * self.group * q <= ONLINE_VEC4S;
            return Attention { tokens: (1..=q.max(1)).rev().find(|&q| fits(q)).unwrap_or(1), ..self };
        }
        let least = self.context.div_ceil(64);
        let fits = |q: u32| q * self.group * self.heads.head_dim / 4 <= 256 && least * q <= 512;
        let q = (1..=q.max(1)).rev().find(|&q| fits(q)).unwrap_or(1);
        let split = self.split.min(512 / q).max(least);
        Attention { tokens: q, split, n_splits: self.context.div_ceil(split), ..self }
    }

    /// The same shape over a sliding window of W positions kept in a ring of R cache rows.
    pub fn windowed(self, window: u32, rows: u32) -> Self {
        Attention { window, rows, ..self }
    }

    /// The same shape writing layer `l`'s slices of `att` (from layer 0's).
    pub fn layer(self, l: usize) -> Self {
        let h = self.heads.n_heads;
        Attention { att_offset: l as u32 * h * self.context, stats_offset: self.stats_offset + l as u32 * h * 2, ..self }
    }

    /// Bytes of `att` for `layers` layers: scores [L × h × T], statistics [L × h × 2].
    pub fn att_bytes(&self, layers: usize) -> u64 {
        layers as u64 * self.heads.n_heads as u64 * (self.context as u64 + 2) * 4
    }

    /// Bytes of the per-split buffer `part` for `tokens` rows.
    pub fn part_bytes(&self, tokens: u32) -> u64 {
        tokens as u64 * self.heads.n_heads as u64 * self.n_splits as u64 * (4 + self.heads.head_dim as u64) * 4
    }
}

/// Causal attention of each token over cache rows 0..=its position, in two passes: per split of
/// the cache, softmax statistics and partial outputs (one workgroup per split and group of G
/// query heads); then the merge into outputs and normalised weights (one workgroup per head).
pub fn attention(rec: &mut Recorder, tokens: Tokens, label: &str, b: &AttentionBuffers, a: &Attention) -> Result<()> {
    let Heads { n_heads, n_kv_heads, head_dim } = a.heads;
    let p = params::Attention {
        n_heads,
        n_kv_heads,
        att_stride: a.context,
        att_offset: a.att_offset,
        scale: a.scale,
        split: a.split,
        n_splits: a.n_splits,
        window: a.window,
        rows: a.rows,
    };
    let z = tokens.rows();
    let kernel = Kernel::Attention { head_dim, group: a.group, kv: a.kv, tokens: a.tokens, lanes: a.lanes };
    let grid = Grid::workgroups(n_heads / a.group * a.n_splits).layers(z.div_ceil(a.tokens)).by_step();
    rec.push(format!("{label}.attention"), kernel, &[b.part, b.att, b.qkv, b.k_cache, b.v_cache], &p, grid)?;
    let m =
        params::AttentionMerge { n_heads, head_dim, stats_offset: a.stats_offset, split: a.split, n_splits: a.n_splits, window: a.window };
    rec.push(format!("{label}.attention_merge"), Kernel::AttentionMerge, &[b.out, b.att, b.part], &m, Grid::workgroups(n_heads).layers(z))
}

/// The softmax weights of one layer's last token from what `attention` leaves in `att`: its
/// scores `scores` ([h × T], s_j = q·k_j · scale) and `stats` ([h × 2], (M, L) per head):
/// w_j = e^(s_j − M) / L over the positions attended lo..n, 0 before lo. Returns [h × n].
pub fn softmax_weights(scores: &[f32], stats: &[f32], t: usize, lo: usize, n: usize) -> Vec<f32> {
    scores
        .chunks(t)
        .zip(stats.chunks(2))
        .flat_map(|(row, ml)| (0..n).map(move |j| if j < lo { 0.0 } else { (row[j] - ml[0]).exp() / ml[1] }))
        .collect()
}

/// out[t] = act(gate[t]) ⊙ up[t] over rows gate_up[t] = [gate (f) | up (f)].
pub fn glu(rec: &mut Recorder, tokens: Tokens, label: String, out: &wgpu::Buffer, gate_up: &wgpu::Buffer, f: u32, act: Act) -> Result<()> {
    let p = params::Glu { n: f, act: act.code() };
    rec.push(label, Kernel::Glu, &[out, gate_up], &p, Grid::invocations(f).layers(tokens.rows()))
}

/// Entries the GPU's next-token table keeps (`K` in top_k.wgsl).
pub const TOP_K: usize = 16;
/// Slices of the logits in pass 1 of the top-k.
pub const TOP_K_SLICES: u32 = 64;

/// u32 words of the top-k result: [max, sum, K × (id, logit)].
pub const fn top_k_words() -> usize {
    2 + 2 * TOP_K
}

/// The softmax statistics and the `TOP_K` largest of `n` logits into `out` (`top_k_words`),
/// through `part` ([TOP_K_SLICES × top_k_words] u32): one workgroup per slice, then one to merge.
pub fn top_k(rec: &mut Recorder, out: &wgpu::Buffer, part: &wgpu::Buffer, logits: &wgpu::Buffer, n: u32) -> Result<()> {
    let p = params::TopK { n, chunk: n.div_ceil(TOP_K_SLICES) };
    rec.push("top_k", Kernel::TopK, &[part, logits], &p, Grid::workgroups(TOP_K_SLICES))?;
    rec.push("top_k_merge", Kernel::TopKMerge, &[out, part], &params::TopKMerge { slices: TOP_K_SLICES }, Grid::workgroups(1))
}

/// (argmax, its logit) of `n` logits into `out` ([2] u32), one workgroup.
pub fn argmax(rec: &mut Recorder, out: &wgpu::Buffer, logits: &wgpu::Buffer, n: u32) -> Result<()> {
    rec.push("argmax", Kernel::Argmax, &[out, logits], &params::Argmax { n }, Grid::workgroups(1))
}
