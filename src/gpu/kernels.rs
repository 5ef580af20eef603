//! The kernels: one WGSL file each under `shaders/`, and for each `Kernel` one `spec` that says
//! everything about it — label, source (with the shared prelude and, where it reads weights, the
//! block decoder; for attention's first pass, the declarations its two forms share),
//! specialisation flags and pipeline constants. The bindings are read from the
//! shader itself, so they are written once, in WGSL.

use crate::config::KvType;
use crate::gpu::GpuContext;
use crate::quant::GgmlType;

/// Invocations per workgroup of every kernel (`@workgroup_size(64)`), except `argmax` (256, one
/// workgroup).
pub const WORKGROUP: u32 = 64;

/// What a binding is, read from its WGSL declaration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// `var<storage, read_write>`
    Out,
    /// `var<storage, read>`
    In,
    /// `var<uniform> p: Params`, a 256-byte slot in the params arena.
    Params,
    /// `var<uniform> step: Step` (first position, token count), bound with a dynamic offset.
    Step,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// x = E[tokens[pos]] for an embedding table of the given type.
    Embed(GgmlType),
    /// y (+)= W·x for weights of the given type (decode: one token): the mat-mul's source with a
    /// tile of one token.
    MatVec(GgmlType),
    /// Y (+)= W·X over the token rows of a prefill chunk.
    MatMul(GgmlType),
    RmsNorm,
    /// RMSNorm of each q and k head in place.
    HeadNorm,
    /// y[t] += bias.
    AddBias,
    /// RoPE on q and k (adjacent pairs, or NeoX halves); k and v appended to the cache.
    RopeKv {
        kv: KvType,
        neox: bool,
    },
    /// Attention pass 1: softmax statistics and partial outputs per split of the cache, for a
    /// head dimension, a number of query heads and a number of tokens per workgroup; `lanes` > 0:
    /// the online form (`attention_online.wgsl`) with a workgroup of that many lanes.
    Attention {
        head_dim: u32,
        group: u32,
        kv: KvType,
        tokens: u32,
        lanes: u32,
    },
    /// Attention pass 2: merges the splits into the output and normalised weights.
    AttentionMerge,
    /// act(gate) ⊙ up.
    Glu,
    /// (argmax, max) of the logits, ties to the lowest index.
    Argmax,
    /// Top-k pass 1: softmax statistics and the k best logits of each slice.
    TopK,
    /// Top-k pass 2: merges the slices.
    TopKMerge,
}

const COMMON: &str = include_str!("../../shaders/common.wgsl");
const QUANT: &str = include_str!("../../shaders/quant.wgsl");
const ATTENTION_IO: &str = include_str!("../../shaders/attention_io.wgsl");
const MATMUL: &str = include_str!("../../shaders/matmul.wgsl");

/// The work of one invocation, chosen per adapter (`context::tuning_for`): the register tiles,
/// weight rows of the mat-vec (× 1 token) and rows × tokens of the mat-mul, and the attention's
/// shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuning {
    pub matvec_rows: u32,
    pub matmul_rows: u32,
    pub matmul_tokens: u32,
    /// B: tokens per prefill submit, the rows of the activation buffers.
    pub prefill_chunk: u32,
    /// The least cache rows one attention workgroup covers.
    pub attention_split: u32,
    /// Groups of 16 lanes splitting the rows of the attention's weighted sum: 1, 2 or 4.
    pub attention_phases: u32,
    /// Tokens of a prefill chunk per workgroup of the workgroup form of attention (1 or 2),
    /// sharing each K and V load.
    pub attention_tokens: u32,
    /// Lanes of the online attention kernel, one subgroup (at most the adapter's least subgroup
    /// size); 0: the workgroup kernel, `attention.wgsl`.
    pub attention_lanes: u32,
    /// Tokens of a prefill chunk per workgroup of the online kernel, its queries and sums in
    /// registers.
    pub attention_lane_tokens: u32,
}

/// One kernel's facts.
pub struct Spec {
    pub label: String,
    /// The kernel's own WGSL file.
    file: &'static str,
    /// Shared declarations between the prelude and its file: `quant.wgsl` where it reads ggml
    /// blocks, `attention_io.wgsl` for attention's first pass.
    shared: &'static str,
    /// `//#if` flags switched on besides `subgroups`.
    flags: Vec<&'static str>,
    /// The register tile (rows, tokens) that `//#for` blocks repeat over.
    tile: Option<(u32, u32)>,
    /// Pipeline-overridable constants.
    pub constants: Vec<(&'static str, f64)>,
}

impl Spec {
    fn new(label: impl Into<String>, file: &'static str) -> Self {
        Spec { label: label.into(), file, shared: "", flags: Vec::new(), tile: None, constants: Vec::new() }
    }

    /// Reads weights of type `t` through the shared block decoder (`WTYPE` fixed per pipeline).
    fn weights(mut self, t: GgmlType) -> Self {
        self.shared = QUANT;
        self.constant("WTYPE", t.id())
    }

    /// Attention's first pass: the bindings and helpers its two forms share.
    fn attention_io(mut self) -> Self {
        self.shared = ATTENTION_IO;
        self
    }

    fn constant(mut self, name: &'static str, v: u32) -> Self {
        self.constants.push((name, v as f64));
        self
    }

    /// `//#for` blocks repeated over a tile of `rows` × `tokens`.
    fn tile(mut self, rows: u32, tokens: u32) -> Self {
        self.tile = Some((rows, tokens));
        self.label.push_str(&format!("_{rows}x{tokens}"));
        self
    }

    /// The f16 cache layout where the cache is f16.
    fn kv(mut self, kv: KvType) -> Self {
        if kv == KvType::F16 {
            self.flags.push("kv_f16");
            self.label.push_str("_f16");
        }
        self
    }

    /// The WGSL module: prelude, shared declarations (`Spec::shared`), the kernel's file,
    /// specialised for subgroups or not (see `specialise`).
    pub fn source(&self, subgroups: bool) -> String {
        let mut flags = self.flags.clone();
        if subgroups {
            flags.push("subgroups");
        }
        let mut src = specialise(&format!("{COMMON}\n{}\n{}", self.shared, self.file), &flags);
        if let Some((rows, tokens)) = self.tile {
            src = expand_tiles(&src, rows, tokens);
        }
        // Browsers want the extension enabled in the module; naga natively rejects the line.
        if subgroups && cfg!(target_arch = "wasm32") {
            format!("enable subgroups;\n{src}")
        } else {
            src
        }
    }
}

impl Kernel {
    pub fn spec(self, tuning: Tuning) -> Spec {
        let ty = |t: GgmlType| t.name().to_lowercase();
        match self {
            Kernel::Embed(t) => Spec::new(format!("embed_{}", ty(t)), include_str!("../../shaders/embed.wgsl")).weights(t),
            Kernel::MatVec(t) => Spec::new(format!("matvec_{}", ty(t)), MATMUL).weights(t).tile(tuning.matvec_rows, 1),
            Kernel::MatMul(t) => Spec::new(format!("matmul_{}", ty(t)), MATMUL).weights(t).tile(tuning.matmul_rows, tuning.matmul_tokens),
            Kernel::RmsNorm => Spec::new("rmsnorm", include_str!("../../shaders/rmsnorm.wgsl")),
            Kernel::HeadNorm => Spec::new("head_norm", include_str!("../../shaders/head_norm.wgsl")),
            Kernel::AddBias => Spec::new("add_bias", include_str!("../../shaders/add_bias.wgsl")),
            Kernel::RopeKv { kv, neox } => {
                Spec::new(if neox { "rope_kv_neox" } else { "rope_kv" }, include_str!("../../shaders/rope_kv.wgsl"))
                    .kv(kv)
                    .constant("NEOX", neox as u32)
            }
            Kernel::Attention { head_dim, group, kv, tokens, lanes } if lanes > 0 => {
                Spec::new(format!("attention_online_g{group}_w{lanes}"), include_str!("../../shaders/attention_online.wgsl"))
                    .attention_io()
                    .tile(head_dim / 4, tokens)
                    .kv(kv)
                    .constant("GROUP", group)
                    .constant("WG", lanes)
            }
            Kernel::Attention { head_dim, group, kv, tokens, .. } => {
                Spec::new(format!("attention_d{head_dim}_g{group}"), include_str!("../../shaders/attention.wgsl"))
                    .attention_io()
                    .tile(1, tokens)
                    .kv(kv)
                    .constant("HEAD_DIM", head_dim)
                    .constant("GROUP", group)
                    .constant("PHASES", tuning.attention_phases)
            }
            Kernel::AttentionMerge => Spec::new("attention_merge", include_str!("../../shaders/attention_merge.wgsl")),
            Kernel::Glu => Spec::new("glu", include_str!("../../shaders/glu.wgsl")),
            Kernel::Argmax => Spec::new("argmax", include_str!("../../shaders/argmax.wgsl")),
            Kernel::TopK => Spec::new("top_k", include_str!("../../shaders/top_k.wgsl")),
            Kernel::TopKMerge => Spec::new("top_k_merge", include_str!("../../shaders/top_k_merge.wgsl")),
        }
    }
}

/// Keeps the lines of one variant of a shader: between `//#if FLAG` and `//#else` (or
/// `//#endif`) when FLAG is in `flags`, between `//#else` and `//#endif` otherwise (not nested).
/// One source serves every variant; the plain one never names a subgroup built-in, so it
/// compiles everywhere. Flags: `subgroups`, `kv_f16`.
pub fn specialise(src: &str, flags: &[&str]) -> String {
    let mut out = String::with_capacity(src.len());
    let (mut keep, mut on) = (true, true);
    for line in src.lines() {
        let t = line.trim();
        if let Some(flag) = t.strip_prefix("//#if ") {
            on = flags.contains(&flag.trim());
            keep = on;
            continue;
        }
        match t {
            "//#else" => keep = !on,
            "//#endif" => keep = true,
            _ if keep => {
                out.push_str(line);
                out.push('\n');
            }
            _ => {}
        }
    }
    out
}

/// Repeats the lines between `//#for r` (or `t`, or `r t`) and `//#end` once per row r < `rows`,
/// token t < `tokens`, or pair, with `$r` and `$t` replaced by the numbers, and declares the tile
/// as `const R` and `const T`: straight-line code with named variables, which a compiler keeps in
/// registers where it would put an indexed array in memory.
pub fn expand_tiles(src: &str, rows: u32, tokens: u32) -> String {
    let mut out = format!("const R: u32 = {rows}u;\nconst T: u32 = {tokens}u;\n");
    let mut lines = src.lines();
    while let Some(line) = lines.next() {
        let Some(over) = line.trim().strip_prefix("//#for ") else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let body: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "//#end").collect();
        let rs = if over.contains('r') { rows } else { 1 };
        let ts = if over.contains('t') { tokens } else { 1 };
        for r in 0..rs {
            for t in 0..ts {
                for l in &body {
                    out.push_str(&l.replace("$r", &r.to_string()).replace("$t", &t.to_string()));
                    out.push('\n');
                }
            }
        }
    }
    out
}

/// The bindings a module declares, in binding order: `@group(0) @binding(i) var<…> name`.
/// Storage buffers are outputs (read_write) or inputs (read); uniforms are the params slot, or
/// the step table when named `step`.
pub fn bindings(src: &str) -> Vec<Slot> {
    let mut slots: Vec<(u32, Slot)> = src
        .lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix("@group(0) @binding(")?;
            let (i, decl) = rest.split_once(')')?;
            let slot = if decl.contains("var<storage, read_write>") {
                Slot::Out
            } else if decl.contains("var<storage, read>") {
                Slot::In
            } else if decl.contains("var<uniform> step") {
                Slot::Step
            } else {
                Slot::Params
            };
            Some((i.parse().ok()?, slot))
        })
        .collect();
    slots.sort_by_key(|s| s.0);
    slots.into_iter().map(|s| s.1).collect()
}

pub struct Pipeline {
    pub label: String,
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
    /// The bindings, in order (from the shader).
    pub slots: Vec<Slot>,
}

impl Pipeline {
    pub fn new(ctx: &GpuContext, kernel: Kernel) -> Self {
        let spec = kernel.spec(ctx.tuning);
        let source = spec.source(ctx.subgroups);
        let slots = bindings(&source);
        let label = spec.label;
        let entries: Vec<wgpu::BindGroupLayoutEntry> = slots
            .iter()
            .enumerate()
            .map(|(i, s)| wgpu::BindGroupLayoutEntry {
                binding: i as u32,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: match s {
                        Slot::Out | Slot::In => wgpu::BufferBindingType::Storage { read_only: *s == Slot::In },
                        Slot::Params | Slot::Step => wgpu::BufferBindingType::Uniform,
                    },
                    has_dynamic_offset: *s == Slot::Step,
                    min_binding_size: None,
                },
                count: None,
            })
            .collect();
        let device = &ctx.device;
        ctx.note_created(4);
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(&label), entries: &entries });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(&label),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let module = device
            .create_shader_module(wgpu::ShaderModuleDescriptor { label: Some(&label), source: wgpu::ShaderSource::Wgsl(source.into()) });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&label),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some("main"),
            compilation_options: wgpu::PipelineCompilationOptions { constants: &spec.constants, zero_initialize_workgroup_memory: false },
            cache: None,
        });
        Pipeline { label, pipeline, layout, slots }
    }

    /// Whether it binds the step table (by dynamic offset).
    pub fn uses_step(&self) -> bool {
        self.slots.contains(&Slot::Step)
    }

    /// Storage buffers it takes, outputs first.
    pub fn storage_slots(&self) -> usize {
        self.slots.iter().filter(|s| matches!(s, Slot::Out | Slot::In)).count()
    }
}
