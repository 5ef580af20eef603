//! `kvscope bench`: prefill and decode speed of the engine, measured in one run, with the
//! per-token GPU costs (dispatches, submits, maps, bytes read back, CPU encode time; zero on the
//! CPU backends) and memory.

use serde::Serialize;

use crate::backend::gpu::{GpuCounters, Profile};
use crate::clock::now_ms;
use crate::core::grammar::ResponseFormat;
use crate::core::sampler::argmax;
use crate::engine::{Engine, GenerateOptions};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Serialize)]
pub struct DecodeRun {
    /// Positions cached before the first measured step.
    pub context: usize,
    pub steps: usize,
    pub tokens_per_s: f64,
    pub ms_per_token: f64,
    /// The median step: what a machine's bursts of other work leave alone.
    pub median_ms_per_token: f64,
    /// The greedy tokens of the run (the first picked after the context, then one per step).
    pub tokens: Vec<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub adapter: String,
    pub model: String,
    pub prompt_tokens: usize,
    pub gen_tokens: usize,
    /// The prompt in chunks (one submit per chunk).
    pub prefill_tokens_per_s: f64,
    pub prefill_chunk: usize,
    /// The same prompt one token per submit, with a readback each.
    pub prefill_token_by_token_per_s: f64,
    pub batched_over_token_by_token: f64,
    pub ttft_ms: f64,
    pub decode: Vec<DecodeRun>,
    /// Decode speed at context 1024 over that at 1, from the median steps.
    pub decode_1024_over_0: Option<f64>,
    /// Decode speed at the last context over that at the first, from the median steps.
    pub decode_longest_over_shortest: Option<f64>,
    /// The same from GPU steps at the two contexts alternating (`Engine::time_steps`), which a
    /// noisy machine's load changes alike; GPU backend, two contexts or more.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decode_interleaved: Option<Interleaved>,
    /// Per decode token (averaged over the measured steps).
    pub dispatches_per_token: f64,
    pub submits_per_token: f64,
    pub maps_per_token: f64,
    pub readback_bytes_per_token: f64,
    pub encode_ms_per_token: f64,
    /// Buffers, bind groups, layouts, modules and pipelines created per decode token.
    pub gpu_objects_created_per_token: f64,
    pub gpu_argmax: bool,
    pub gpu_buffer_bytes: u64,
    pub weight_bytes: u64,
    pub kv_cache_bytes: u64,
    pub gpu_bytes_over_weights_plus_kv: f64,
    /// Where the GPU time goes, when asked for: a decode step at the last context and a prefill
    /// chunk (`crate::backend::gpu::profile`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<Vec<Profile>>,
    /// Decode under a grammar, when asked for (`--json-schema`, `--json-object`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grammar: Option<GrammarRun>,
}

/// Greedy decode at the first context with and without a grammar: what its mask costs.
#[derive(Debug, Clone, Serialize)]
pub struct GrammarRun {
    /// Building the grammar compiler over the vocabulary (once per model).
    pub setup_ms: f64,
    /// Compiling this grammar (once per request).
    pub compile_ms: f64,
    /// Steps decoded under the grammar (fewer than asked where the grammar ended).
    pub steps: usize,
    /// The mask and advancing the grammar, per token.
    pub mask_ms_per_token: f64,
    /// Median decode step with the grammar, and without it (the same context and count).
    pub median_ms_per_token: f64,
    pub plain_median_ms_per_token: f64,
    /// Decode speed with the grammar over that without.
    pub with_over_without: f64,
    /// The mask's share of a step under the grammar.
    pub mask_share: f64,
    /// The text decoded under the grammar.
    pub text: String,
}

/// Decode steps at the first and last contexts, alternating.
#[derive(Debug, Clone, Serialize)]
pub struct Interleaved {
    pub short_context: usize,
    pub long_context: usize,
    pub short_median_ms: f64,
    pub long_median_ms: f64,
    /// Speed at the long context over that at the short one.
    pub long_over_short: f64,
}

/// The most steps `interleaved` takes at each context.
const INTERLEAVED_STEPS: usize = 24;

/// The prompt repeated to `n` tokens.
fn fill(prompt: &[u32], n: usize) -> Vec<u32> {
    prompt.iter().cycle().take(n).copied().collect()
}

/// `steps` GPU steps at each of the two contexts, alternating (`Engine::time_steps`), over a
/// cache of at least the long context: the last decode run's, filled only where it is shorter
/// (what the rows hold does not change a step's time).
async fn interleaved(e: &mut Engine, prompt: &[u32], short: usize, long: usize, steps: usize) -> Result<Interleaved> {
    if e.position() < long {
        e.reset();
        e.feed(&fill(prompt, long)).await?;
    }
    let positions: Vec<usize> = (0..steps).flat_map(|_| [short, long]).collect();
    let times = e.time_steps(&positions).await?;
    let (s, l): (Vec<f64>, Vec<f64>) = (times.iter().step_by(2).copied().collect(), times.iter().skip(1).step_by(2).copied().collect());
    let (short_median_ms, long_median_ms) = (median(&s), median(&l));
    Ok(Interleaved {
        short_context: short,
        long_context: long,
        short_median_ms,
        long_median_ms,
        long_over_short: short_median_ms / long_median_ms,
    })
}

/// What `run` measures.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub prompt_tokens: usize,
    pub gen_tokens: usize,
    pub gpu_argmax: bool,
    /// Cached positions before each decode run.
    pub contexts: Vec<usize>,
    /// Also profile the GPU passes.
    pub profile: bool,
    /// Also decode under this format's grammar (`GrammarRun`), unless it is text.
    pub response_format: ResponseFormat,
}

/// The GPU's counters (all zero on a CPU backend).
fn counters(e: &Engine) -> Result<GpuCounters> {
    Ok(e.gpu().map(|g| g.counters).unwrap_or_default())
}

/// `steps` greedy decode steps after `context` cached positions, with `opts` otherwise; returns
/// the run, the counters before and after, the number of forward passes between them, the GPU
/// objects created and the summary.
async fn decode(e: &mut Engine, prompt: &[u32], context: usize, steps: usize, opts: GenerateOptions) -> Result<(DecodeRun, Counted)> {
    e.reset();
    let fill = fill(prompt, context.max(1));
    e.feed(&fill).await?;
    let opts = GenerateOptions { max_tokens: steps + 1, report_top: 0, ..opts };
    let before = counters(e)?;
    let objects = e.gpu().map_or(0, |g| g.ctx.objects_created());
    let mut times = Vec::with_capacity(steps + 1);
    let mut tokens = Vec::with_capacity(steps + 1);
    let mut record = |ev: &crate::engine::TokenEvent| {
        times.push(ev.ms);
        tokens.push(ev.id);
        true
    };
    let summary = e.generate(&[], &opts, &mut record).await?;
    let after = counters(e)?;
    let created = e.gpu().map_or(0, |g| g.ctx.objects_created()) - objects;
    // The first event's time covers no decode step; the others are one step each.
    let measured: f64 = times.iter().skip(1).sum();
    let n = times.len().saturating_sub(1).max(1);
    // Every reported token is fed back: one forward pass each.
    let passes = times.len();
    Ok((
        DecodeRun {
            context: fill.len(),
            steps: n,
            tokens_per_s: n as f64 / (measured / 1e3),
            ms_per_token: measured / n as f64,
            median_ms_per_token: median(&times[1.min(times.len())..]),
            tokens,
        },
        Counted { before, after, passes, created, summary },
    ))
}

/// What a decode run counted besides its times.
struct Counted {
    before: GpuCounters,
    after: GpuCounters,
    passes: usize,
    created: u64,
    summary: crate::engine::Summary,
}

/// `GrammarRun`: greedy decode at `context` under `format`'s grammar, between two runs without
/// it (their medians' mean is the plain figure: a busy machine's drift falls on both sides).
async fn grammar_run(e: &mut Engine, prompt: &[u32], context: usize, steps: usize, format: &ResponseFormat) -> Result<GrammarRun> {
    let grammar = format.grammar().ok_or_else(|| Error::Option("bench: the response format has no grammar".into()))?;
    let t0 = now_ms();
    e.grammars()?;
    let setup_ms = now_ms() - t0;
    let compile_ms = e.grammars()?.matcher(&grammar, "response_format")?.compile_ms;
    let plain = GenerateOptions::default();
    let (before, _) = decode(e, prompt, context, steps, plain.clone()).await?;
    let (run, c) = decode(e, prompt, context, steps, GenerateOptions { response_format: format.clone(), ..plain.clone() }).await?;
    let (after, _) = decode(e, prompt, context, steps, plain).await?;
    let plain_median = (before.median_ms_per_token + after.median_ms_per_token) / 2.0;
    let n = c.summary.generated_tokens.max(1) as f64;
    Ok(GrammarRun {
        setup_ms,
        compile_ms,
        steps: run.steps,
        mask_ms_per_token: c.summary.grammar_ms / n,
        median_ms_per_token: run.median_ms_per_token,
        plain_median_ms_per_token: plain_median,
        with_over_without: plain_median / run.median_ms_per_token,
        mask_share: c.summary.grammar_ms / n / run.median_ms_per_token,
        text: c.summary.text,
    })
}

/// The middle value (the mean of the two middle ones for an even count); 0 for none.
fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The contexts decode speed is measured at unless asked otherwise.
pub const CONTEXTS: [usize; 3] = [0, 256, 1024];

/// The prompt fed in chunks (ms, and ms to the first token picked), then token by token (ms).
async fn time_prefill(e: &mut Engine, prompt: &[u32]) -> Result<(f64, f64, f64)> {
    e.reset();
    let t0 = now_ms();
    e.feed(prompt).await?;
    let prefill_ms = now_ms() - t0;
    argmax(e.logits());
    let ttft_ms = now_ms() - t0;
    e.reset();
    let t0 = now_ms();
    for &t in prompt {
        e.feed(&[t]).await?;
    }
    Ok((prefill_ms, ttft_ms, now_ms() - t0))
}

/// Runs the benchmark on `e`: a `prompt_tokens` prompt batched and token by token, then
/// `gen_tokens` greedy decode steps after each of `contexts` cached positions.
pub async fn run(e: &mut Engine, o: &BenchOptions) -> Result<BenchReport> {
    let (prompt_tokens, gen_tokens, gpu_argmax, contexts) = (o.prompt_tokens, o.gen_tokens, o.gpu_argmax, o.contexts.as_slice());
    if prompt_tokens == 0 || gen_tokens == 0 || contexts.is_empty() {
        return Err(Error::Option("bench needs at least one prompt token, one decode step and one context".into()));
    }
    let text = "The KV cache stores the keys and values of every token seen so far, so that each new token \
                attends over them without recomputing the prefix. ";
    let base = e.tokenizer.encode(text)?;
    let prompt = fill(&base, prompt_tokens);
    let need = prompt_tokens.max(contexts.iter().copied().max().unwrap_or(0)) + gen_tokens + 2;
    if need > e.context {
        return Err(Error::Option(format!("bench needs a context of {need} positions; load with a larger one")));
    }

    let (prefill_ms, ttft_ms, tbt_ms) = time_prefill(e, &prompt).await?;

    let mut runs = Vec::new();
    let mut per_token = None;
    for &ctx in contexts {
        let (r, c) = decode(e, &prompt, ctx, gen_tokens, GenerateOptions { gpu_argmax, ..Default::default() }).await?;
        if per_token.is_none() {
            per_token = Some((c.passes, c.before, c.after, c.created));
        }
        runs.push(r);
    }
    let profile = if o.profile { Some(e.profile().await?) } else { None };
    let grammar = match o.response_format {
        ResponseFormat::Text => None,
        ref f => Some(grammar_run(e, &prompt, contexts[0], gen_tokens, f).await?),
    };
    let decode_interleaved = match (contexts, e.gpu().is_some()) {
        ([first, .., last], true) if first.max(&1) < last => {
            Some(interleaved(e, &prompt, (*first).max(1), *last, gen_tokens.min(INTERLEAVED_STEPS)).await?)
        }
        _ => None,
    };
    let (steps, b, a, created) = per_token.expect("one run");
    let steps = steps.max(1);
    let d = |x: u64, y: u64| (y - x) as f64 / steps as f64;
    let (weight_bytes, kv) = e.memory();
    let gpu_buffer_bytes = e.gpu().map_or(0, |g| g.buffer_bytes());
    let at = |c: usize| runs.iter().find(|r| r.context == c.max(1)).map(|r| 1e3 / r.median_ms_per_token);
    Ok(BenchReport {
        adapter: e.backend(),
        model: e.cfg.name.clone(),
        prompt_tokens,
        gen_tokens,
        prefill_tokens_per_s: prompt_tokens as f64 / (prefill_ms / 1e3),
        prefill_chunk: e.prefill_chunk,
        prefill_token_by_token_per_s: prompt_tokens as f64 / (tbt_ms / 1e3),
        batched_over_token_by_token: tbt_ms / prefill_ms,
        ttft_ms,
        decode_1024_over_0: at(1024).zip(at(0)).map(|(x, y)| x / y),
        decode_longest_over_shortest: runs.last().zip(runs.first()).map(|(x, y)| y.median_ms_per_token / x.median_ms_per_token),
        decode: runs,
        decode_interleaved,
        dispatches_per_token: d(b.dispatches, a.dispatches),
        submits_per_token: d(b.submits, a.submits),
        maps_per_token: d(b.maps, a.maps),
        readback_bytes_per_token: d(b.readback_bytes, a.readback_bytes),
        encode_ms_per_token: (a.encode_ms - b.encode_ms) / steps as f64,
        gpu_objects_created_per_token: created as f64 / steps as f64,
        gpu_argmax,
        gpu_buffer_bytes,
        weight_bytes,
        kv_cache_bytes: kv,
        gpu_bytes_over_weights_plus_kv: gpu_buffer_bytes as f64 / (weight_bytes + kv) as f64,
        profile,
        grammar,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn median_of_odd_even_and_none() {
        assert_eq!(super::median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(super::median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(super::median(&[]), 0.0);
    }
}
