//! Where a forward pass spends its GPU time: every dispatch of a program submitted alone and
//! waited for, the times added up by kind of dispatch. For finding the bottleneck, not for speed
//! figures: each wait adds the submit's fixed cost (measured with an empty submit and reported as
//! `submit_ms`), and a lone dispatch runs without its neighbours overlapping it.

use serde::Serialize;

use crate::backend::gpu::context::GpuContext;
use crate::backend::gpu::program::Program;
use crate::clock::now_ms;
use crate::error::Result;

/// Runs of each dispatch, and of the empty submit; the least time counts.
const REPEATS: usize = 3;
const EMPTY_REPEATS: usize = 5;

#[derive(Debug, Clone, Serialize)]
pub struct ProfileRow {
    /// The dispatch label without its layer (`L3.attn_qkv` → `attn_qkv`).
    pub kind: String,
    pub dispatches: usize,
    /// Summed over the dispatches: each one's least time of `REPEATS` runs, less `submit_ms`.
    pub ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Profile {
    /// What ran: one decode step at a position, or one prefill chunk.
    pub what: String,
    /// In order of first appearance in the pass.
    pub rows: Vec<ProfileRow>,
    pub total_ms: f64,
    /// An empty submit and its wait: taken off every dispatch's time.
    pub submit_ms: f64,
}

impl Profile {
    /// Measures the cost of an empty submit and wait.
    pub async fn new(ctx: &GpuContext, what: String) -> Result<Self> {
        let submit_ms = least_ms(ctx, EMPTY_REPEATS, None).await?;
        Ok(Profile { what, rows: Vec::new(), total_ms: 0.0, submit_ms })
    }

    /// Runs each dispatch of `program` alone (bound at `step_offset`) and adds its least time.
    pub async fn add(&mut self, ctx: &GpuContext, program: &Program, step_offset: u32) -> Result<()> {
        for i in 0..program.len() {
            let ms = (least_ms(ctx, REPEATS, Some((program, i, step_offset))).await? - self.submit_ms).max(0.0);
            self.total_ms += ms;
            let kind = kind(&program.dispatches[i].label);
            match self.rows.iter_mut().find(|r| r.kind == kind) {
                Some(r) => {
                    r.dispatches += 1;
                    r.ms += ms;
                }
                None => self.rows.push(ProfileRow { kind: kind.to_string(), dispatches: 1, ms }),
            }
        }
        Ok(())
    }
}

/// The least of `runs` times (what a busy machine's bursts leave alone) of a submit, holding
/// dispatch i of a program bound at a step offset or nothing, and its wait.
async fn least_ms(ctx: &GpuContext, runs: usize, dispatch: Option<(&Program, usize, u32)>) -> Result<f64> {
    let mut least = f64::INFINITY;
    for _ in 0..runs {
        let t = now_ms();
        let mut enc = ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("profile") });
        if let Some((program, i, step_offset)) = dispatch {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("profile"), timestamp_writes: None });
            program.encode_one(&mut pass, i, step_offset);
        }
        ctx.queue.submit([enc.finish()]);
        ctx.wait_idle().await?;
        least = least.min(now_ms() - t);
    }
    Ok(least)
}

/// `L12.ffn_down` → `ffn_down`; labels without a layer are their own kind.
fn kind(label: &str) -> &str {
    match label.split_once('.') {
        Some((layer, rest)) if layer.len() > 1 && layer.starts_with('L') && layer[1..].bytes().all(|b| b.is_ascii_digit()) => rest,
        _ => label,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn kinds_drop_the_layer_only() {
        assert_eq!(super::kind("L12.ffn_down"), "ffn_down");
        assert_eq!(super::kind("L3.attention_merge"), "attention_merge");
        assert_eq!(super::kind("output part 1"), "output part 1");
        assert_eq!(super::kind("Lx.y"), "Lx.y");
    }
}
