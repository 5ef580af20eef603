//! The device context: adapter, device and queue with the adapter's real limits, the
//! uncaptured-error sink, pipeline cache, and readback.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use crate::backend::gpu::pipeline::Pipeline;
use crate::backend::gpu::shader::Spec;
use crate::error::{Error, Result};

/// The work of one invocation the adapter is best served by (`tuning_for`): the register tiles,
/// weight rows of the mat-vec (× 1 token) and rows × tokens of the mat-mul, and what the
/// attention's plan (`ops::attention::Plan`) starts from.
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
    /// Lanes of the online attention kernel where the adapter has subgroups (the plan takes at
    /// most its least subgroup size); 0: the workgroup kernel, `attention.wgsl`.
    pub attention_lanes: u32,
    /// Tokens of a prefill chunk per workgroup of the online kernel, its queries and sums in
    /// registers.
    pub attention_lane_tokens: u32,
}

/// Where browsers have WebGPU: said when there is no adapter, here and on the page.
pub const WEBGPU_BROWSERS: &str = "WebGPU is in Chrome and Edge 113+ on Windows, macOS and ChromeOS, Chrome 121+ on Android, \
    Chrome on Linux behind chrome://flags/#enable-unsafe-webgpu (or --enable-unsafe-webgpu), Firefox 141+ on Windows and Safari 26.";

/// Optional device features the kernels may use; each is taken only where the adapter has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuOptions {
    /// Subgroup reductions (`subgroups`) in place of workgroup-memory trees.
    pub subgroups: bool,
    /// (mat-vec, mat-mul) weight rows per invocation; None picks by adapter type.
    pub rows: Option<(u32, u32)>,
    /// Tokens per invocation of the mat-mul; None picks by adapter type.
    pub tokens: Option<u32>,
    /// The shapes a GPU-type adapter gets (`tuning_for`), whatever the adapter's type.
    pub gpu_shapes: bool,
    /// Split the vocabulary tables (`weights::TABLES`) into parts of at most this many bytes, as
    /// on a device whose binding limit is that (the device's own limit applies regardless).
    pub table_part_bytes: Option<u64>,
    /// Which of the decode step's fusions to make (`forward::Fusion`: bits of `FUSE_NORM`,
    /// `FUSE_ATTENTION`, `FUSE_MERGE`, `FUSE_GLU`); 0: one dispatch per op as in prefill (to
    /// compare, and to test both).
    pub fuse: u32,
}

/// `GpuOptions::fuse` bits: norms into the projections that read them; RoPE, head norms and the
/// cache append into attention; the split merge into the output projection; the gated
/// activation into the gate/up projection.
pub const FUSE_NORM: u32 = 1;
pub const FUSE_ATTENTION: u32 = 2;
pub const FUSE_MERGE: u32 = 4;
pub const FUSE_GLU: u32 = 8;
pub const FUSE_ALL: u32 = FUSE_NORM | FUSE_ATTENTION | FUSE_MERGE | FUSE_GLU;

impl GpuOptions {
    /// The plain kernels: no subgroup operations, one weight row per invocation, a small
    /// mat-mul tile, and otherwise the shapes a GPU adapter gets.
    pub fn plain() -> Self {
        GpuOptions { subgroups: false, rows: Some((1, 1)), tokens: Some(4), gpu_shapes: true, table_part_bytes: None, fuse: FUSE_ALL }
    }
}

impl Default for GpuOptions {
    /// Everything the adapter offers; natively `KVSCOPE_SUBGROUPS=0` turns subgroups off and
    /// `KVSCOPE_FUSE=0` (or a mask of `FUSE_*` bits) the fused decode step.
    fn default() -> Self {
        #[cfg(not(target_arch = "wasm32"))]
        let subgroups = std::env::var("KVSCOPE_SUBGROUPS").map_or(true, |v| v != "0");
        #[cfg(target_arch = "wasm32")]
        let subgroups = true;
        #[cfg(not(target_arch = "wasm32"))]
        let fuse = std::env::var("KVSCOPE_FUSE").ok().and_then(|v| v.parse().ok()).unwrap_or(FUSE_ALL);
        #[cfg(target_arch = "wasm32")]
        let fuse = FUSE_ALL;
        GpuOptions { subgroups, rows: None, tokens: None, gpu_shapes: false, table_part_bytes: None, fuse }
    }
}

/// The work per invocation of the kernels, by adapter type. CPU-type adapters (lavapipe,
/// SwiftShader) run an invocation's loop on a SIMD lane where a load from another address in
/// each lane (a gather) costs more than arithmetic, so sharing each load pays: measured on
/// lavapipe, a mat-vec tile of 4 rows (bench/RESULTS.md); for the mat-mul, a register tile of
/// 16 rows × 16 tokens (every decoded weight feeding 16 dot products, every input load 16);
/// attention in its online form (8 lanes, one subgroup, each K and V value loaded once per
/// workgroup; 1.5× faster than the workgroup form at 1,024 cached positions, 2.3× for a prefill
/// chunk there) over splits of 256 rows (two cores run the workgroups), with up to 4 prefill
/// tokens per workgroup as `ops::ONLINE_VEC4S` allows (2 for SmolLM2's heads: 4 ran 1.25×
/// faster but took 20 s instead of 6 to compile without a shader cache; heads too wide for one
/// token take the workgroup form). Where subgroups are missing they take the
/// workgroup form with one phase of 16 lanes for its weighted sum, so that each row's weight is
/// one load for the group, and two prefill tokens per workgroup sharing each K and V load. GPUs
/// keep one row per mat-vec invocation, for the most invocations in flight, a 4 × 4 mat-mul
/// tile, 64-row splits (more workgroups for long contexts), and the workgroup form with 4 phases
/// and one token per workgroup.
fn tuning_for(device_type: wgpu::DeviceType) -> Tuning {
    let prefill_chunk = crate::core::config::PREFILL_CHUNK as u32;
    if device_type == wgpu::DeviceType::Cpu {
        Tuning {
            matvec_rows: 4,
            matmul_rows: 16,
            matmul_tokens: 16,
            prefill_chunk,
            attention_split: 256,
            attention_phases: 1,
            attention_tokens: 2,
            attention_lanes: 8,
            attention_lane_tokens: 4,
        }
    } else {
        Tuning {
            matvec_rows: 1,
            matmul_rows: 4,
            matmul_tokens: 4,
            prefill_chunk,
            attention_split: 64,
            attention_phases: 4,
            attention_tokens: 1,
            attention_lanes: 0,
            attention_lane_tokens: 1,
        }
    }
}

/// The largest buffer `GpuContext::probe` asks for at a time.
pub const PROBE_PIECE: u64 = 256 << 20;

pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    /// `GpuOptions::table_part_bytes`.
    pub table_part_bytes: Option<u64>,
    /// `GpuOptions::fuse`.
    pub fuse: u32,
    pub features: wgpu::Features,
    /// Whether the kernels are built with subgroup operations.
    pub subgroups: bool,
    /// The work per invocation of the kernels (`tuning_for`, with `GpuOptions`' overrides).
    pub tuning: Tuning,
    /// Validation, out-of-memory and device-loss errors reported by wgpu, the loss first.
    errors: Arc<Mutex<Vec<Error>>>,
    /// Pipelines by `Spec::key`.
    pipelines: RefCell<HashMap<String, Rc<Pipeline>>>,
    /// Buffers, bind groups, layouts, shader modules and pipelines created so far.
    created: Cell<u64>,
    /// Bytes of every buffer created so far.
    buffer_bytes: Cell<u64>,
}

impl GpuContext {
    /// Picks the adapter (natively `WGPU_BACKEND` / `WGPU_ADAPTER_NAME` may steer it) and opens a
    /// device with that adapter's own limits, so large weight buffers are allowed where the
    /// hardware allows them.
    pub async fn new() -> Result<Self> {
        Self::with_options(GpuOptions::default()).await
    }

    /// As `new`, with the optional features limited to `opts`.
    pub async fn with_options(opts: GpuOptions) -> Result<Self> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                force_fallback_adapter: false,
                compatible_surface: None,
                apply_limit_buckets: false,
            })
            .await
            .map_err(|e| {
                let advice = if cfg!(target_arch = "wasm32") {
                    format!("This browser has no usable WebGPU adapter (is hardware acceleration on?). {WEBGPU_BROWSERS}")
                } else {
                    "Install a Vulkan, Metal or DX12 driver (on Debian/Ubuntu without a GPU: `apt-get install mesa-vulkan-drivers` for lavapipe)".to_string()
                };
                Error::NoAdapter(format!("{e}. {advice}"))
            })?;
        let info = adapter.get_info();
        let limits = adapter.limits();
        // wgpu 30 exposes `subgroups` natively only (its WebGPU backend does not map the feature):
        // in a browser, the engine worker asks for it itself (worker.js patches
        // `GPUAdapter.requestDevice`), and the device says whether it got it.
        let subgroups = opts.subgroups && adapter.features().contains(wgpu::Features::SUBGROUP);
        let features = if subgroups { wgpu::Features::SUBGROUP } else { wgpu::Features::empty() };
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("kvscope"),
                required_features: features,
                required_limits: limits.clone(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| Error::Gpu(format!("requesting a device from `{}`: {e}", info.name)))?;
        #[cfg(target_arch = "wasm32")]
        let subgroups = opts.subgroups && device.as_webgpu().is_some_and(|d| d.features().has("subgroups"));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut v) = sink.lock() {
                v.push(Error::Gpu(e.to_string()));
            }
        }));
        let sink = errors.clone();
        device.set_device_lost_callback(move |reason, msg| {
            if let Ok(mut v) = sink.lock() {
                v.insert(0, Error::DeviceLost(format!("{reason:?}{}{msg}", if msg.is_empty() { "" } else { ": " })));
            }
        });
        let by_adapter = tuning_for(if opts.gpu_shapes { wgpu::DeviceType::DiscreteGpu } else { info.device_type });
        let (matvec_rows, matmul_rows) = opts.rows.unwrap_or((by_adapter.matvec_rows, by_adapter.matmul_rows));
        let matmul_tokens = opts.tokens.unwrap_or(by_adapter.matmul_tokens);
        if ![matvec_rows, matmul_rows, matmul_tokens].iter().all(|n| (1..=16).contains(n)) {
            return Err(Error::Option(format!(
                "rows per invocation ({matvec_rows}, {matmul_rows}) and mat-mul tokens per invocation ({matmul_tokens}) must each be 1..=16"
            )));
        }
        Ok(GpuContext {
            device,
            queue,
            info,
            limits,
            features,
            subgroups,
            table_part_bytes: opts.table_part_bytes,
            fuse: opts.fuse,
            tuning: Tuning { matvec_rows, matmul_rows, matmul_tokens, ..by_adapter },
            errors,
            pipelines: RefCell::default(),
            created: Cell::new(0),
            buffer_bytes: Cell::new(0),
        })
    }

    /// The adapter's name (browsers often withhold it, and SwiftShader reports none).
    pub fn adapter_name(&self) -> String {
        let i = &self.info;
        let name = [i.name.as_str(), i.driver.as_str()].into_iter().find(|s| !s.is_empty()).unwrap_or("unnamed adapter");
        format!("{name} ({:?}, {:?}{})", i.backend, i.device_type, if self.subgroups { ", subgroups" } else { "" })
    }

    /// The first device loss, validation or out-of-memory error reported since the last call.
    pub fn check_errors(&self) -> Result<()> {
        let first = match self.errors.lock() {
            Ok(mut v) => v.drain(..).next(),
            Err(_) => Some(Error::Gpu("the error sink was poisoned".into())),
        };
        first.map_or(Ok(()), Err)
    }

    /// The pipeline of `spec`, built the first time it is asked for.
    pub fn pipeline(&self, spec: &Spec) -> Rc<Pipeline> {
        let build = || {
            self.note_created(4);
            Rc::new(Pipeline::new(&self.device, spec, self.subgroups))
        };
        self.pipelines.borrow_mut().entry(spec.key()).or_insert_with(build).clone()
    }

    /// Refuses a buffer the device cannot hold, naming it and the limit.
    pub fn check_size(&self, what: &str, size: u64, storage: bool) -> Result<()> {
        if size > self.limits.max_buffer_size {
            return Err(Error::Limit { what: what.into(), need: size, limit: self.limits.max_buffer_size, limit_name: "maxBufferSize" });
        }
        let bind = self.limits.max_storage_buffer_binding_size;
        if storage && size > bind {
            return Err(Error::Limit { what: what.into(), need: size, limit: bind, limit_name: "maxStorageBufferBindingSize" });
        }
        Ok(())
    }

    /// How much of `bytes` the device can allocate: WebGPU and wgpu say nothing of a device's
    /// free memory, so the only answer is to ask for it. Buffers of at most `PROBE_PIECE` bytes
    /// are created, each under an out-of-memory error scope, until `bytes` are held or one fails;
    /// then all are destroyed. Returns the bytes held before the first failure (`bytes` when
    /// none failed). No buffer is written, so no memory behind it need be touched.
    pub async fn probe(&self, bytes: u64) -> Result<u64> {
        let piece = PROBE_PIECE.min(self.limits.max_buffer_size).max(4) / 4 * 4;
        let mut held = Vec::new();
        let mut got = 0;
        while got < bytes {
            let size = piece.min(bytes - got).next_multiple_of(4);
            let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
            let b = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("allocation probe"),
                size,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            });
            self.note_created(1);
            let failed = scope.pop().await.is_some();
            held.push(b);
            if failed {
                break;
            }
            got += size;
        }
        for b in &held {
            b.destroy();
        }
        drop(held);
        self.wait_idle().await?;
        Ok(got.min(bytes))
    }

    /// Counts `n` GPU objects (buffers, bind groups, layouts, modules, pipelines) just created.
    pub fn note_created(&self, n: u64) {
        self.created.set(self.created.get() + n);
    }

    /// GPU objects created through this context so far: constant once a model is loaded.
    pub fn objects_created(&self) -> u64 {
        self.created.get()
    }

    /// Bytes of all the buffers created through this context so far.
    pub fn buffer_bytes(&self) -> u64 {
        self.buffer_bytes.get()
    }

    /// Every buffer is made here: checked against the device's limits (storage buffers also
    /// against the binding limit), counted, labelled.
    pub fn buffer(&self, label: &str, size: u64, usage: wgpu::BufferUsages) -> Result<wgpu::Buffer> {
        self.check_size(label, size, usage.contains(wgpu::BufferUsages::STORAGE))?;
        self.note_created(1);
        self.buffer_bytes.set(self.buffer_bytes.get() + size);
        Ok(self.device.create_buffer(&wgpu::BufferDescriptor { label: Some(label), size, usage, mapped_at_creation: false }))
    }

    /// A storage buffer of `size` bytes (rounded up to 4), zeroed.
    pub fn storage(&self, label: &str, size: u64) -> Result<wgpu::Buffer> {
        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
        self.buffer(label, size.max(4).next_multiple_of(4), usage)
    }

    /// A uniform buffer of `size` bytes, written with `queue.write_buffer`.
    pub fn uniform(&self, label: &str, size: u64) -> Result<wgpu::Buffer> {
        self.buffer(label, size, wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST)
    }

    /// A storage buffer holding `bytes` (zero-padded to a multiple of 4).
    pub fn storage_with(&self, label: &str, bytes: &[u8]) -> Result<wgpu::Buffer> {
        let b = self.storage(label, bytes.len() as u64)?;
        let whole = bytes.len() / 4 * 4;
        self.queue.write_buffer(&b, 0, &bytes[..whole]);
        if whole < bytes.len() {
            let mut tail = [0u8; 4];
            tail[..bytes.len() - whole].copy_from_slice(&bytes[whole..]);
            self.queue.write_buffer(&b, whole as u64, &tail);
        }
        Ok(b)
    }

    /// A buffer the CPU maps to read results back.
    pub fn staging(&self, label: &str, size: u64) -> Result<wgpu::Buffer> {
        self.buffer(label, size.next_multiple_of(4), wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST)
    }

    /// Waits for the GPU, maps `staging` and copies its first `out.len()` bytes out. The same
    /// code runs natively (the poll drives the callback) and on the web (the browser does).
    pub async fn read_staging(&self, staging: &wgpu::Buffer, out: &mut [u8]) -> Result<()> {
        let (tx, rx) = futures_channel::oneshot::channel();
        let slice = staging.slice(..out.len() as u64);
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        #[cfg(not(target_arch = "wasm32"))]
        self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| Error::Gpu(format!("waiting for the GPU: {e}")))?;
        let mapped = rx.await.map_err(|_| Error::DeviceLost("while reading back".into()))?;
        if let Err(e) = mapped {
            // A lost device fails the map: report the loss itself when wgpu has told us of it.
            self.check_errors()?;
            return Err(Error::Gpu(format!("mapping the readback buffer failed: {e}")));
        }
        {
            let view = slice.get_mapped_range().map_err(|e| Error::Gpu(format!("reading the readback buffer: {e}")))?;
            out.copy_from_slice(&view);
        }
        staging.unmap();
        self.check_errors()
    }

    /// Waits until the GPU has finished everything submitted so far. On the web this yields to
    /// the browser's event loop, so a click (Stop) can be handled meanwhile.
    pub async fn wait_idle(&self) -> Result<()> {
        let (tx, rx) = futures_channel::oneshot::channel();
        self.queue.on_submitted_work_done(move || {
            let _ = tx.send(());
        });
        #[cfg(not(target_arch = "wasm32"))]
        self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| Error::Gpu(format!("waiting for the GPU: {e}")))?;
        rx.await.map_err(|_| Error::DeviceLost("while waiting for it".into()))?;
        self.check_errors()
    }

    /// Copies a whole buffer back (allocates; for tests and one-off reads, not the decode loop).
    pub async fn read_f32(&self, buffer: &wgpu::Buffer) -> Result<Vec<f32>> {
        let size = buffer.size();
        let staging = self.staging("readback", size)?;
        let mut enc = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("readback") });
        enc.copy_buffer_to_buffer(buffer, 0, &staging, 0, size);
        self.queue.submit([enc.finish()]);
        let mut bytes = vec![0u8; size as usize];
        self.read_staging(&staging, &mut bytes).await?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }
}
