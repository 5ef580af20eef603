//! KV-cache policies: what a cache keeps of each position, and how exactly. A policy is a
//! precision (`KvType`: the exact f32, f16, or ggml's Q8_0 / Q4_0 blocks) or an eviction rule
//! over f32 rows:
//! - `window-N`: the last N positions, each keeping the RoPE position it was turned at (a sliding
//!   window, as Mistral's and Gemma's local layers);
//! - `sink-S-window-N`: the first S positions (attention sinks) and the last N, RoPE positions
//!   counted within the cache — sinks 0..S, the window S.. in order, the query last — as
//!   StreamingLLM (Xiao et al., 2023) turns keys: the cache holds them unturned;
//! - `h2o-N`: N positions, the N/2 most recent and the N − N/2 others with the largest attention
//!   accumulated over every step so far (summed over heads), evicting one at a time, with their
//!   own RoPE positions (Zhang et al., 2023, "H2O: Heavy-Hitter Oracle").
//!
//! A rule that evicts holds a fixed number of positions, so on the CPU a text under it runs past
//! the context it was loaded with (`backend::Backend::passes_context`).
//!
//! Names are written as the CLI, the page and the API take them: `f32`, `f16`, `q8_0`, `q4_0`,
//! `window-64`, `sink-4-window-60`, `h2o-64`.

use crate::core::config::KvType;
use crate::error::{Error, Result};

/// Which positions a cache keeps (`KvPolicy::eviction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Eviction {
    /// Every position (the exact cache, and the precision policies).
    #[default]
    None,
    Window {
        n: usize,
    },
    SinkWindow {
        sinks: usize,
        n: usize,
    },
    H2o {
        n: usize,
    },
}

impl Eviction {
    /// The most positions held at once (None: every one).
    pub fn budget(self) -> Option<usize> {
        match self {
            Eviction::None => None,
            Eviction::Window { n } | Eviction::H2o { n } => Some(n),
            Eviction::SinkWindow { sinks, n } => Some(sinks.saturating_add(n)),
        }
    }

    /// Cache rows an evicting cache keeps a layer: its budget, and one for the incoming position,
    /// written before the rule evicts (None: every position).
    pub fn slots(self) -> Option<usize> {
        self.budget().map(|b| b + 1)
    }

    /// Whether keys are turned at their place in the cache rather than their position in the text.
    pub fn cache_positions(self) -> bool {
        matches!(self, Eviction::SinkWindow { .. })
    }

    /// The place in `held` (ascending, the newest last: `held` positions in all) of the position
    /// to drop next, while more are held than the budget; `score(i)`: the accumulated attention
    /// of `held`'s i-th position (for H2O). No rule drops the newest.
    pub fn victim(self, held: usize, score: impl Fn(usize) -> f32) -> Option<usize> {
        let budget = self.budget()?;
        (held > budget).then(|| match self {
            Eviction::None | Eviction::Window { .. } => 0,
            Eviction::SinkWindow { sinks, .. } => sinks,
            Eviction::H2o { n } => {
                // Among all but the n/2 most recent, the least attended (the oldest on a tie).
                let candidates = held - n / 2;
                (0..candidates).min_by(|&a, &b| score(a).total_cmp(&score(b))).unwrap_or(0)
            }
        })
    }

    /// Drops positions from `held` (ascending, the newest last) until the policy's budget holds;
    /// `score(p)`: position p's accumulated attention (for H2O).
    pub fn evict(self, held: &mut Vec<usize>, score: impl Fn(usize) -> f32) {
        while let Some(i) = self.victim(held.len(), |i| score(held[i])) {
            held.remove(i);
        }
    }
}

/// A cache policy: its precision and what it evicts (f32 rows where it evicts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KvPolicy {
    pub precision: KvType,
    pub eviction: Eviction,
}

/// The most positions an eviction rule may hold (as the context: `engine::Engine::load`).
pub const MAX_HELD: usize = 1 << 20;

/// The forms a policy name takes, for errors.
pub const POLICY_FORMS: &str = "f32, f16, q8_0, q4_0, window-N, sink-S-window-N (S < N), h2o-N (N ≥ 2)";

impl KvPolicy {
    /// The exact cache.
    pub const EXACT: KvPolicy = KvPolicy { precision: KvType::F32, eviction: Eviction::None };

    pub fn of(precision: KvType) -> Self {
        KvPolicy { precision, eviction: Eviction::None }
    }

    pub fn name(&self) -> String {
        match self.eviction {
            Eviction::None => self.precision.name().to_string(),
            Eviction::Window { n } => format!("window-{n}"),
            Eviction::SinkWindow { sinks, n } => format!("sink-{sinks}-window-{n}"),
            Eviction::H2o { n } => format!("h2o-{n}"),
        }
    }

    /// Bytes of one position's K and V over `layers` layers of `kv_dim` values each.
    pub fn bytes_per_position(&self, layers: usize, kv_dim: usize) -> u64 {
        2 * layers as u64 * self.precision.row_bytes(kv_dim)
    }

    /// Positions held after `positions` have been fed.
    pub fn held(&self, positions: usize) -> usize {
        self.eviction.budget().map_or(positions, |b| b.min(positions))
    }

    /// Parses a comma-separated list of policy names.
    pub fn parse_list(s: &str) -> Result<Vec<KvPolicy>> {
        s.split(',').map(|p| p.trim().parse()).collect()
    }
}

impl std::str::FromStr for KvPolicy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| Error::Option(format!("KV-cache policy `{s}`: {why} (policies: {POLICY_FORMS})"));
        if let Some(t) = KvType::ALL.into_iter().find(|t| t.name() == s) {
            return Ok(KvPolicy::of(t));
        }
        let num = |t: &str| t.parse::<usize>().map_err(|_| bad(&format!("`{t}` is not a number of positions")));
        let parts: Vec<&str> = s.split('-').collect();
        let eviction = match parts.as_slice() {
            ["window", n] => Eviction::Window { n: num(n)? },
            ["sink", sinks, "window", n] => Eviction::SinkWindow { sinks: num(sinks)?, n: num(n)? },
            ["h2o", n] => Eviction::H2o { n: num(n)? },
            _ => return Err(bad("unknown policy")),
        };
        match eviction {
            Eviction::Window { n: 0 } | Eviction::SinkWindow { n: 0, .. } => Err(bad("a window of 0 positions holds nothing")),
            Eviction::SinkWindow { sinks, n } if sinks >= n => Err(bad("the sinks must be fewer than the window's positions")),
            e if e.budget().is_some_and(|b| b > MAX_HELD) => Err(bad(&format!("a cache holds at most {MAX_HELD} positions"))),
            Eviction::H2o { n } if n < 2 => Err(bad("H2O keeps N/2 recent and N − N/2 heavy positions: N ≥ 2")),
            _ => Ok(KvPolicy { precision: KvType::F32, eviction }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bad_ones_are_refused_by_name() {
        for name in ["f32", "f16", "q8_0", "q4_0", "window-64", "sink-4-window-60", "h2o-64"] {
            assert_eq!(name.parse::<KvPolicy>().unwrap().name(), name);
        }
        for (bad, why) in [
            ("q5_0", "unknown policy"),
            ("window-0", "a window of 0"),
            ("window-x", "`x` is not a number"),
            ("sink-8-window-8", "fewer than the window"),
            ("h2o-1", "N ≥ 2"),
            ("window-2000000", "at most 1048576 positions"),
            ("sink-4-window-1048573", "at most 1048576 positions"),
            ("sink-9000000000000000000-window-9000000000000000001", "at most 1048576 positions"),
        ] {
            let e = bad.parse::<KvPolicy>().unwrap_err().to_string();
            assert!(e.contains(bad) && e.contains(why) && e.contains("sink-S-window-N"), "{bad}: {e}");
        }
    }

    #[test]
    fn eviction_keeps_what_each_policy_says() {
        let fed = |e: Eviction, scores: &[f32]| {
            let mut held = Vec::new();
            for p in 0..scores.len() {
                held.push(p);
                e.evict(&mut held, |q| scores[q]);
            }
            held
        };
        let flat = [0.0; 10];
        assert_eq!(fed(Eviction::Window { n: 4 }, &flat), [6, 7, 8, 9]);
        assert_eq!(fed(Eviction::SinkWindow { sinks: 2, n: 3 }, &flat), [0, 1, 7, 8, 9]);
        assert_eq!(fed(Eviction::None, &flat[..3]), [0, 1, 2]);
        // H2O-4: the 2 most recent, and the 2 most attended of the rest.
        let scores = [5.0, 0.1, 3.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.0, 0.0];
        assert_eq!(fed(Eviction::H2o { n: 4 }, &scores), [0, 2, 8, 9]);
        let p = KvPolicy { precision: KvType::F32, eviction: Eviction::Window { n: 16 } };
        assert_eq!((p.held(10), p.held(100)), (10, 16));
        assert_eq!(KvPolicy::of(KvType::Q8_0).bytes_per_position(30, 192) * 128, KvPolicy::EXACT.bytes_per_position(30, 192) * 34);
    }
}
