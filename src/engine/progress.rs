//! A generation's progress: the text so far and the timings of its prefill and of each step,
//! for the per-token events and the summary.

use crate::clock::now_ms;
use crate::core::stop_strings::{Released, TextGate};
use crate::core::tokenizer::Utf8Stream;
use crate::engine::options::{PastContext, StopReason, Summary};

/// A generation's text and timings as it goes, for the per-token events and the summary.
pub(super) struct Progress {
    prompt_tokens: usize,
    t0: f64,
    /// Set when the prompt has been fed.
    prefill_ms: Option<f64>,
    ttft_ms: f64,
    t_decode: f64,
    /// When the step producing the next token began.
    t_step: f64,
    pub(super) generated: usize,
    /// The text released so far.
    text: String,
    pub(super) utf8: Utf8Stream,
    gate: TextGate,
}

impl Progress {
    pub(super) fn new(prompt_tokens: usize, gate: TextGate) -> Self {
        let t0 = now_ms();
        Progress {
            prompt_tokens,
            t0,
            prefill_ms: None,
            ttft_ms: 0.0,
            t_decode: t0,
            t_step: t0,
            generated: 0,
            text: String::new(),
            utf8: Utf8Stream::default(),
            gate,
        }
    }

    pub(super) fn prefilled(&mut self) {
        let now = now_ms();
        self.prefill_ms = Some(now - self.t0);
        self.t_decode = now;
        self.t_step = now;
    }

    /// What of a token's text can be released (`core::stop_strings`).
    pub(super) fn release(&mut self, piece: &str) -> Released {
        self.gate.push(piece)
    }

    /// Counts a token whose released text is `piece`; returns the milliseconds of the step that made it.
    pub(super) fn token(&mut self, piece: &str) -> f64 {
        let now = now_ms();
        if self.generated == 0 {
            self.ttft_ms = now - self.t0;
        }
        self.generated += 1;
        self.text.push_str(piece);
        now - self.t_step
    }

    pub(super) fn step_started(&mut self) {
        self.t_step = now_ms();
    }

    pub(super) fn summary(mut self, stop: StopReason, backend: String, grammar_ms: f64, past_context: Option<PastContext>) -> Summary {
        let tail = self.gate.finish() + &self.utf8.finish();
        self.text.push_str(&tail);
        let now = now_ms();
        let prefill_ms = self.prefill_ms.unwrap_or(now - self.t0);
        let decode_ms = if self.prefill_ms.is_some() { now - self.t_decode } else { 0.0 };
        Summary {
            prompt_tokens: self.prompt_tokens,
            generated_tokens: self.generated,
            ttft_ms: self.ttft_ms,
            prefill_ms,
            prefill_tps: if self.prefill_ms.is_some() { self.prompt_tokens as f64 / (prefill_ms / 1e3).max(1e-9) } else { 0.0 },
            decode_ms,
            decode_tps: if self.generated > 0 { self.generated as f64 / (decode_ms / 1e3).max(1e-9) } else { 0.0 },
            stop,
            backend,
            text: self.text,
            tail,
            grammar_ms,
            past_context,
        }
    }
}
