//! The backends behind one interface. `Backend` is what the engine runs: the GPU model (WGSL
//! kernels on wgpu, `gpu`) or the CPU model (`cpu`: the file's blocks, or f32 weights — the
//! reference). The engine calls `Backend`'s methods and never asks which one it holds; the match
//! over the two is written once, here (an enum rather than a trait object, because the GPU's
//! methods are async on every target, wasm32 included).
//!
//! Glossary (used in every backend module):
//! - position: a token's index in the sequence, 0-based; a step at position p attends over the
//!   cached positions that its layer sees (`Config::attended`);
//! - cache row: where a position's K and V live in a layer's cache (row p, or p mod R in the ring
//!   of a sliding-window layer); R: a layer's rows;
//! - T: the context, the positions a cache holds; B: the prefill chunk, positions per submit;
//! - chunk: the positions one forward call processes together (1 when decoding);
//! - readout: what a forward pass reads back from its last position (`Want`, `Readout`).

pub mod cpu;
pub mod gpu;

use crate::core::config::{Config, KvType};
use crate::core::flaw::Flaw;
use crate::core::gguf::{ByteSource, Gguf};
use crate::core::kv_policy::{Eviction, KvPolicy};
use crate::core::sampler::{argmax, top_k, TokenProb};
use crate::error::{Error, Result};
use cpu::{CpuModel, Weights};
use gpu::{GpuModel, GpuOptions};

/// The backend a user chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// WGSL kernels on WebGPU / Vulkan / Metal / DX12.
    Gpu,
    /// The CPU backend: weights kept in their GGUF blocks (memory ≈ the file), SIMD dot products
    /// on the fly, batched prefill.
    Cpu,
    /// The exact f32 forward pass (weights expanded to f32): the oracle the other two are tested
    /// against.
    Reference,
}

impl BackendKind {
    pub const ALL: [BackendKind; 3] = [BackendKind::Gpu, BackendKind::Cpu, BackendKind::Reference];

    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Gpu => "gpu",
            BackendKind::Cpu => "cpu",
            BackendKind::Reference => "reference",
        }
    }
}

impl std::str::FromStr for BackendKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        BackendKind::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| Error::Option(format!("unknown backend `{s}` (use gpu, cpu or reference)")))
    }
}

/// What a forward pass reads back from its last position. A backend may read back more than it
/// is asked for (the CPU has the logits anyway); `Readout` says what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Nothing: a prefill chunk before the last.
    Nothing,
    /// The whole [V] logits row.
    Logits,
    /// The greedy pick (the GPU picks it and reads back 8 bytes).
    Argmax,
    /// The greedy pick and the next-token table of the `TOP_K` most probable tokens with their
    /// probabilities (the GPU makes it and reads back 136 bytes).
    Top,
}

/// Entries of the next-token table a backend makes with `Want::Top`.
pub const TOP_K: usize = 16;

/// What the last forward pass read back, reused from step to step (no allocation per token).
pub struct Readout {
    /// [V] logits after the last fed position, valid while `has_logits`.
    pub logits: Vec<f32>,
    pub has_logits: bool,
    /// The greedy pick (ties to the lowest id), with `Want::Argmax` or `Want::Top`.
    pub argmax: Option<u32>,
    /// With `Want::Top`: the table, most probable first (empty otherwise).
    pub top: Vec<TokenProb>,
}

impl Readout {
    pub fn new(vocab: usize) -> Self {
        Readout { logits: vec![0.0; vocab], has_logits: false, argmax: None, top: Vec::with_capacity(TOP_K) }
    }

    /// Holds nothing fresh (the state after a pass that read nothing back).
    pub fn clear(&mut self) {
        self.has_logits = false;
        self.argmax = None;
        self.top.clear();
    }

    /// Fills what `want` asks for from a logits row the backend already has.
    fn fill_from(&mut self, logits: &[f32], want: Want) {
        self.clear();
        if want == Want::Nothing {
            return;
        }
        self.logits.copy_from_slice(logits);
        self.has_logits = true;
        if want != Want::Logits {
            self.argmax = Some(argmax(logits));
        }
        if want == Want::Top {
            self.top.extend(top_k(logits, TOP_K, 1.0));
        }
    }
}

/// Load settings a backend takes.
#[derive(Debug, Clone, Copy)]
pub struct BackendOptions {
    pub kind: BackendKind,
    /// T: KV-cache positions.
    pub context: usize,
    pub kv: KvType,
    /// What the cache evicts (`core::kv_policy`).
    pub eviction: Eviction,
    /// Optional device features and shapes of the GPU kernels.
    pub gpu: GpuOptions,
}

/// Whether backend `kind` can run cache policy `p` for a model of `cfg`. Every backend runs the
/// four precisions (the block types need rows of whole 32-value blocks, on the GPU of whole
/// pairs of them: one word of scales) and `window-N`; `sink-S-window-N` (keys turned at their
/// place in the cache) and `h2o-N` (eviction by accumulated attention) run on the CPU backends.
pub fn check_policy(kind: BackendKind, p: KvPolicy, cfg: &Config) -> Result<()> {
    let name = p.name();
    if kind == BackendKind::Gpu && matches!(p.eviction, Eviction::SinkWindow { .. } | Eviction::H2o { .. }) {
        return Err(Error::Option(format!(
            "KV-cache policy `{name}` runs on the cpu and reference backends; the gpu backend runs f32, f16, q8_0, q4_0 and window-N"
        )));
    }
    let rows = if kind == BackendKind::Gpu { 64 } else { 32 };
    if p.precision.blocks().is_some() && !cfg.kv_dim().is_multiple_of(rows) {
        return Err(Error::Option(format!(
            "KV-cache policy `{name}` on the {} backend needs K and V rows of a multiple of {rows} values; this model's have {}",
            kind.name(),
            cfg.kv_dim()
        )));
    }
    Ok(())
}

/// wasm32's linear memory: what the CPU backend can hold in a browser.
pub const WASM_MEMORY: u64 = 4 << 30;

/// Whether the CPU backends can hold the model in `limit` bytes of memory (`WASM_MEMORY` on
/// wasm32, no limit natively), from the header alone: the weights as the backend keeps them (the
/// cpu backend its blocks, the reference f32) and the f32 cache rows at `context` positions (an
/// evicting policy's slots), K and V for every layer. Refused with the figures, before a byte of
/// the weights is read.
pub fn check_memory(kind: BackendKind, g: &Gguf, cfg: &Config, context: usize, p: KvPolicy, limit: Option<u64>) -> Result<()> {
    let Some(limit) = limit.filter(|_| kind != BackendKind::Gpu) else { return Ok(()) };
    let weights: u64 = g.tensors.iter().map(|t| if kind == BackendKind::Reference { t.n_elements() * 4 } else { t.size }).sum();
    let rows = p.eviction.slots().unwrap_or(context);
    // The CPU keeps every cached value as f32, whatever the precision rounds it to.
    let cache = 2 * cfg.n_layers as u64 * cfg.kv_layer_bytes(rows, KvType::F32);
    if weights + cache <= limit {
        return Ok(());
    }
    let mib = |b: u64| b.div_ceil(1 << 20);
    Err(Error::Memory {
        what: format!(
            "on the {} backend the weights ({} MiB) and the KV cache at {context} positions ({} MiB)",
            kind.name(),
            mib(weights),
            mib(cache)
        ),
        need: weights + cache,
        limit: "wasm32's 4096 MiB of memory".into(),
        hint: "choose a smaller context, an evicting cache policy or the gpu backend",
    })
}

impl BackendOptions {
    pub fn policy(&self) -> KvPolicy {
        KvPolicy { precision: self.kv, eviction: self.eviction }
    }
}

/// A loaded model on one backend.
pub enum Backend {
    Gpu(Box<GpuModel>),
    Cpu(Box<CpuModel>),
}

impl Backend {
    /// Uploads (or reads) the weights of `g` from `src` and allocates the cache.
    pub async fn load(g: &Gguf<'_>, cfg: &Config, o: BackendOptions, src: &mut dyn ByteSource) -> Result<Self> {
        check_policy(o.kind, o.policy(), cfg)?;
        Ok(match o.kind {
            BackendKind::Gpu => Backend::Gpu(Box::new(GpuModel::load(g, cfg, o.context, o.gpu, o.policy(), src).await?)),
            BackendKind::Cpu => Backend::Cpu(Box::new(CpuModel::load(g, cfg, o.context, o.policy(), Weights::Blocks, src)?)),
            BackendKind::Reference => Backend::Cpu(Box::new(CpuModel::load(g, cfg, o.context, o.policy(), Weights::F32, src)?)),
        })
    }

    /// Runs `tokens` (at most `chunk()`) at positions start.. (with `Flaw::SameRow`, the engine
    /// passes the one row it writes), writing their K and V into the cache, and reads back what
    /// `want` asks for from the last one into `out`.
    pub async fn forward(&mut self, tokens: &[u32], start: usize, want: Want, flaw: Flaw, out: &mut Readout) -> Result<()> {
        match self {
            Backend::Gpu(m) => m.forward(tokens, start, want, flaw, out).await,
            Backend::Cpu(m) => {
                m.forward(tokens, start, want != Want::Nothing, flaw);
                out.fill_from(&m.logits, want);
                Ok(())
            }
        }
    }

    /// After a forward call: lets the event loop run, so that a Stop can arrive. The GPU waits
    /// for its chunk between the chunks of a feed (not after the last, whose readback waits);
    /// the CPU computes without awaiting anything, so it yields after every call.
    pub async fn after_chunk(&self, last: bool) -> Result<()> {
        match self {
            Backend::Gpu(m) if !last => m.ctx.wait_idle().await,
            Backend::Gpu(_) => Ok(()),
            Backend::Cpu(_) => {
                crate::clock::yield_now().await;
                Ok(())
            }
        }
    }

    /// Whether the text may run past the context T: the CPU's evicting caches hold at most their
    /// budget, in budget + 1 rows reused as positions are evicted (`cpu::Evicting`); sinks and
    /// window turn keys at their place in the cache (angles up to S + N), window and H2O at their
    /// text position, an angle the CPU computes per position (no table of T rows). The GPU's
    /// cache has T rows.
    pub fn passes_context(&self) -> bool {
        match self {
            Backend::Gpu(_) => false,
            Backend::Cpu(m) => m.evicting.is_some(),
        }
    }

    /// B: positions per forward call at most.
    pub fn chunk(&self) -> usize {
        match self {
            Backend::Gpu(m) => m.chunk(),
            Backend::Cpu(m) => m.batch,
        }
    }

    /// Zeroes K and V in every cache row from `from` on.
    pub async fn clear_rows(&mut self, from: usize) -> Result<()> {
        match self {
            Backend::Gpu(m) => m.clear_rows(from).await,
            Backend::Cpu(m) => {
                m.clear_rows(from);
                Ok(())
            }
        }
    }

    /// The attention weights of the last fed position in `layers`: [layers × h × n], n = the
    /// positions it attended.
    pub async fn attention_weights(&self, layers: std::ops::Range<usize>, n: usize) -> Result<Vec<f32>> {
        match self {
            Backend::Gpu(m) => m.attention_weights(layers, n).await,
            Backend::Cpu(m) => Ok(m.attention_weights(layers, n)),
        }
    }

    /// "gpu: ADAPTER", "cpu" or "reference".
    pub fn name(&self) -> String {
        match self {
            Backend::Gpu(m) => format!("gpu: {}", m.ctx.adapter_name()),
            Backend::Cpu(m) if m.weights == Weights::F32 => "reference".into(),
            Backend::Cpu(_) => "cpu".into(),
        }
    }

    /// Bytes of weights and of KV cache held (GPU buffers, or CPU memory).
    pub fn memory(&self) -> (u64, u64) {
        match self {
            Backend::Gpu(m) => (m.weights.bytes, m.cfg.kv_cache_bytes(m.kv.capacity, m.kv.ty)),
            Backend::Cpu(m) => (m.weight_bytes() as u64, m.kv_bytes() as u64),
        }
    }

    /// How the cache stores K and V.
    pub fn kv_type(&self) -> KvType {
        match self {
            Backend::Gpu(m) => m.kv.ty,
            Backend::Cpu(m) => m.kv_type,
        }
    }

    /// The positions layer `l` holds, ascending, where the cache evicts (`core::kv_policy`);
    /// None where it holds every position it was fed.
    pub fn held_positions(&self, l: usize) -> Option<&[usize]> {
        match self {
            Backend::Cpu(m) => m.evicting.as_ref().map(|e| e.held(l)),
            Backend::Gpu(_) => None,
        }
    }

    /// The GPU model, for what only it has: counters, profiles, single timed steps, the device.
    pub fn gpu(&self) -> Option<&GpuModel> {
        match self {
            Backend::Gpu(m) => Some(m),
            Backend::Cpu(_) => None,
        }
    }

    pub fn gpu_mut(&mut self) -> Option<&mut GpuModel> {
        match self {
            Backend::Gpu(m) => Some(m),
            Backend::Cpu(_) => None,
        }
    }
}
