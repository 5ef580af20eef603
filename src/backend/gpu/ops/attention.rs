//! Causal grouped-query attention over the cache, in two passes: per split of the cache, softmax
//! statistics and partial outputs (`shaders/attention.wgsl`, the workgroup form, or
//! `shaders/attention_online.wgsl`, the online form for CPU-type adapters with subgroups; both
//! after `shaders/attention_io.wgsl`); then the merge into outputs and statistics
//! (`shaders/attention_merge.wgsl`).
//!
//! Its shape is decided once, at load, from the adapter and the model (`Plan`): the form, the
//! query heads per workgroup (G), the positions per split (S) and the prefill tokens per
//! workgroup (Q). The sizes of the kernels' workgroup arrays are the constants below, emitted
//! into the WGSL, so the plan's limits and the arrays are one number each.
//!
//! Glossary: G, query heads sharing one KV head that one workgroup serves; S, cache positions
//! per split; Q, prefill tokens per workgroup of pass 1; a record, the (m, l, o) of one (token,
//! head, split) in `part`.

use crate::backend::gpu::context::{GpuContext, Tuning};
use crate::backend::gpu::kv_cache::BlockLayout;
use crate::backend::gpu::program::{Grid, Recorder, SplitGrid};
use crate::backend::gpu::shader::Spec;
use crate::backend::gpu::weights::Tensor;
use crate::core::config::KvType;
use crate::error::{Error, Result};
use crate::params;

use super::{Heads, Tokens};

/// The most vec4s of queries and sums one lane of the online form keeps (2 · d_h/4 · G · Q):
/// llvmpipe builds a kernel as a coroutine, and the time to build its frame grows much faster
/// than the values live in it. Measured cold (no shader cache) for SmolLM2's heads (d_h = 64,
/// G = 3): 96 vec4s ~1 s, 192 ~6 s, 384 ~20 s; Gemma 3's (d_h = 256, G = 4) at 2,048, minutes.
/// Shapes past it take fewer tokens per workgroup, or the workgroup form.
pub const ONLINE_VEC4S: u32 = 192;

/// Workgroup memory of the workgroup form: the queries of a workgroup, [Q × G × d_h/4] vec4s
/// (also the weighted sum's exchange), and its scores, [Q × S] vec4s (G heads each).
pub const QUERY_VEC4S: u32 = 256;
pub const SCORE_VEC4S: u32 = 512;

/// The most splits a context is cut into (the merge keeps one scale per split in workgroup
/// memory).
pub const MAX_SPLITS: u32 = 64;

/// The longest context the attention kernels take: `MAX_SPLITS` splits of at most 256 rows, so
/// that a split's scores for a tile of two prefill tokens fit `SCORE_VEC4S`.
pub const MAX_CONTEXT: usize = MAX_SPLITS as usize * 256;

params! {
    /// Pass 1 (both forms).
    pub struct Attention {
        pub n_heads: u32,
        pub n_kv_heads: u32,
        /// Row length of the attention-weights buffer (the context T).
        pub att_stride: u32,
        /// Elements: where this layer's [h × T] slice starts.
        pub att_offset: u32,
        /// Multiplies q·k (1 / sqrt(head_dim)).
        pub scale: f32,
        /// S: positions per split, and the number of splits covering T.
        pub split: u32,
        pub n_splits: u32,
        /// W: positions attended on a sliding-window layer; 0: all.
        pub window: u32,
        /// R: cache rows (position p is row p mod R).
        pub rows: u32,
        /// With `Fresh` and q/k head norms: their epsilon.
        pub eps: f32,
        /// A block cache: the word of its buffers where the scales start (`kv_cache::BlockLayout`).
        pub scales: u32,
    }
}

params! {
    /// Pass 2: merges the splits.
    pub struct AttentionMerge {
        pub n_heads: u32,
        pub head_dim: u32,
        /// Elements: where this layer's [h × 2] softmax statistics (M, L) start in `att`.
        pub stats_offset: u32,
        pub split: u32,
        pub n_splits: u32,
        pub window: u32,
    }
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
    /// The fused decode step: q and this step's k and v arrive raw, and pass 1 norms and turns
    /// them and appends k and v to the cache (in place of `rope_kv` and `head_norm`).
    pub fresh: Option<Fresh<'a>>,
    /// Pass 1 only: the output projection merges the splits (one token).
    pub merge_later: bool,
}

/// What the fused decode step needs to turn (and norm) q and k itself.
#[derive(Clone, Copy)]
pub struct Fresh<'a> {
    /// [T × d_h/2] (cos, sin) of the layer's RoPE.
    pub table: &'a wgpu::Buffer,
    pub neox: bool,
    /// The q and k head norms' weights ([d_h] each) and epsilon, where the model has them.
    pub norms: Option<([&'a Tensor; 2], f32)>,
}

/// What both merges of the splits share (`shaders/split_merge.wgsl`): this pass's second and
/// the output projection's prologue (`project::Input::Merge`).
pub const SPLIT_MERGE: (&str, &str) = ("split_merge.wgsl", include_str!("../../../../shaders/split_merge.wgsl"));

/// Whether pass 1 can take the cache append for heads of `head_dim` turned adjacent or (`neox`)
/// by halves: the halves must be whole vec4s.
pub fn can_fuse(head_dim: u32, neox: bool) -> bool {
    head_dim.is_multiple_of(if neox { 8 } else { 4 })
}

/// How pass 1 is arranged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// `attention.wgsl`: a workgroup of 64 with the scores in workgroup memory; `phases` groups
    /// of 16 lanes split the rows of the weighted sum.
    Workgroup { phases: u32 },
    /// `attention_online.wgsl`: one subgroup of `lanes`, each running the softmax online over
    /// its rows, its queries and sums in registers.
    Online { lanes: u32 },
}

/// The shape of the attention passes for one kind of step (decode, or a prefill chunk), for
/// layer 0 (`layer` moves it) of a full layer (`windowed` makes it a ring's).
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub heads: Heads,
    pub form: Form,
    /// G: query heads per workgroup of pass 1 (dividing h / h_kv, at most 4).
    pub group: u32,
    pub kv: KvType,
    /// T: cache positions, the row length of `att`.
    pub context: u32,
    /// S, and ⌈T / S⌉ ≤ `MAX_SPLITS`.
    pub split: u32,
    pub n_splits: u32,
    /// Q: tokens per workgroup of pass 1.
    pub tokens: u32,
    /// Elements: where this layer's [h × T] scores and its [h × 2] statistics start in `att`.
    pub att_offset: u32,
    pub stats_offset: u32,
    /// Multiplies q·k.
    pub scale: f32,
    /// W: positions a sliding-window layer attends (0: all), and R: the cache's rows.
    pub window: u32,
    pub rows: u32,
}

/// The attention of a model on an adapter: the shapes of a decode step and of a prefill chunk.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub decode: Shape,
    pub chunk: Shape,
}

impl Plan {
    /// The plan for `ctx`'s adapter: the online form where the adapter's tuning asks for it and
    /// its subgroups hold a workgroup (lanes at most its least subgroup size).
    pub fn new(ctx: &GpuContext, heads: Heads, kv: KvType, context: usize, layers: usize, scale: f32) -> Self {
        let lanes = if ctx.subgroups { ctx.tuning.attention_lanes.min(ctx.info.subgroup_min_size) } else { 0 };
        Self::choose(&ctx.tuning, lanes, heads, kv, context, layers, scale)
    }

    /// The decisions, given the adapter's tuning and the online lanes it can run (0: none):
    /// G the largest of 4, 3, 2, 1 dividing h / h_kv; the online form where a lane's state fits
    /// `ONLINE_VEC4S`; decode splits of the tuning's least rows, more where the context needs
    /// more than `MAX_SPLITS`; for prefill chunks, as many tokens per workgroup as the tuning
    /// asks and the form holds (registers in the online form; in the workgroup form the queries
    /// in `QUERY_VEC4S` and the scores of its splits, shortened where needed, in `SCORE_VEC4S`).
    pub fn choose(t: &Tuning, lanes: u32, heads: Heads, kv: KvType, context: usize, layers: usize, scale: f32) -> Self {
        let per_kv = heads.n_heads / heads.n_kv_heads;
        let group = (1..=4).rev().find(|k| per_kv.is_multiple_of(*k)).unwrap_or(1);
        let hd4 = heads.head_dim / 4;
        let online_fits = |q: u32| 2 * hd4 * group * q <= ONLINE_VEC4S;
        let form = match lanes > 0 && online_fits(1) {
            true => Form::Online { lanes },
            false => Form::Workgroup { phases: t.attention_phases },
        };
        let least = (context as u32).div_ceil(MAX_SPLITS);
        let split = t.attention_split.max(least);
        let decode = Shape {
            heads,
            form,
            group,
            kv,
            context: context as u32,
            split,
            n_splits: (context as u32).div_ceil(split),
            tokens: 1,
            att_offset: 0,
            stats_offset: layers as u32 * heads.n_heads * context as u32,
            scale,
            window: 0,
            rows: context as u32,
        };
        let largest = |most: u32, fits: &dyn Fn(u32) -> bool| (1..=most.max(1)).rev().find(|&q| fits(q)).unwrap_or(1);
        let chunk = match form {
            Form::Online { .. } => decode.with_tokens(largest(t.attention_lane_tokens, &online_fits)),
            Form::Workgroup { .. } => {
                let q = largest(t.attention_tokens, &|q| q * group * hd4 <= QUERY_VEC4S && least * q <= SCORE_VEC4S);
                decode.with_tokens(q).with_split(split.min(SCORE_VEC4S / q).max(least))
            }
        };
        Plan { decode, chunk }
    }

    /// The shape for `tokens`' kind of step.
    pub fn shape(&self, tokens: Tokens) -> Shape {
        match tokens {
            Tokens::One => self.decode,
            Tokens::Chunk(_) => self.chunk,
        }
    }
}

impl Shape {
    /// The same with `q` tokens per workgroup of pass 1.
    pub fn with_tokens(self, q: u32) -> Self {
        Shape { tokens: q, ..self }
    }

    /// The same over splits of `split` positions.
    pub fn with_split(self, split: u32) -> Self {
        Shape { split, n_splits: self.context.div_ceil(split), ..self }
    }

    /// The same with G query heads per workgroup.
    pub fn with_group(self, group: u32) -> Self {
        Shape { group, ..self }
    }

    /// The same over a sliding window of W positions kept in a ring of R cache rows.
    pub fn windowed(self, window: u32, rows: u32) -> Self {
        Shape { window, rows, ..self }
    }

    /// The same shape writing layer `l`'s slices of `att` (from layer 0's).
    pub fn layer(self, l: usize) -> Self {
        let h = self.heads.n_heads;
        Shape { att_offset: l as u32 * h * self.context, stats_offset: self.stats_offset + l as u32 * h * 2, ..self }
    }

    /// The first pass's workgroups per step (`StepTable::with_grids`).
    pub fn split_grid(&self) -> SplitGrid {
        SplitGrid { groups: self.heads.n_heads / self.group, split: self.split, tokens: self.tokens }
    }

    /// Bytes of `att` for `layers` layers: scores [L × h × T], statistics [L × h × 2].
    pub fn att_bytes(&self, layers: usize) -> u64 {
        layers as u64 * self.heads.n_heads as u64 * (self.context as u64 + 2) * 4
    }

    /// Bytes of the per-split buffer `part` for `tokens` rows.
    pub fn part_bytes(&self, tokens: u32) -> u64 {
        tokens as u64 * self.heads.n_heads as u64 * self.n_splits as u64 * (4 + self.heads.head_dim as u64) * 4
    }

    /// Pass 1's kernel, with the cache append fused in where `fresh` has what it needs.
    fn fresh_spec(&self, fresh: Option<&Fresh>) -> Spec {
        match fresh {
            None => self.spec(),
            Some(f) => self.spec().flag("fresh", true).flag("qk_norm", f.norms.is_some()).constant("NEOX", f.neox as u32),
        }
    }

    /// Pass 1's kernel.
    fn spec(&self) -> Spec {
        let (hd, g, kv) = (self.heads.head_dim, self.group, self.kv);
        let cache =
            |s: Spec| s.flag("kv_f16", kv == KvType::F16).flag("kv_blocks", kv.blocks().is_some()).flag("kv_q8_0", kv == KvType::Q8_0);
        let io = ("attention_io.wgsl", include_str!("../../../../shaders/attention_io.wgsl"));
        match self.form {
            Form::Online { lanes } => {
                cache(Spec::new(format!("attention_online_g{g}_w{lanes}"), include_str!("../../../../shaders/attention_online.wgsl")))
                    .shared(io.0, io.1)
                    .tile(hd / 4, self.tokens)
                    .constant("GROUP", g)
                    .constant("WG", lanes)
            }
            Form::Workgroup { phases } => {
                cache(Spec::new(format!("attention_d{hd}_g{g}"), include_str!("../../../../shaders/attention.wgsl")))
                    .shared(io.0, io.1)
                    .tile(1, self.tokens)
                    .define("QUERY_VEC4S", QUERY_VEC4S)
                    .define("SCORE_VEC4S", SCORE_VEC4S)
                    .constant("HEAD_DIM", hd)
                    .constant("GROUP", g)
                    .constant("PHASES", phases)
            }
        }
    }
}

/// Refuses a model the attention kernels cannot run: a head dimension they do not take, or a
/// context past `MAX_CONTEXT`.
pub fn check(head_dim: usize, context: usize) -> Result<()> {
    if !head_dim.is_multiple_of(4) || head_dim > 256 {
        return Err(Error::NotSupported(format!("head dimension {head_dim} (the GPU kernels take a multiple of 4, at most 256)")));
    }
    if context > MAX_CONTEXT {
        return Err(Error::Option(format!(
            "a context of {context} positions is more than the {MAX_CONTEXT} the GPU attention kernels take"
        )));
    }
    Ok(())
}

/// Causal attention of each token over the cache rows it attends: pass 1 per split and group of
/// G query heads (only the splits holding the step's positions, from the step table), then the
/// merge per head and token — unless the output projection merges them
/// (`AttentionBuffers::merge_later`).
pub fn record(rec: &mut Recorder, tokens: Tokens, label: &str, b: &AttentionBuffers, a: &Shape) -> Result<()> {
    let Heads { n_heads, n_kv_heads, head_dim } = a.heads;
    let p = Attention {
        n_heads,
        n_kv_heads,
        att_stride: a.context,
        att_offset: a.att_offset,
        scale: a.scale,
        split: a.split,
        n_splits: a.n_splits,
        window: a.window,
        rows: a.rows,
        eps: b.fresh.and_then(|f| f.norms).map_or(0.0, |n| n.1),
        scales: a.kv.blocks().map_or(0, |_| BlockLayout::new(a.kv, a.rows, n_kv_heads * head_dim).scales),
    };
    let z = tokens.rows();
    let grid = Grid::workgroups(n_heads / a.group * a.n_splits).layers(z.div_ceil(a.tokens)).by_step();
    let mut buffers = vec![b.part, b.att, b.qkv, b.k_cache, b.v_cache];
    if let Some(f) = &b.fresh {
        if tokens != Tokens::One || !can_fuse(head_dim, f.neox) {
            return Err(Error::Gpu(format!("{label}: the fused cache append is for one token, heads of whole vec4 halves")));
        }
        buffers.push(f.table);
        if let Some(([qn, kn], _)) = f.norms {
            buffers.extend([&qn.buffer, &kn.buffer]);
        }
    }
    rec.push(format!("{label}.attention"), &a.fresh_spec(b.fresh.as_ref()), &buffers, &p, grid)?;
    if b.merge_later {
        // The merge is the output projection's prologue (`project::Input::Merge`).
        return Ok(());
    }
    let m = AttentionMerge { n_heads, head_dim, stats_offset: a.stats_offset, split: a.split, n_splits: a.n_splits, window: a.window };
    let merge = Spec::new("attention_merge", include_str!("../../../../shaders/attention_merge.wgsl"))
        .shared(SPLIT_MERGE.0, SPLIT_MERGE.1)
        .define("MAX_SPLITS", MAX_SPLITS);
    rec.push(format!("{label}.attention_merge"), &merge, &[b.out, b.att, b.part], &m, Grid::workgroups(n_heads).layers(z))
}

/// The softmax weights of one layer's last token from what `record` leaves in `att`: its
/// scores `scores` ([h × T], s_j = q·k_j · scale) and `stats` ([h × 2], (M, L) per head):
/// w_j = e^(s_j − M) / L over the positions attended lo..n, 0 before lo. Returns [h × n].
pub fn softmax_weights(scores: &[f32], stats: &[f32], t: usize, lo: usize, n: usize) -> Vec<f32> {
    scores
        .chunks(t)
        .zip(stats.chunks(2))
        .flat_map(|(row, ml)| (0..n).map(move |j| if j < lo { 0.0 } else { (row[j] - ml[0]).exp() / ml[1] }))
        .collect()
}

#[cfg(test)]
mod tests;
