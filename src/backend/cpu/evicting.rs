//! The CPU cache under an eviction policy (`core::kv_policy::Eviction`): the positions each layer
//! holds, the cache row (slot) each one's K and V live in, the attention each has accumulated
//! (H2O's score), and one query's attention over what its layer holds.
//!
//! A layer keeps S = budget + 1 slots: the budget, and one for the incoming position, which is
//! written before the policy evicts. A slot freed by an eviction takes the next position, so the
//! memory is fixed and positions run past the context the model was loaded with
//! (`Backend::passes_context`); nothing here is sized by the context.

use std::ops::Range;

use crate::core::config::{Config, RopeSpec};
use crate::core::kv_policy::Eviction;

use super::{attention, rope};

pub struct Evicting {
    pub policy: Eviction,
    /// S: cache rows a layer keeps (the budget + 1).
    pub slots: usize,
    /// Per layer: the positions held, ascending (the newest last).
    held: Vec<Vec<usize>>,
    /// Per layer: the slot of each held position (`held`'s order).
    slot: Vec<Vec<usize>>,
    /// Per layer: slots below the highest used so far that hold nothing (when empty, the slots
    /// in use are 0..held).
    free: Vec<Vec<usize>>,
    /// Per layer [S]: the attention the position in each slot has received, summed over heads
    /// and steps.
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
    /// The state of `policy` (one that evicts: it has a budget) for a model of `cfg`.
    pub fn new(policy: Eviction, cfg: &Config) -> Self {
        let slots = policy.slots().expect("an eviction policy has a budget");
        let per_layer = || vec![Vec::with_capacity(slots); cfg.n_layers];
        Evicting {
            policy,
            slots,
            held: per_layer(),
            slot: per_layer(),
            free: per_layer(),
            score: vec![vec![0.0; slots]; cfg.n_layers],
            keys: vec![0.0; slots * cfg.kv_dim()],
            values: vec![0.0; slots * cfg.kv_dim()],
            weights: vec![0.0; slots * cfg.n_heads],
            rows: Vec::with_capacity(slots),
        }
    }

    /// Forgets positions from `from` on in every layer (a rewind; positions evicted before stay
    /// evicted).
    pub fn clear(&mut self, from: usize) {
        for l in 0..self.held.len() {
            self.forget(l, from);
        }
    }

    /// Forgets layer `l`'s positions from `from` on, freeing their slots.
    fn forget(&mut self, l: usize, from: usize) {
        while self.held[l].last().is_some_and(|&p| p >= from) {
            self.held[l].pop();
            self.free[l].extend(self.slot[l].pop());
        }
    }

    /// Positions layer `l` holds.
    pub fn held(&self, l: usize) -> &[usize] {
        &self.held[l]
    }

    /// Takes position `pos` into layer `l` and returns the slot its K and V go to: a freed one,
    /// else the next unused (fewer than S are held before the policy evicts). A position fed
    /// again (a reset or rewind) forgets what came after it first.
    pub fn admit(&mut self, l: usize, pos: usize) -> usize {
        self.forget(l, pos);
        let slot = self.free[l].pop().unwrap_or(self.held[l].len());
        debug_assert!(slot < self.slots, "slot {slot} of {}", self.slots);
        self.held[l].push(pos);
        self.slot[l].push(slot);
        self.score[l][slot] = 0.0;
        slot
    }

    /// After `admit(l, pos)`: evicts as the policy says, and attends from the query `q` (turned
    /// already, or — cache positions — unturned and turned here at its place) over the held
    /// positions within `seen`. cache: layer l's K and V, [S × kv] by slot; out [h × d_h];
    /// att [h × n] the weights by position for the last n positions, pos + 1 − n ..= pos
    /// (0 where evicted; the view's window once the text is past the context).
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
        self.evict(l);
        let (held, slot) = (&self.held[l], &self.slot[l]);
        debug_assert_eq!(held.last(), Some(&pos), "attend follows admit");
        self.rows.clear();
        self.rows.extend((0..held.len()).filter(|&i| seen.contains(&held[i])));
        let m = self.rows.len();
        for (i, &place) in self.rows.iter().enumerate() {
            let s = slot[place];
            self.keys[i * kv..][..kv].copy_from_slice(&cache[0][s * kv..][..kv]);
            self.values[i * kv..][..kv].copy_from_slice(&cache[1][s * kv..][..kv]);
            if self.policy.cache_positions() {
                // StreamingLLM: each key turned at its place in the cache (< S).
                rope(&mut self.keys[i * kv..][..kv], hd, place, turn.0, turn.1);
            }
        }
        if self.policy.cache_positions() {
            // The query at its own place: the newest, which no policy evicts.
            rope(q, hd, held.len() - 1, turn.0, turn.1);
        }
        let weights = &mut self.weights[..h * m];
        attention(out, weights, q, &self.keys[..m * kv], &self.values[..m * kv], 0..m, c.n_kv_heads, hd, c.attn_scale);
        let n = att.len() / h;
        let first = pos + 1 - n;
        att.fill(0.0);
        for head in 0..h {
            for (i, &place) in self.rows.iter().enumerate() {
                let w = weights[head * m + i];
                self.score[l][slot[place]] += w;
                if let Some(at) = held[place].checked_sub(first) {
                    att[head * n + at] = w;
                }
            }
        }
    }

    /// Drops layer `l`'s positions as the policy says until its budget holds, freeing their slots.
    fn evict(&mut self, l: usize) {
        let (held, slot, score) = (&mut self.held[l], &mut self.slot[l], &self.score[l]);
        while let Some(i) = self.policy.victim(held.len(), |i| score[slot[i]]) {
            held.remove(i);
            self.free[l].push(slot.remove(i));
        }
    }
}
