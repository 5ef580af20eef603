//! Compute pipelines built from a kernel's `Spec`: the module, its bind group layout (from the
//! bindings the shader declares) and the fields of its `struct Params`, created once per
//! specialisation and cached by the context (`GpuContext::pipeline`), which counts them.

use crate::backend::gpu::shader::{bindings, struct_fields, Slot, Spec};

pub struct Pipeline {
    pub label: String,
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
    /// The bindings, in order (from the shader): (binding number, slot).
    pub slots: Vec<(u32, Slot)>,
    /// The fields of the shader's `struct Params`, if it has one.
    pub params: Option<Vec<(String, String)>>,
}

impl Pipeline {
    /// Builds the pipeline of `spec` (with subgroup operations where `subgroups`): 4 GPU objects.
    pub fn new(device: &wgpu::Device, spec: &Spec, subgroups: bool) -> Self {
        let source = spec.source(subgroups);
        let slots = bindings(&source);
        let params = struct_fields(&source, "Params");
        let label = spec.label.clone();
        let entries: Vec<wgpu::BindGroupLayoutEntry> = slots
            .iter()
            .map(|&(binding, ref s)| wgpu::BindGroupLayoutEntry {
                binding,
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
        Pipeline { label, pipeline, layout, slots, params }
    }

    /// Whether it binds the step table (by dynamic offset).
    pub fn uses_step(&self) -> bool {
        self.slots.iter().any(|s| s.1 == Slot::Step)
    }

    /// Storage buffers it takes, outputs first.
    pub fn storage_slots(&self) -> usize {
        self.slots.iter().filter(|s| matches!(s.1, Slot::Out | Slot::In)).count()
    }
}
