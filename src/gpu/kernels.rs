//! The kernels: one WGSL file each under `shaders/`, the bindings each declares (outputs first,
//! then inputs, then `params`, then the per-position `step` uniform), and their pipelines.

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
    /// `var<uniform> step: Step`, bound with a dynamic offset of pos · 256.
    Step,
}

use Slot::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// x = E[tokens[pos]] for an embedding table of the given type.
    Embed(GgmlType),
    /// y (+)= W·x for weights of the given type.
    MatVec(GgmlType),
    RmsNorm,
    Rope,
    KvWrite,
    Attention,
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
            Kernel::RmsNorm => "rmsnorm".into(),
            Kernel::Rope => "rope".into(),
            Kernel::KvWrite => "kv_write".into(),
            Kernel::Attention => "attention".into(),
            Kernel::SwiGlu => "swiglu".into(),
            Kernel::Argmax => "argmax".into(),
        }
    }

    pub fn slots(self) -> &'static [Slot] {
        match self {
            Kernel::Embed(_) => &[Out, In, In, Params, Step],
            Kernel::MatVec(_) => &[Out, In, In, Params],
            Kernel::RmsNorm => &[Out, In, In, Params],
            Kernel::Rope => &[Out, In, Params, Step],
            Kernel::KvWrite => &[Out, Out, In, Params, Step],
            Kernel::Attention => &[Out, Out, In, In, In, Params, Step],
            Kernel::SwiGlu => &[Out, In, Params],
            Kernel::Argmax => &[Out, In, Params],
        }
    }

    pub fn uses_step(self) -> bool {
        self.slots().contains(&Step)
    }

    /// The WGSL module: the kernel's file, with the shared block decoder where it reads weights.
    pub fn source(self) -> String {
        match self {
            Kernel::Embed(_) => format!("{QUANT}\n{}", include_str!("../../shaders/embed.wgsl")),
            Kernel::MatVec(_) => format!("{QUANT}\n{}", include_str!("../../shaders/matvec.wgsl")),
            Kernel::RmsNorm => include_str!("../../shaders/rmsnorm.wgsl").into(),
            Kernel::Rope => include_str!("../../shaders/rope.wgsl").into(),
            Kernel::KvWrite => include_str!("../../shaders/kv_write.wgsl").into(),
            Kernel::Attention => include_str!("../../shaders/attention.wgsl").into(),
            Kernel::SwiGlu => include_str!("../../shaders/swiglu.wgsl").into(),
            Kernel::Argmax => include_str!("../../shaders/argmax.wgsl").into(),
        }
    }

    /// Pipeline-overridable constants (the weight type of the quantised kernels).
    fn constants(self) -> Vec<(&'static str, f64)> {
        match self {
            Kernel::Embed(t) | Kernel::MatVec(t) => vec![("WTYPE", t.id() as f64)],
            _ => vec![],
        }
    }
}

pub struct Pipeline {
    pub kernel: Kernel,
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
}

impl Pipeline {
    pub fn new(device: &wgpu::Device, kernel: Kernel) -> Self {
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
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(&label), entries: &entries });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(&label),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(&label),
            source: wgpu::ShaderSource::Wgsl(kernel.source().into()),
        });
        let constants = kernel.constants();
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
