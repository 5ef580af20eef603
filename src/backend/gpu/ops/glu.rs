//! The gated FFN's activation: out[t] = act(gate[t]) ⊙ up[t] (`shaders/glu.wgsl`).

use crate::backend::gpu::program::{Grid, Recorder};
use crate::backend::gpu::shader::Spec;
use crate::core::config::Act;
use crate::error::Result;
use crate::params;

use super::Tokens;

params! {
    pub struct Glu {
        /// f
        pub n: u32,
        /// `Act::code`.
        pub act: u32,
    }
}

pub(crate) fn spec() -> Spec {
    Spec::new("glu", include_str!("../../../../shaders/glu.wgsl"))
}

/// out[t] = act(gate[t]) ⊙ up[t] over rows gate_up[t] = [gate (f) | up (f)].
pub fn record(
    rec: &mut Recorder,
    tokens: Tokens,
    label: String,
    out: &wgpu::Buffer,
    gate_up: &wgpu::Buffer,
    f: u32,
    act: Act,
) -> Result<()> {
    let p = Glu { n: f, act: act.code() };
    rec.push(label, &spec(), &[out, gate_up], &p, Grid::invocations(f).layers(tokens.rows()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu;
    use crate::backend::gpu::program::StepTable;
    use crate::testing::*;

    /// act(gate) ⊙ up for both activations.
    #[test]
    fn glu_matches_cpu() {
        let Some(ctx) = gpu() else { return };
        let f = 130;
        let gu = random(2 * f, 9, 4.0);
        for act in [Act::Silu, Act::GeluTanh] {
            let mut want = vec![0.0; f];
            cpu::glu(&mut want, &gu[..f], &gu[f..], act);
            let out = ctx.storage("out", f as u64 * 4).unwrap();
            let b = buf(&ctx, "gate_up", &gu);
            let mut rec = Recorder::new(&ctx);
            record(&mut rec, Tokens::One, "glu".into(), &out, &b, f as u32, act).unwrap();
            let steps = StepTable::new(&ctx, 1).unwrap();
            rec.finish("glu", Some(&steps)).unwrap().run(&ctx, &steps, 0);
            assert_close(&format!("glu {act:?}"), &read(&ctx, &out), &want, 1e-5);
        }
    }
}
