//! One generation's choice of each next token: the logit processors (`core::logits`), the
//! grammar's mask (`core::grammar`) and the sampler, over the logits a step read back, and the
//! table and logprobs reported of the logits the pick used.

use std::collections::HashMap;

use crate::backend::Readout;
use crate::core::grammar::Constraint;
use crate::core::logits::{apply_bias, logprobs, Penalties, TokenLogprob};
use crate::core::sampler::{top_k, Sampler, TokenProb};
use crate::engine::options::GenerateOptions;
use crate::error::{Error, Result};

/// A picked token and what is reported with it.
pub(super) struct Picked {
    pub id: u32,
    /// The next-token table (`report_top` rows).
    pub top: Vec<TokenProb>,
    pub logprob: Option<f32>,
    pub top_logprobs: Option<Vec<TokenLogprob>>,
}

pub(super) struct Picker {
    sampler: Sampler,
    penalties: Penalties,
    bias: Vec<(u32, f32)>,
    constraint: Option<Constraint>,
    /// Times each token has been picked in this generation.
    counts: HashMap<u32, u32>,
    /// Whether the logits are changed before the pick; they are then changed in `processed`,
    /// and the readout keeps the model's row.
    changes: bool,
    processed: Vec<f32>,
}

impl Picker {
    /// `opts` checked (`GenerateOptions::check`); `constraint`, the grammar's matcher if any.
    pub fn new(opts: &GenerateOptions, constraint: Option<Constraint>, vocab: usize) -> Result<Self> {
        Ok(Picker {
            sampler: Sampler::new(opts.sampler),
            penalties: opts.penalties(),
            bias: opts.bias(vocab)?,
            constraint,
            counts: HashMap::new(),
            changes: opts.changes_logits(),
            processed: Vec::new(),
        })
    }

    /// The grammar's end: the text can take no further token.
    pub fn ended(&self) -> bool {
        self.constraint.as_ref().is_some_and(Constraint::ended)
    }

    /// Milliseconds spent in the grammar so far.
    pub fn grammar_ms(&self) -> f64 {
        self.constraint.as_ref().map_or(0.0, |c| c.ms)
    }

    /// The next token: the backend's pick (and table) where it made one and nothing changes
    /// the logits; else the sampler over the logits, processed (`window`: the sequence's last
    /// `repeat_last_n` tokens).
    pub fn pick(&mut self, out: &Readout, window: &[u32], opts: &GenerateOptions) -> Result<Picked> {
        let table = |logits: &[f32]| if opts.report_top > 0 { top_k(logits, opts.report_top, 1.0) } else { Vec::new() };
        if let (Some(id), false, true) = (out.argmax, self.changes, opts.sampler.is_greedy()) {
            let top = match (out.top.is_empty(), out.has_logits) {
                (false, _) => out.top[..opts.report_top.min(out.top.len())].to_vec(),
                (true, true) => table(&out.logits),
                (true, false) => Vec::new(),
            };
            return Ok(self.with_logprobs(Picked { id, top, logprob: None, top_logprobs: None }, &out.logits, opts));
        }
        if self.changes {
            self.process(&out.logits, window)?;
        }
        let logits = if self.changes { &self.processed } else { &out.logits };
        let id = self.sampler.sample(logits);
        if !logits[id as usize].is_finite() {
            return Err(Error::param("logit_bias", "logit_bias bans every token the grammar allows"));
        }
        let picked = Picked { id, top: table(logits), logprob: None, top_logprobs: None };
        Ok(self.with_logprobs(picked, logits, opts))
    }

    /// Penalties, bias and mask, in that order, on a copy of `logits` (into `processed`).
    fn process(&mut self, logits: &[f32], window: &[u32]) -> Result<()> {
        self.processed.clear();
        self.processed.extend_from_slice(logits);
        self.penalties.apply(&mut self.processed, &self.counts, window);
        apply_bias(&mut self.processed, &self.bias);
        match &mut self.constraint {
            Some(c) => c.mask(&mut self.processed),
            None => Ok(()),
        }
    }

    fn with_logprobs(&self, mut p: Picked, logits: &[f32], opts: &GenerateOptions) -> Picked {
        if opts.logprobs {
            let (lp, top) = logprobs(logits, p.id, opts.top_logprobs);
            p.logprob = Some(lp);
            p.top_logprobs = Some(top);
        }
        p
    }

    /// Takes `id` as picked: it counts for the penalties and advances the grammar.
    pub fn accept(&mut self, id: u32) -> Result<()> {
        *self.counts.entry(id).or_insert(0) += 1;
        match &mut self.constraint {
            Some(c) => c.accept(id),
            None => Ok(()),
        }
    }
}
