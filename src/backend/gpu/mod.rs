//! The GPU backend on wgpu: the device context (`context`), kernels as specialised WGSL modules
//! (`shader`, `pipeline`), the ops that record them (`ops`, one file per op), programs of
//! dispatches recorded once at load and replayed per token (`program`), and the model itself:
//! weights, KV cache and activations on the device (`weights`, `kv_cache`, `model`) and the
//! forward pass as recorded programs (`forward`). `profile` times each dispatch alone.

pub mod context;
pub mod forward;
pub mod kv_cache;
pub mod model;
pub mod ops;
pub mod pipeline;
pub mod profile;
pub mod program;
pub mod shader;
pub mod weights;

pub use context::{GpuContext, GpuOptions, Tuning, FUSE_ALL, FUSE_ATTENTION, FUSE_GLU, FUSE_MERGE, FUSE_NORM};
pub use model::{check_allocation, check_device, Footprint, GpuCounters, GpuModel};
pub use profile::Profile;
pub use program::{Grid, Program, Recorder, SplitGrid, StepTable};
