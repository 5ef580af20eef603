//! The KV-cache lab: one text through the exact cache and through each cache policy
//! (`core::kv_policy`), compared position by position (`kvscope kv-compare`).
//!
//! Teacher forcing: every model is fed the text one token at a time; at each position t the
//! policy's next-token distribution P' is compared with the exact cache's P:
//!   top1_agreement = share of positions where argmax P' = argmax P
//!   mean_kl        = mean over positions of KL(P ‖ P') = Σ_y P(y) · (log P(y) − log P'(y))
//!   perplexity     = exp(mean over positions of −log P'(text[t + 1]))
//! Then free greedy generation from the text's first `PREFIX` tokens for `FREE_STEPS` steps:
//! `first_divergence` is the first step whose token differs from the exact cache's (None if
//! none does); both generations are reported (`FreeText`), so a page can show that token in both
//! texts.
//!
//! The models are read from any `ByteSource` that can be opened again (`kv_compare_from`): the
//! CLI's bytes in memory, or the page's model file held by JavaScript.

use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use crate::core::gguf::ByteSource;
use crate::core::kv_policy::KvPolicy;
use crate::core::logits::log_sum_exp;
use crate::core::sampler::argmax;
use crate::core::tokenizer::Tokenizer;
use crate::engine::{Engine, LoadOptions};
use crate::error::{Error, Result};

/// Tokens of the text that start the free generation.
pub const PREFIX: usize = 32;
/// Greedy steps of the free generation.
pub const FREE_STEPS: usize = 64;

/// One policy's figures against the exact cache.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyReport {
    pub name: String,
    /// Bytes of K and V the policy holds after the text (positions held × bytes a position).
    pub cache_bytes: u64,
    /// Bytes of one position's K and V over every layer.
    pub bytes_per_position: u64,
    /// Positions the policy holds after the text.
    pub positions_held: usize,
    pub top1_agreement: f64,
    pub mean_kl: f64,
    pub perplexity: f64,
    pub first_divergence: Option<usize>,
    /// The policy's free greedy generation (its step `first_divergence` differs from
    /// `KvComparison::reference`'s).
    pub free: FreeText,
    /// Per position: whether the argmax agreed, and KL(P ‖ P') (for the page's chart).
    pub agreement_by_position: Vec<bool>,
    pub kl_by_position: Vec<f32>,
}

/// `kvscope kv-compare`'s result.
#[derive(Debug, Clone, Serialize)]
pub struct KvComparison {
    /// Positions compared: the text's tokens less one (the last has nothing to predict).
    pub positions: usize,
    /// The free generation's steps (fewer than `FREE_STEPS` where the context ends first).
    pub free_steps: usize,
    /// The text the free generations start from: the text's first `PREFIX` tokens, decoded.
    pub prefix_text: String,
    /// The exact cache's free greedy generation.
    pub reference: FreeText,
    pub policies: Vec<PolicyReport>,
}

/// A free greedy generation: its `free_steps` token ids, each token's own text (lossy where a
/// token is part of a character), and the whole text decoded. `pieces[..d].concat()` is the text
/// before step d.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FreeText {
    pub ids: Vec<u32>,
    pub pieces: Vec<String>,
    pub text: String,
}

impl FreeText {
    fn new(ids: Vec<u32>, tok: &Tokenizer) -> Self {
        FreeText { pieces: ids.iter().map(|&i| tok.token_text(i)).collect(), text: tok.decode(&ids), ids }
    }
}

/// Running sums of one policy's comparison.
struct Tally {
    agree: Vec<bool>,
    kl: Vec<f32>,
    nll: f64,
}

/// log softmax(logits), into `out`.
fn log_softmax(logits: &[f32], out: &mut Vec<f32>) {
    let lse = log_sum_exp(logits);
    out.clear();
    out.extend(logits.iter().map(|&x| (x as f64 - lse) as f32));
}

/// KL(P ‖ Q) from log-probabilities.
fn kl(lp: &[f32], lq: &[f32]) -> f32 {
    lp.iter().zip(lq).map(|(&a, &b)| (a as f64).exp() * (a - b) as f64).sum::<f64>().max(0.0) as f32
}

/// The text `ids` through the exact cache and each of `policies`, each model loaded from
/// `bytes` with `opts` (backend, context) and its policy.
pub async fn kv_compare(bytes: &[u8], opts: &LoadOptions, ids: &[u32], policies: &[KvPolicy]) -> Result<KvComparison> {
    kv_compare_from(bytes, opts, ids, policies, &AtomicBool::new(false)).await
}

/// `kv_compare` with each model read from its own clone of `src` (every clone reads the same
/// file from its start: a slice, or a handle to a file held elsewhere); `stop` set from outside
/// ends it after the current position (`Error::Stopped`).
pub async fn kv_compare_from<S: ByteSource + Clone>(
    src: S,
    opts: &LoadOptions,
    ids: &[u32],
    policies: &[KvPolicy],
    stop: &AtomicBool,
) -> Result<KvComparison> {
    if ids.len() < 2 {
        return Err(Error::Option(format!("kv-compare needs a text of at least 2 tokens (got {})", ids.len())));
    }
    if ids.len() > opts.context {
        return Err(Error::Option(format!("the text has {} tokens; the context holds {}", ids.len(), opts.context)));
    }
    let load = |p: KvPolicy| {
        let mut s = src.clone();
        let o = opts.clone().with_policy(p);
        async move { Engine::load_from(&mut s, o).await }
    };
    let mut exact = load(KvPolicy::EXACT).await?;
    let mut models = Vec::with_capacity(policies.len());
    for p in policies {
        models.push(load(*p).await?);
    }
    let positions = ids.len() - 1;
    let mut tallies: Vec<Tally> =
        policies.iter().map(|_| Tally { agree: Vec::with_capacity(positions), kl: Vec::with_capacity(positions), nll: 0.0 }).collect();
    let (mut lp, mut lq) = (Vec::new(), Vec::new());
    for t in 0..positions {
        if stop.load(Ordering::Relaxed) {
            return Err(Error::Stopped);
        }
        exact.feed(&ids[t..t + 1]).await?;
        log_softmax(exact.logits(), &mut lp);
        let want = argmax(&lp);
        for (m, tally) in models.iter_mut().zip(&mut tallies) {
            m.feed(&ids[t..t + 1]).await?;
            log_softmax(m.logits(), &mut lq);
            tally.agree.push(argmax(&lq) == want);
            tally.kl.push(kl(&lp, &lq));
            tally.nll -= lq[ids[t + 1] as usize] as f64;
        }
    }
    let prefix = &ids[..PREFIX.min(ids.len())];
    let free_steps = FREE_STEPS.min(opts.context.saturating_sub(prefix.len()));
    let reference = greedy(&mut exact, prefix, free_steps, stop).await?;
    let tok = exact.tokenizer.clone();
    let mut reports = Vec::with_capacity(policies.len());
    for ((p, m), tally) in policies.iter().zip(&mut models).zip(tallies) {
        let text = greedy(m, prefix, free_steps, stop).await?;
        let per = p.bytes_per_position(m.cfg.n_layers, m.cfg.kv_dim());
        let held = p.held(ids.len());
        reports.push(PolicyReport {
            name: p.name(),
            cache_bytes: held as u64 * per,
            bytes_per_position: per,
            positions_held: held,
            top1_agreement: tally.agree.iter().filter(|&&a| a).count() as f64 / positions as f64,
            mean_kl: tally.kl.iter().map(|&k| k as f64).sum::<f64>() / positions as f64,
            perplexity: (tally.nll / positions as f64).exp(),
            first_divergence: reference.iter().zip(&text).position(|(a, b)| a != b),
            free: FreeText::new(text, &tok),
            agreement_by_position: tally.agree,
            kl_by_position: tally.kl,
        });
    }
    Ok(KvComparison {
        positions,
        free_steps,
        prefix_text: tok.decode(prefix),
        reference: FreeText::new(reference, &tok),
        policies: reports,
    })
}

/// `steps` greedy tokens after `prefix`, from an emptied cache (`Error::Stopped` once `stop` is
/// set).
async fn greedy(m: &mut Engine, prefix: &[u32], steps: usize, stop: &AtomicBool) -> Result<Vec<u32>> {
    m.reset();
    m.feed(prefix).await?;
    let mut out = Vec::with_capacity(steps);
    for _ in 0..steps {
        if stop.load(Ordering::Relaxed) {
            return Err(Error::Stopped);
        }
        let id = argmax(m.logits());
        out.push(id);
        m.feed(&[id]).await?;
    }
    Ok(out)
}
