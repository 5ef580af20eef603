//! wgpu plumbing: the device context, the kernels (one WGSL file each), their parameter
//! structs, and programs (lists of dispatches recorded once at load and replayed per token).

pub mod context;
pub mod kernels;
pub mod ops;
pub mod params;
pub mod profile;
pub mod program;

pub use context::{GpuContext, GpuOptions};
pub use kernels::Kernel;
pub use profile::Profile;
pub use program::{Grid, Program, Recorder, SplitGrid, StepTable};
