//! Programs: the dispatches of a forward pass, recorded once at load (pipelines, bind groups and
//! the params arena all created then) and replayed for each position with only a dynamic offset
//! changing.

use std::rc::Rc;

use crate::backend::gpu::context::GpuContext;
use crate::backend::gpu::pipeline::Pipeline;
use crate::backend::gpu::shader::{check_params, Params, Slot, Spec, WORKGROUP};
use crate::core::flaw::Flaw;
use crate::error::{Error, Result};
use crate::params;

/// Uniform slots are 256 bytes apart: the largest `minUniformBufferOffsetAlignment` WebGPU allows.
pub const SLOT: u64 = 256;

params! {
    /// Where a pass runs: `n` tokens at positions pos..pos + n (`struct Step` of common.wgsl).
    /// Decoding binds one 256-byte slot per cache row (n = 1) by dynamic offset; prefill writes
    /// one slot per chunk.
    pub struct Step {
        pub pos: u32,
        pub n: u32,
        /// A teaching flaw's code (`Flaw::CODES`).
        pub flaw: u32,
        pub _pad: u32,
    }
}

/// Regions of the decode table: one per code of the step uniform's `flaw`.
const FLAW_CODES: usize = Flaw::N_CODES;

/// `Step` uniforms bound by dynamic offset. The decode table holds one `Step { pos, n: 1 }` per
/// cache row, written once at load: the dispatches of position `pos` bind slot pos, so a decode
/// step writes no uniforms at all. After those T slots come T more for each teaching flaw that
/// the kernels carry out (`Flaw::CODES`), so a flawed step differs from a correct
/// one only in its offset. The chunk table has one slot, written before each prefill chunk's
/// submit (queue writes are ordered with submits).
pub struct StepTable {
    pub buffer: wgpu::Buffer,
    pub positions: usize,
    /// False for the one-slot chunk table: every pass binds slot 0.
    per_position: bool,
    /// Indirect dispatch arguments, one entry of `GRID_ENTRY` bytes per slot, for the dispatches
    /// whose workgroups follow the step (`Grid::by_step`), and their shape.
    grids: Option<(wgpu::Buffer, SplitGrid)>,
}

/// Bytes per indirect dispatch entry (x, y, z and a pad word).
const GRID_ENTRY: u64 = 16;

/// The workgroups of the attention's first pass for a step of n tokens from position pos: the
/// splits of S positions that hold positions ..pos + n, times the query-head groups, along x;
/// the tokens (or tiles of them) along z. Dispatching only those (instead of every split of the context and every
/// token row of a chunk) matters where an empty workgroup is not free: on SwiftShader each one
/// cost ~0.3 ms (bench/RESULTS.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitGrid {
    pub groups: u32,
    pub split: u32,
    /// Tokens per workgroup along z.
    pub tokens: u32,
}

impl SplitGrid {
    fn entry(&self, pos: usize, n: usize) -> [u32; 4] {
        [self.groups * ((pos + n) as u32).div_ceil(self.split), 1, (n as u32).div_ceil(self.tokens), 0]
    }
}

impl StepTable {
    /// Bytes of the decode table for `positions` cache rows.
    pub fn bytes(positions: usize) -> u64 {
        FLAW_CODES as u64 * positions as u64 * SLOT
    }

    pub fn new(ctx: &GpuContext, positions: usize) -> Result<Self> {
        let size = Self::bytes(positions);
        let buffer = ctx.uniform("step uniforms", size)?;
        let mut bytes = vec![0u8; size as usize];
        for flaw in 0..FLAW_CODES {
            for pos in 0..positions {
                let s = Step { pos: pos as u32, n: 1, flaw: flaw as u32, _pad: 0 };
                bytes[(flaw * positions + pos) * SLOT as usize..][..16].copy_from_slice(bytemuck::bytes_of(&s));
            }
        }
        ctx.queue.write_buffer(&buffer, 0, &bytes);
        Ok(StepTable { buffer, positions, per_position: true, grids: None })
    }

    /// The one-slot table for prefill chunks.
    pub fn chunk(ctx: &GpuContext) -> Result<Self> {
        Ok(StepTable { buffer: ctx.uniform("chunk step uniform", SLOT)?, positions: 1, per_position: false, grids: None })
    }

    /// Adds the indirect dispatch entries of `grid`: one per slot of the decode table, written
    /// now; the chunk table's one entry is written by `set_chunk`.
    pub fn with_grids(mut self, ctx: &GpuContext, grid: SplitGrid) -> Result<Self> {
        let slots = if self.per_position { FLAW_CODES * self.positions } else { 1 };
        let label = if self.per_position { "step grids" } else { "chunk step grid" };
        let buffer = ctx.buffer(label, slots as u64 * GRID_ENTRY, wgpu::BufferUsages::INDIRECT | wgpu::BufferUsages::COPY_DST)?;
        if self.per_position {
            let entries: Vec<[u32; 4]> = (0..slots).map(|i| grid.entry(i % self.positions, 1)).collect();
            ctx.queue.write_buffer(&buffer, 0, bytemuck::cast_slice(&entries));
        }
        self.grids = Some((buffer, grid));
        Ok(self)
    }

    /// Points the chunk table at `n` tokens from position `pos`, for the next submit.
    pub fn set_chunk(&self, queue: &wgpu::Queue, pos: usize, n: usize) {
        debug_assert!(!self.per_position);
        queue.write_buffer(&self.buffer, 0, bytemuck::bytes_of(&Step { pos: pos as u32, n: n as u32, flaw: 0, _pad: 0 }));
        if let Some((buffer, grid)) = &self.grids {
            queue.write_buffer(buffer, 0, bytemuck::cast_slice(&grid.entry(pos, n)));
        }
    }

    /// The dynamic offset of position `pos` (with a teaching flaw's code, 0 for none).
    pub fn offset(&self, pos: usize, flaw: u32) -> u32 {
        if self.per_position {
            ((flaw as u64 * self.positions as u64 + pos as u64) * SLOT) as u32
        } else {
            0
        }
    }
}

pub struct Dispatch {
    pub label: String,
    pipeline: Rc<Pipeline>,
    bind_group: wgpu::BindGroup,
    workgroups: [u32; 3],
    /// Binds the step table's slot for the position (a dynamic offset).
    uses_step: bool,
    /// The step table's indirect entries, where the workgroups follow the step.
    by_step: Option<wgpu::Buffer>,
}

/// A recorded list of dispatches.
#[derive(Default)]
pub struct Program {
    pub dispatches: Vec<Dispatch>,
}

impl Program {
    /// Encodes every dispatch into `pass`, binding the step table at `step_offset`
    /// (`StepTable::offset`).
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>, step_offset: u32) {
        for i in 0..self.dispatches.len() {
            self.encode_one(pass, i, step_offset);
        }
    }

    /// Encodes dispatch `i` alone.
    pub fn encode_one(&self, pass: &mut wgpu::ComputePass<'_>, i: usize, step_offset: u32) {
        let d = &self.dispatches[i];
        pass.set_pipeline(&d.pipeline.pipeline);
        let offset = [step_offset];
        let dynamic: &[u32] = if d.uses_step { &offset } else { &[] };
        pass.set_bind_group(0, &d.bind_group, dynamic);
        match &d.by_step {
            Some(grids) => pass.dispatch_workgroups_indirect(grids, step_offset as u64 / SLOT * GRID_ENTRY),
            None => pass.dispatch_workgroups(d.workgroups[0], d.workgroups[1], d.workgroups[2]),
        }
    }

    /// Encodes the program for `pos` in its own command buffer and submits it (no readback).
    pub fn run(&self, ctx: &GpuContext, steps: &StepTable, pos: usize) {
        let mut enc = ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("program") });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("program"), timestamp_writes: None });
            self.encode(&mut pass, steps.offset(pos, 0));
        }
        ctx.queue.submit([enc.finish()]);
    }

    pub fn len(&self) -> usize {
        self.dispatches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dispatches.is_empty()
    }
}

/// The workgroups of a dispatch: along x, enough `WORKGROUP`-invocation workgroups for a number
/// of invocations, or a number of workgroups itself; along z, `layers` (the tokens, or token
/// tiles, of a prefill chunk; 1 when decoding). An x count above the device's per-dimension
/// limit wraps into y (kernels index i = gid.x + gid.y · 64 · num_workgroups.x).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grid {
    workgroups: u32,
    layers: u32,
    /// The step table's `SplitGrid` entry gives the workgroups when it runs; these are the most.
    by_step: bool,
}

impl Grid {
    /// One invocation per unit of work, `n` of them.
    pub fn invocations(n: u32) -> Self {
        Grid { workgroups: n.div_ceil(WORKGROUP), layers: 1, by_step: false }
    }

    /// One workgroup per unit of work (a row, a head, a split), `n` of them.
    pub fn workgroups(n: u32) -> Self {
        Grid { workgroups: n, layers: 1, by_step: false }
    }

    /// The same over `z` layers of workgroups.
    pub fn layers(self, z: u32) -> Self {
        Grid { layers: z, ..self }
    }

    /// The workgroups of each step from the step table (`StepTable::with_grids`), at most these.
    pub fn by_step(self) -> Self {
        Grid { by_step: true, ..self }
    }
}

struct Pending {
    label: String,
    pipeline: Rc<Pipeline>,
    buffers: Vec<wgpu::Buffer>,
    params_offset: u64,
    workgroups: [u32; 3],
    by_step: bool,
}

/// Collects dispatches and their params; `finish` uploads the params arena and builds every bind
/// group. Shapes are checked here, when the op is recorded, not when it runs.
pub struct Recorder<'a> {
    ctx: &'a GpuContext,
    arena: Vec<u8>,
    pending: Vec<Pending>,
}

impl<'a> Recorder<'a> {
    pub fn new(ctx: &'a GpuContext) -> Self {
        Recorder { ctx, arena: Vec::new(), pending: Vec::new() }
    }

    pub fn ctx(&self) -> &'a GpuContext {
        self.ctx
    }

    /// Records the kernel of `spec` over `buffers` (its storage bindings in order: outputs, then
    /// inputs) with the params `p`, checked against the shader's `struct Params`, on `grid`.
    pub fn push<P: Params>(&mut self, label: impl Into<String>, spec: &Spec, buffers: &[&wgpu::Buffer], p: &P, grid: Grid) -> Result<()> {
        let label = label.into();
        let pipeline = self.ctx.pipeline(spec);
        match &pipeline.params {
            Some(fields) => check_params(&pipeline.label, fields, P::FIELDS).map_err(Error::Gpu)?,
            None => return Err(Error::Gpu(format!("{}: the shader declares no `struct Params`", pipeline.label))),
        }
        let storage = pipeline.storage_slots();
        if buffers.len() != storage {
            return Err(Error::Gpu(format!("{label}: {} takes {storage} buffers, got {}", pipeline.label, buffers.len())));
        }
        let (groups, z) = (grid.workgroups, grid.layers);
        let max = self.ctx.limits.max_compute_workgroups_per_dimension;
        let workgroups = if groups <= max { [groups.max(1), 1, z] } else { [max, groups.div_ceil(max), z] };
        if workgroups[1] > max || z > max {
            return Err(Error::Limit {
                what: format!("{label} workgroups"),
                need: groups as u64,
                limit: max as u64 * max as u64,
                limit_name: "maxComputeWorkgroupsPerDimension²",
            });
        }
        let params_offset = self.arena.len() as u64;
        self.arena.extend_from_slice(bytemuck::bytes_of(p));
        self.arena.resize((params_offset + SLOT) as usize, 0);
        let buffers = buffers.iter().map(|b| (*b).clone()).collect();
        self.pending.push(Pending { label, pipeline, buffers, params_offset, workgroups, by_step: grid.by_step });
        Ok(())
    }

    /// Builds the program: one params buffer receives the arena (kept alive by the bind groups),
    /// and every dispatch gets its bind group.
    pub fn finish(self, label: &str, steps: Option<&StepTable>) -> Result<Program> {
        let ctx = self.ctx;
        let params = ctx.uniform(&format!("{label} params"), (self.arena.len() as u64).max(SLOT))?;
        ctx.queue.write_buffer(&params, 0, &self.arena);
        ctx.note_created(self.pending.len() as u64);
        let mut dispatches = Vec::with_capacity(self.pending.len());
        for p in self.pending {
            let mut storage = p.buffers.iter();
            let mut entries = Vec::new();
            for &(binding, slot) in &p.pipeline.slots {
                let resource = match slot {
                    Slot::Out | Slot::In => storage.next().expect("checked in push").as_entire_binding(),
                    Slot::Params => wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: &params,
                        offset: p.params_offset,
                        size: wgpu::BufferSize::new(SLOT),
                    }),
                    Slot::Step => {
                        let s = steps.ok_or_else(|| Error::Gpu(format!("{}: needs the step table", p.label)))?;
                        wgpu::BindingResource::Buffer(wgpu::BufferBinding { buffer: &s.buffer, offset: 0, size: wgpu::BufferSize::new(16) })
                    }
                };
                entries.push(wgpu::BindGroupEntry { binding, resource });
            }
            let bind_group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(&p.label),
                layout: &p.pipeline.layout,
                entries: &entries,
            });
            let uses_step = p.pipeline.uses_step();
            let by_step = match (p.by_step, steps.and_then(|s| s.grids.as_ref())) {
                (false, _) => None,
                (true, Some((grids, _))) => Some(grids.clone()),
                (true, None) => return Err(Error::Gpu(format!("{}: needs the step table's grids", p.label))),
            };
            dispatches.push(Dispatch { label: p.label, pipeline: p.pipeline, bind_group, workgroups: p.workgroups, uses_step, by_step });
        }
        Ok(Program { dispatches })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::gpu::ops::glu;
    use crate::backend::gpu::shader::struct_fields;
    use crate::testing::*;

    #[test]
    fn recorder_checks_buffer_count_and_params() {
        let Some(ctx) = gpu() else { return };
        let b = ctx.storage("b", 16).unwrap();
        let mut rec = Recorder::new(&ctx);
        let glu = glu::Glu { n: 4, act: 0 };
        let err = rec.push("bad", &glu::spec(), &[&b], &glu, Grid::invocations(4)).unwrap_err().to_string();
        assert!(err.contains("takes 2 buffers"), "{err}");
        // The glu kernel bound with another kernel's params.
        let err = rec
            .push("bad", &glu::spec(), &[&b, &b], &Step { pos: 0, n: 1, flaw: 0, _pad: 0 }, Grid::invocations(4))
            .unwrap_err()
            .to_string();
        assert!(err.contains("do not match the shader's `struct Params`"), "{err}");
    }

    /// `Step` is the prelude's `struct Step`.
    #[test]
    fn step_matches_the_prelude() {
        let src = Spec::new("x", "").source(false);
        check_params("Step", &struct_fields(&src, "Step").unwrap(), Step::FIELDS).unwrap();
    }
}
