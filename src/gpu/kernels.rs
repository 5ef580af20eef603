//! The kernels: one WGSL file each under `shaders/`, the bindings each declares (outputs first,
//! then inputs, then `params`, then the per-position `step` uniform), and their pipelines.

use crate::gpu::GpuContext;
use crate::quant::GgmlType;

/// What a binding is, in WGSL declaration order.
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

use Slot::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// x = E[tokens[pos]] for an embedding table of the given type.
    Embed(GgmlType),
    /// y (+)= W·x for weights of the given type (decode: one token).
    MatVec(GgmlType),
    /// Y (+)= W·X over the token rows of a prefill chunk.
    MatMul(GgmlType),
    RmsNorm,
    /// RoPE on q and k; k and v appended to the cache (stored as f32 or as f16).
    RopeKv {
        kv_f16: bool,
    },
    /// Attention pass 1: softmax statistics and partial outputs per split of the cache, for a
    /// head dimension and a number of query heads per workgroup.
    Attention {
        head_dim: u32,
        group: u32,
        kv_f16: bool,
    },
    /// Attention pass 2: merges the splits into the output and normalised weights.
    AttentionMerge,
    SwiGlu,
    /// (argmax, max) of the logits, ties to the lowest index.
    Argmax,
}

const QUANT: &str = include_str!("../../shaders/quant.wgsl");

impl Kernel {
    pub fn label(self) -> String {
        match self {
            Kernel::Embed(t) => format!("embed_{}", t.name().to_lowercase()),
            Kernel::MatVec(t) => format!("matvec_{}", t.name().to_lowercase()),
            Kernel::MatMul(t) => format!("matmul_{}", t.name().to_lowercase()),
            Kernel::RmsNorm => "rmsnorm".into(),
            Kernel::RopeKv { kv_f16 } => format!("rope_kv{}", if kv_f16 { "_f16" } else { "" }),
            Kernel::Attention { head_dim, group, kv_f16 } => {
                format!("attention_d{head_dim}_g{group}{}", if kv_f16 { "_f16" } else { "" })
            }
            Kernel::AttentionMerge => "attention_merge".into(),
            Kernel::SwiGlu => "swiglu".into(),
            Kernel::Argmax => "argmax".into(),
        }
    }

    pub fn slots(self) -> &'static [Slot] {
        match self {
            Kernel::Embed(_) => &[Out, In, In, Params, Step],
            Kernel::MatVec(_) => &[Out, In, In, Params],
            Kernel::MatMul(_) => &[Out, In, In, Params, Step],
            Kernel::RmsNorm => &[Out, In, In, Params, Step],
            Kernel::RopeKv { .. } => &[Out, Out, Out, In, Params, Step],
            Kernel::Attention { .. } => &[Out, Out, In, In, In, Params, Step],
            Kernel::AttentionMerge => &[Out, Out, In, Params, Step],
            Kernel::SwiGlu => &[Out, In, Params, Step],
            Kernel::Argmax => &[Out, In, Params],
        }
    }

    pub fn uses_step(self) -> bool {
        self.slots().contains(&Step)
    }

    /// The WGSL module: the kernel's file, with the shared block decoder where it reads weights,
    /// specialised for subgroups or not (see `specialise`).
    pub fn source(self, subgroups: bool) -> String {
        let mut flags = Vec::new();
        if subgroups {
            flags.push("subgroups");
        }
        if let Kernel::RopeKv { kv_f16: true } | Kernel::Attention { kv_f16: true, .. } = self {
            flags.push("kv_f16");
        }
        let src = specialise(&self.file(), &flags);
        // Browsers want the extension enabled in the module; naga natively rejects the line.
        if subgroups && cfg!(target_arch = "wasm32") {
            format!("enable subgroups;\n{src}")
        } else {
            src
        }
    }

    fn file(self) -> String {
        match self {
            Kernel::Embed(_) => format!("{QUANT}\n{}", include_str!("../../shaders/embed.wgsl")),
            Kernel::MatVec(_) => format!("{QUANT}\n{}", include_str!("../../shaders/matvec.wgsl")),
            Kernel::MatMul(_) => format!("{QUANT}\n{}", include_str!("../../shaders/matmul.wgsl")),
            Kernel::RmsNorm => include_str!("../../shaders/rmsnorm.wgsl").into(),
            Kernel::RopeKv { .. } => include_str!("../../shaders/rope_kv.wgsl").into(),
            Kernel::Attention { .. } => include_str!("../../shaders/attention.wgsl").into(),
            Kernel::AttentionMerge => include_str!("../../shaders/attention_merge.wgsl").into(),
            Kernel::SwiGlu => include_str!("../../shaders/swiglu.wgsl").into(),
            Kernel::Argmax => include_str!("../../shaders/argmax.wgsl").into(),
        }
    }

    /// Pipeline-overridable constants: the weight type and rows per invocation of the quantised
    /// kernels, the attention shape.
    fn constants(self, ctx: &GpuContext) -> Vec<(&'static str, f64)> {
        match self {
            Kernel::Embed(t) => vec![("WTYPE", t.id() as f64)],
            Kernel::MatVec(t) => vec![("WTYPE", t.id() as f64), ("ROWS", ctx.matvec_rows as f64)],
            Kernel::MatMul(t) => vec![("WTYPE", t.id() as f64), ("ROWS", ctx.matmul_rows as f64)],
            Kernel::Attention { head_dim, group, .. } => vec![("HEAD_DIM", head_dim as f64), ("GROUP", group as f64)],
            _ => vec![],
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

pub struct Pipeline {
    pub kernel: Kernel,
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
}

impl Pipeline {
    pub fn new(ctx: &GpuContext, kernel: Kernel) -> Self {
        let (device, subgroups) = (&ctx.device, ctx.subgroups);
        let label = kernel.label();
        let entries: Vec<wgpu::BindGroupLayoutEntry> = kernel
            .slots()
            .iter()
            .enumerate()
            .map(|(i, s)| wgpu::BindGroupLayoutEntry {
                binding: i as u32,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: match s {
                    Out | In => wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Storage { read_only: *s == In },
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    Params | Step => wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: *s == Step,
                        min_binding_size: None,
                    },
                },
                count: None,
            })
            .collect();
        ctx.note_created(4);
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(&label), entries: &entries });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(&label),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(&label),
            source: wgpu::ShaderSource::Wgsl(kernel.source(subgroups).into()),
        });
        let constants = kernel.constants(ctx);
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&label),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some("main"),
            compilation_options: wgpu::PipelineCompilationOptions { constants: &constants, zero_initialize_workgroup_memory: false },
            cache: None,
        });
        Pipeline { kernel, pipeline, layout }
    }
}
