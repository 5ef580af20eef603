//! Weights uploaded once, one GPU buffer per tensor holding its raw ggml bytes. Projections that
//! read the same input — q, k and v; gate and up — are stored back to back in one buffer when
//! they share a type and a row length, so one mat-vec dispatch computes all of them. The
//! vocabulary-sized tables (`TABLES`) are split by rows where the device cannot bind them whole.

use std::collections::HashMap;

use crate::backend::gpu::GpuContext;
use crate::core::config::Config;
use crate::core::gguf::{ByteSource, Gguf};
use crate::core::quant::GgmlType;
use crate::error::{Error, Result};

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
    tables: HashMap<String, Vec<Part>>,
    /// `blk.L.GROUP.weight` → the tensors its members are stored as, in row order (`FUSED`).
    runs: HashMap<String, Vec<String>>,
    pub bytes: u64,
}

/// Tables read by rows — the embedding (one row per token) and the output projection (the logits
/// a row each) — which may be split into parts of whole rows, each a buffer the device can bind:
/// Gemma 3's [262,144 × 640] Q8_0 embedding is 170 MiB, above the 128 MiB some devices bind.
pub const TABLES: [&str; 2] = ["token_embd.weight", "output.weight"];

/// Rows first_row .. first_row + tensor.rows() of a table.
pub struct Part {
    pub first_row: u32,
    pub tensor: Tensor,
}

/// How table `info` is cut on this device: `per_part` of its `rows` in each part (all of them
/// where one binding holds the table), each row `row_bytes`.
pub struct TableParts {
    pub rows: u64,
    pub row_bytes: u64,
    pub per_part: u64,
}

impl TableParts {
    /// Bytes of the largest part.
    pub fn part_bytes(&self) -> u64 {
        self.per_part * self.row_bytes
    }
}

pub fn table_parts(ctx: &GpuContext, info: &crate::core::gguf::TensorInfo) -> TableParts {
    let rows = info.dims.get(1).copied().unwrap_or(1);
    let row_bytes = (info.size / rows).max(1);
    let limit = ctx.limits.max_storage_buffer_binding_size.min(ctx.limits.max_buffer_size).min(ctx.table_part_bytes.unwrap_or(u64::MAX));
    TableParts { rows, row_bytes, per_part: (limit / row_bytes).clamp(1, rows) }
}

/// Bytes of weights written to the GPU between waits for the writes to land (`Weights::upload`).
const FLUSH_BYTES: u64 = 16 << 20;

/// Per-layer groups stored as one tensor (rows of the members in order): `blk.L.attn_qkv.weight`
/// = [q | k | v], `blk.L.ffn_gate_up.weight` = [gate | up]; and their biases where there are
/// any, always together (F32 vectors): `blk.L.attn_qkv.bias` = [b_q | b_k | b_v]. Members of
/// different types are stored in runs of the same type (`blk.L.attn_q+attn_k.weight`).
pub const FUSED: [(&str, &[&str]); 2] = [("attn_qkv", &["attn_q", "attn_k", "attn_v"]), ("ffn_gate_up", &["ffn_gate", "ffn_up"])];

/// Consecutive runs of `infos` that can be stored as one tensor: 2-D of one type and row length,
/// or F32 vectors (biases).
fn same_runs(infos: &[&crate::core::gguf::TensorInfo]) -> Vec<std::ops::Range<usize>> {
    let joins = |a: &crate::core::gguf::TensorInfo, b: &crate::core::gguf::TensorInfo| match (a.dims.len(), b.dims.len()) {
        (2, 2) => a.ty == b.ty && a.dims[0] == b.dims[0],
        (1, 1) => a.ty == GgmlType::F32 && b.ty == GgmlType::F32,
        _ => false,
    };
    let mut out: Vec<std::ops::Range<usize>> = Vec::new();
    for i in 0..infos.len() {
        match out.last_mut() {
            Some(r) if joins(infos[r.end - 1], infos[i]) => r.end = i + 1,
            _ => out.push(i..i + 1),
        }
    }
    out
}

/// How the `FUSED` groups are stored: member name → (stored name, the members stored with it),
/// for the members stored with others (runs of a group's members that match in type and row
/// length); and each group → the names it is stored under, in row order.
type FusedAs = HashMap<String, (String, Vec<String>)>;

fn fused_plan(g: &Gguf<'_>, cfg: &Config) -> (FusedAs, HashMap<String, Vec<String>>) {
    let mut fused_as = FusedAs::new();
    let mut runs = HashMap::new();
    for l in 0..cfg.n_layers {
        for ((group, members), kind) in FUSED.iter().flat_map(|f| [(f, "weight"), (f, "bias")]) {
            let names: Vec<String> = members.iter().map(|m| format!("blk.{l}.{m}.{kind}")).collect();
            let Some(infos) = names.iter().map(|n| g.tensor(n)).collect::<Option<Vec<_>>>() else { continue };
            let mut stored = Vec::new();
            for run in same_runs(&infos) {
                let run_names: Vec<String> = names[run.clone()].to_vec();
                let label = match run.len() {
                    1 => run_names[0].clone(),
                    n if n == names.len() => format!("blk.{l}.{group}.{kind}"),
                    _ => format!("blk.{l}.{}.{kind}", members[run].join("+")),
                };
                if run_names.len() > 1 {
                    for n in &run_names {
                        fused_as.insert(n.clone(), (label.clone(), run_names.clone()));
                    }
                }
                stored.push(label);
            }
            runs.insert(format!("blk.{l}.{group}.{kind}"), stored);
        }
    }
    (fused_as, runs)
}

/// The buffers `Weights::upload` will make, from the header alone: (what, bytes) for each
/// tensor, fused group (its members' bytes together) and part of a table split by rows; bytes
/// as allocated (`GpuContext::storage` rounds up to a word).
pub fn planned(ctx: &GpuContext, g: &Gguf<'_>, cfg: &Config) -> Result<Vec<(String, u64)>> {
    let (fused_as, _) = fused_plan(g, cfg);
    let mut out = Vec::new();
    for (name, _) in cfg.expected_tensors() {
        let info = g.tensor(&name).ok_or_else(|| Error::MissingTensor(name.clone()))?;
        match fused_as.get(&name) {
            Some((_, members)) if members[0] != name => {}
            Some((fused, members)) => {
                let bytes = members.iter().filter_map(|m| g.tensor(m)).map(|i| i.size).sum();
                out.push((format!("tensors `{}` stored together as `{fused}`", members.join("`, `")), bytes));
            }
            None if TABLES.contains(&name.as_str()) => {
                let parts = table_parts(ctx, info);
                let what = if parts.per_part < parts.rows { format!("a part of tensor `{name}`") } else { format!("tensor `{name}`") };
                let whole = parts.rows / parts.per_part;
                out.extend(std::iter::repeat_n((what.clone(), parts.part_bytes()), whole as usize));
                let rest = (parts.rows - whole * parts.per_part) * parts.row_bytes;
                if rest > 0 {
                    out.push((what, rest));
                }
            }
            None => out.push((format!("tensor `{name}`"), info.size)),
        }
    }
    Ok(out.into_iter().map(|(what, b)| (what, b.max(4).next_multiple_of(4))).collect())
}

impl Weights {
    /// Copies each tensor (or fused group) from `src` through one reused scratch buffer into its
    /// GPU buffer. Every `FLUSH_BYTES` written, the writes are submitted and waited for: until
    /// then the implementation holds a staging copy of each (on the web, in the browser's GPU
    /// process), which for a whole model would double its memory.
    pub async fn upload(ctx: &GpuContext, g: &Gguf<'_>, cfg: &Config, src: &mut dyn ByteSource) -> Result<Self> {
        let mut tensors = HashMap::new();
        let mut tables = HashMap::new();
        let mut bytes = 0;
        // `bytes` when the writes were last waited for.
        let mut flushed = 0;
        let mut scratch = Vec::new();
        let mut part = Vec::new();
        let (fused_as, runs) = fused_plan(g, cfg);
        for (name, _) in cfg.expected_tensors() {
            let info = g.tensor(&name).ok_or_else(|| Error::MissingTensor(name.clone()))?;
            let (label, dims) = match fused_as.get(&name) {
                // Uploaded with the group's first member.
                Some((_, members)) if members[0] != name => continue,
                Some((fused, members)) => {
                    scratch.clear();
                    let mut rows = 0;
                    for m in members {
                        let i = g.tensor(m).ok_or_else(|| Error::MissingTensor(m.clone()))?;
                        src.read(g.tensor_range(i), &mut part)?;
                        scratch.extend_from_slice(&part);
                        rows += i.dims.get(1).unwrap_or(&i.dims[0]);
                    }
                    let dims = if info.dims.len() == 1 { vec![rows] } else { vec![info.dims[0], rows] };
                    (fused.clone(), dims)
                }
                None if TABLES.contains(&name.as_str()) => {
                    src.read(g.tensor_range(info), &mut scratch)?;
                    let TableParts { rows, row_bytes, per_part: per } = table_parts(ctx, info);
                    let mut parts = Vec::new();
                    for first in (0..rows).step_by(per as usize) {
                        let n = per.min(rows - first);
                        let label = if n == rows { name.clone() } else { format!("{name} rows {first}..{}", first + n) };
                        let buffer =
                            ctx.storage_with(&label, &scratch[(first * row_bytes) as usize..((first + n) * row_bytes) as usize])?;
                        bytes += buffer.size();
                        parts.push(Part { first_row: first as u32, tensor: Tensor { buffer, ty: info.ty, dims: vec![info.dims[0], n] } });
                    }
                    tables.insert(name, parts);
                    continue;
                }
                None => {
                    src.read(g.tensor_range(info), &mut scratch)?;
                    (name.clone(), info.dims.clone())
                }
            };
            let buffer = ctx.storage_with(&label, &scratch)?;
            bytes += buffer.size();
            tensors.insert(label, Tensor { buffer, ty: info.ty, dims });
            if bytes - flushed >= FLUSH_BYTES {
                ctx.queue.submit(std::iter::empty());
                ctx.wait_idle().await?;
                flushed = bytes;
            }
        }
        Ok(Weights { tensors, tables, runs, bytes })
    }

    /// Layer `l`'s group `name` (see `FUSED`) as stored, in row order: one tensor where its
    /// members match in type and row length, else a tensor per run of members that do.
    pub fn group(&self, l: usize, name: &str) -> Vec<&Tensor> {
        self.runs[&format!("blk.{l}.{name}.weight")].iter().map(|n| self.get(n)).collect()
    }

    /// Layer `l`'s group `name`'s biases stored together, where it has them.
    pub fn group_bias(&self, l: usize, name: &str) -> Option<&Tensor> {
        self.tensors.get(&format!("blk.{l}.{name}.bias"))
    }

    /// The parts of table `name` (`TABLES`), in row order.
    pub fn table(&self, name: &str) -> &[Part] {
        &self.tables[name]
    }

    pub fn get(&self, name: &str) -> &Tensor {
        // Every name asked for comes from `Config::expected_tensors`, all uploaded above.
        &self.tensors[name]
    }

    pub fn layer(&self, l: usize, name: &str) -> &Tensor {
        self.get(&format!("blk.{l}.{name}.weight"))
    }
}
