//! Weights uploaded once, one GPU buffer per tensor holding its raw ggml bytes.

use std::collections::HashMap;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::gguf::{ByteSource, Gguf};
use crate::gpu::GpuContext;
use crate::quant::GgmlType;

pub struct Tensor {
    pub buffer: wgpu::Buffer,
    pub ty: GgmlType,
    /// dims[0] innermost.
    pub dims: Vec<u64>,
}

impl Tensor {
    pub fn rows(&self) -> u32 {
        self.dims.get(1).copied().unwrap_or(1) as u32
    }

    pub fn cols(&self) -> u32 {
        self.dims[0] as u32
    }

    pub fn row_bytes(&self) -> u32 {
        self.ty.bytes_for(self.dims[0] as usize) as u32
    }
}

pub struct Weights {
    tensors: HashMap<String, Tensor>,
    pub bytes: u64,
}

impl Weights {
    /// Copies each tensor from `src` through one reused scratch buffer into its GPU buffer.
    pub fn upload(ctx: &GpuContext, g: &Gguf, cfg: &Config, src: &mut dyn ByteSource) -> Result<Self> {
        let mut tensors = HashMap::new();
        let mut bytes = 0;
        let mut scratch = Vec::new();
        for (name, _) in cfg.expected_tensors() {
            let info = g.tensor(&name).ok_or_else(|| Error::MissingTensor(name.clone()))?;
            if info.dims.len() == 2 && info.dims[0] % 32 != 0 {
                return Err(Error::Config(format!(
                    "tensor `{name}` has rows of {} elements; the GPU kernels need a multiple of 32",
                    info.dims[0]
                )));
            }
            src.read(g.tensor_range(info), &mut scratch)?;
            let buffer = ctx.storage_with(&name, &scratch)?;
            bytes += buffer.size();
            tensors.insert(name, Tensor { buffer, ty: info.ty, dims: info.dims.clone() });
        }
        Ok(Weights { tensors, bytes })
    }

    pub fn get(&self, name: &str) -> &Tensor {
        // Every name asked for comes from `Config::expected_tensors`, all uploaded above.
        &self.tensors[name]
    }

    pub fn layer(&self, l: usize, name: &str) -> &Tensor {
        self.get(&format!("blk.{l}.{name}.weight"))
    }
}
