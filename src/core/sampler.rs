//! Choosing the next token from the logits: ŷ = argmax_y Pr(y | cache) by default, or a seeded
//! sample with temperature, top-k and top-p.

use serde::Serialize;

/// Index of the largest logit; ties go to the lowest id. NaN never wins.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best_v {
            best = i;
            best_v = v;
        }
    }
    best as u32
}

/// One row of the next-token table: a token id and its probability softmax(logits)[id].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TokenProb {
    pub id: u32,
    pub p: f32,
}

/// The k most probable tokens under softmax(logits / temperature), most probable first
/// (equal probabilities: lower id first).
pub fn top_k(logits: &[f32], k: usize, temperature: f32) -> Vec<TokenProb> {
    let t = if temperature > 0.0 { temperature } else { 1.0 };
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&v| (((v - max) / t) as f64).exp()).sum();
    best(logits, k).into_iter().map(|(v, id)| TokenProb { id, p: ((((v - max) / t) as f64).exp() / sum) as f32 }).collect()
}

/// The k largest (logit, id), largest first (equal logits: lower id first).
pub fn best(logits: &[f32], k: usize) -> Vec<(f32, u32)> {
    let mut best: Vec<(f32, u32)> = Vec::with_capacity(k + 1);
    if k == 0 {
        return best;
    }
    for (i, &v) in logits.iter().enumerate() {
        if best.len() < k || v > best[best.len() - 1].0 {
            let at = best.partition_point(|&(bv, _)| bv >= v);
            best.insert(at, (v, i as u32));
            best.truncate(k);
        }
    }
    best
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SamplerConfig {
    /// 0 means greedy (exact argmax).
    pub temperature: f32,
    /// 0 means no top-k cut.
    pub top_k: usize,
    /// 1 means no nucleus cut.
    pub top_p: f32,
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig { temperature: 0.0, top_k: 0, top_p: 1.0, seed: 0 }
    }
}

impl SamplerConfig {
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0
    }
}

pub struct Sampler {
    pub config: SamplerConfig,
    rng: fastrand::Rng,
    /// (probability, id) scratch, reused across steps.
    scratch: Vec<(f32, u32)>,
}

impl Sampler {
    pub fn new(config: SamplerConfig) -> Self {
        Sampler { rng: fastrand::Rng::with_seed(config.seed), config, scratch: Vec::new() }
    }

    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let c = self.config;
        if c.is_greedy() {
            return argmax(logits);
        }
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        self.scratch.clear();
        self.scratch.extend(logits.iter().enumerate().map(|(i, &v)| (((v - max) / c.temperature).exp(), i as u32)));
        // Most probable first; the sort is stable, so equal weights keep id order.
        self.scratch.sort_by(|a, b| b.0.total_cmp(&a.0));
        if c.top_k > 0 {
            self.scratch.truncate(c.top_k);
        }
        let total: f32 = self.scratch.iter().map(|e| e.0).sum();
        if c.top_p < 1.0 {
            let mut acc = 0.0;
            let keep = self
                .scratch
                .iter()
                .position(|e| {
                    acc += e.0 / total;
                    acc >= c.top_p
                })
                .map_or(self.scratch.len(), |i| i + 1);
            self.scratch.truncate(keep);
        }
        let total: f32 = self.scratch.iter().map(|e| e.0).sum();
        let mut r = self.rng.f32() * total;
        for &(w, id) in &self.scratch {
            if r < w {
                return id;
            }
            r -= w;
        }
        self.scratch.last().map_or(0, |e| e.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_ties_go_to_lowest_id() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, -1.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 0.5, 0.5]), 1);
    }

    #[test]
    fn top_k_is_sorted_and_sums_below_one() {
        let logits = [0.1, 2.0, -1.0, 2.0, 0.5];
        let t = top_k(&logits, 3, 1.0);
        assert_eq!(t.iter().map(|x| x.id).collect::<Vec<_>>(), vec![1, 3, 4]);
        assert!(t.windows(2).all(|w| w[0].p >= w[1].p));
        let all: f32 = top_k(&logits, 5, 1.0).iter().map(|x| x.p).sum();
        assert!((all - 1.0).abs() < 1e-6);
    }

    #[test]
    fn sampling_is_seeded_and_respects_top_k() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let cfg = SamplerConfig { temperature: 1.0, top_k: 5, top_p: 1.0, seed: 7 };
        let a: Vec<u32> = (0..20).scan(Sampler::new(cfg), |s, _| Some(s.sample(&logits))).collect();
        let b: Vec<u32> = (0..20).scan(Sampler::new(cfg), |s, _| Some(s.sample(&logits))).collect();
        assert_eq!(a, b);
        let allowed: Vec<u32> = top_k(&logits, 5, 1.0).iter().map(|t| t.id).collect();
        assert!(a.iter().all(|id| allowed.contains(id)));
        assert!(Sampler::new(SamplerConfig::default()).sample(&logits) == argmax(&logits));
    }
}
