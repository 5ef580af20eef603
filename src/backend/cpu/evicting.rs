//! The CPU cache under an eviction policy (`core::kv_policy::Eviction`): the positions each layer
//! holds, the attention each position has accumulated (H2O's score), and one query's attention
//! over what its layer holds. The cache rows stay indexed by position (the reference keeps every
//! row it wrote); a policy's bytes are those of the positions it holds.

use std::ops::Range;

use crate::core::config::{Config, RopeSpec};
use crate::core::kv_policy::Eviction;

use super::{attention, rope};

pub struct Evicting {
    pub policy: Eviction,
    /// Per layer: the positions held, ascending (the newest last).
    held: Vec<Vec<usize>>,
    /// Per layer [T]: the attention each position has received, summed over heads and steps.
    score: Vec<Vec<f32>>,
    /// [held × kv] the held rows gathered (keys turned at their place with cache positions).
    keys: Vec<f32>,
    values: Vec<f32>,
    /// [h × held] one query's weights over the held rows.
    weights: Vec<f32>,
    /// The places in `held` of the positions a layer's query attends (its window on a
    /// sliding-window layer).
    rows: Vec<usize>,
}

impl Evicting {
    pub fn new(policy: Eviction, cfg: &Config, context: usize) -> Self {
        let most = policy.budget().map_or(context, |b| (b + 1).min(context));
        Evicting {
            policy,
            held: vec![Vec::with_capacity(most); cfg.n_layers],
            score: vec![vec![0.0; context]; cfg.n_layers],
            keys: vec![0.0; most * cfg.kv_dim()],
            values: vec![0.0; most * cfg.kv_dim()],
            weights: vec![0.0; most * cfg.n_heads],
            rows: Vec::with_capacity(most),
        }
    }

    /// Forgets positions from `from` on (a rewind; positions evicted before stay evicted).
    pub fn clear(&mut self, from: usize) {
        for (held, score) in self.held.iter_mut().zip(&mut self.score) {
            held.retain(|&p| p < from);
            let from = from.min(score.len());
            score[from..].fill(0.0);
        }
    }

    /// Positions layer `l` holds.
    pub fn held(&self, l: usize) -> &[usize] {
        &self.held[l]
    }

    /// Adds position `pos` to layer `l`, evicts as the policy says, and attends from the query
    /// `q` (turned already, or — cache positions — unturned and turned here at its place) over
    /// the held positions within `seen`: out [h × d_h], att [h × (pos + 1)] the weights by
    /// position (0 where evicted).
    #[allow(clippy::too_many_arguments)]
    pub fn attend(
        &mut self,
        l: usize,
        pos: usize,
        seen: Range<usize>,
        q: &mut [f32],
        out: &mut [f32],
        att: &mut [f32],
        cache: [&[f32]; 2],
        c: &Config,
        turn: (RopeSpec, &[f32]),
    ) {
        let (kv, hd, h) = (c.kv_dim(), c.head_dim, c.n_heads);
        let held = &mut self.held[l];
        if held.last().is_some_and(|&p| p >= pos) {
            // Fed again from `pos` (a reset or rewind): what came after is gone.
            held.retain(|&p| p < pos);
            self.score[l][pos..].fill(0.0);
        }
        held.push(pos);
        let score = &self.score[l];
        self.policy.evict(held, |p| score[p]);
        self.rows.clear();
        self.rows.extend((0..held.len()).filter(|&i| seen.contains(&held[i])));
        let m = self.rows.len();
        for (i, &place) in self.rows.iter().enumerate() {
            let p = held[place];
            self.keys[i * kv..][..kv].copy_from_slice(&cache[0][p * kv..][..kv]);
            self.values[i * kv..][..kv].copy_from_slice(&cache[1][p * kv..][..kv]);
            if self.policy.cache_positions() {
                // StreamingLLM: each key turned at its place in the cache.
                rope(&mut self.keys[i * kv..][..kv], hd, place, turn.0, turn.1);
            }
        }
        if self.policy.cache_positions() {
            // The query at its own place: the newest, which no policy evicts.
            rope(q, hd, held.len() - 1, turn.0, turn.1);
        }
        let weights = &mut self.weights[..h * m];
        attention(out, weights, q, &self.keys[..m * kv], &self.values[..m * kv], 0..m, c.n_kv_heads, hd, c.attn_scale);
        let n = pos + 1;
        att[..h * n].fill(0.0);
        for head in 0..h {
            for (i, &place) in self.rows.iter().enumerate() {
                let p = held[place];
                att[head * n + p] = weights[head * m + i];
                self.score[l][p] += weights[head * m + i];
            }
        }
    }
}
