//! What the logits go through before a token is picked (the logit processors), and the log
//! probabilities reported of them. They act on the [V] row a step read back, on the CPU, so they
//! behave alike on every backend.
//!
//! Glossary: raw logits, the model's row for the next position; processed logits, the raw
//! logits after the penalties, the bias and the grammar's mask, in that order — what the step
//! picks from and reports (the next-token table, the logprobs); ban, a logit set to −∞ (never
//! picked, probability 0); window, the last `repeat_last_n` tokens of the sequence (prompt and
//! generated alike).

use std::collections::HashMap;

use serde::Serialize;

use crate::core::sampler::best;

/// Penalties on tokens already seen, from the counts c[j] of token j among the tokens this
/// generation picked (OpenAI's definitions) and the window (llama.cpp's repetition penalty ρ):
///
///   l[j] ← l[j] > 0 ? l[j] / ρ : l[j] · ρ            (j in the window; once, however often)
///   l[j] ← l[j] − c[j] · α_frequency − [c[j] > 0] · α_presence
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Penalties {
    pub frequency: f32,
    pub presence: f32,
    pub repetition: f32,
}

impl Penalties {
    pub fn is_active(&self) -> bool {
        self.frequency != 0.0 || self.presence != 0.0 || self.repetition != 1.0
    }

    pub fn apply(&self, logits: &mut [f32], counts: &HashMap<u32, u32>, window: &[u32]) {
        if self.repetition != 1.0 {
            let mut seen: Vec<u32> = window.to_vec();
            seen.sort_unstable();
            seen.dedup();
            for &j in &seen {
                if let Some(l) = logits.get_mut(j as usize) {
                    *l = if *l > 0.0 { *l / self.repetition } else { *l * self.repetition };
                }
            }
        }
        if self.frequency != 0.0 || self.presence != 0.0 {
            for (&j, &c) in counts {
                if let Some(l) = logits.get_mut(j as usize) {
                    *l -= c as f32 * self.frequency + (c > 0) as u32 as f32 * self.presence;
                }
            }
        }
    }
}

/// A bias at or below this bans the token (OpenAI: "-100 should result in a ban").
pub const BAN: f32 = -100.0;

/// Adds each (id, bias) to its logit; a bias of `BAN` or less bans the token.
pub fn apply_bias(logits: &mut [f32], bias: &[(u32, f32)]) {
    for &(id, b) in bias {
        if let Some(l) = logits.get_mut(id as usize) {
            *l = if b <= BAN { f32::NEG_INFINITY } else { *l + b };
        }
    }
}

/// Bans every token whose bit is clear in `allowed`, a bitset over the vocabulary: token t is
/// allowed when bit t % 32 of word t / 32 is set. Tokens past the bitset are banned.
pub fn apply_mask(logits: &mut [f32], allowed: &[u32]) {
    for (w, chunk) in logits.chunks_mut(32).enumerate() {
        let word = allowed.get(w).copied().unwrap_or(0);
        if word == u32::MAX {
            continue;
        }
        for (b, l) in chunk.iter_mut().enumerate() {
            if word & (1 << b) == 0 {
                *l = f32::NEG_INFINITY;
            }
        }
    }
}

/// A token and its log probability under the processed logits.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TokenLogprob {
    pub id: u32,
    pub logprob: f32,
}

/// ln Σ_j exp(l[j]) = max + ln Σ_j exp(l[j] − max), summed in f64: log softmax(l)[id] is
/// l[id] minus it.
pub fn log_sum_exp(logits: &[f32]) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    (max as f64) + logits.iter().map(|&v| ((v - max) as f64).exp()).sum::<f64>().ln()
}

/// log softmax(logits)[id] = l[id] − max − ln Σ_j exp(l[j] − max), summed in f64, for `picked`
/// and the `k` most probable tokens (most probable first, banned tokens left out).
pub fn logprobs(logits: &[f32], picked: u32, k: usize) -> (f32, Vec<TokenLogprob>) {
    let lse = log_sum_exp(logits);
    let lp = |v: f32| (v as f64 - lse) as f32;
    let top = best(logits, k).into_iter().filter(|&(v, _)| v.is_finite()).map(|(v, id)| TokenLogprob { id, logprob: lp(v) }).collect();
    (lp(logits.get(picked as usize).copied().unwrap_or(f32::NEG_INFINITY)), top)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn penalties_follow_openai_and_llama_cpp() {
        let mut l = vec![2.0, -1.0, 0.5, 3.0];
        let counts = HashMap::from([(0, 2), (3, 1)]);
        Penalties { frequency: 0.5, presence: 0.25, repetition: 2.0 }.apply(&mut l, &counts, &[1, 1, 3]);
        // 0: 2 − 2·0.5 − 0.25; 1: −1 · 2 (in the window once); 3: 3 / 2 − 0.5 − 0.25.
        assert_eq!(l, vec![0.75, -2.0, 0.5, 0.75]);
        assert!(!Penalties { frequency: 0.0, presence: 0.0, repetition: 1.0 }.is_active());
    }

    #[test]
    fn bias_adds_and_bans_and_mask_bans_clear_bits() {
        let mut l = vec![0.0; 40];
        apply_bias(&mut l, &[(1, 5.0), (2, -100.0), (99, 1.0)]);
        assert_eq!((l[1], l[2]), (5.0, f32::NEG_INFINITY));
        let mut l = vec![1.0; 40];
        apply_mask(&mut l, &[0b101, 1 << 3]);
        let allowed: Vec<usize> = (0..40).filter(|&i| l[i].is_finite()).collect();
        assert_eq!(allowed, vec![0, 2, 35]);
    }

    #[test]
    fn logprobs_are_log_softmax_and_skip_bans() {
        let l = [1.0f32, 2.0, f32::NEG_INFINITY, 0.0];
        let (p, top) = logprobs(&l, 0, 4);
        let z: f64 = [1.0f64, 2.0, 0.0].iter().map(|v| v.exp()).sum();
        assert!((p as f64 - (1.0 - z.ln())).abs() < 1e-6);
        assert_eq!(top.iter().map(|t| t.id).collect::<Vec<_>>(), vec![1, 0, 3]);
        let total: f64 = top.iter().map(|t| (t.logprob as f64).exp()).sum();
        assert!((total - 1.0).abs() < 1e-6);
    }
}
