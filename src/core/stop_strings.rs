//! Stop strings, matched on the generated text as it streams, across token boundaries.
//!
//! Glossary: released, text handed on with a token event; held, text kept back because it may
//! be the start of a stop string, or because it follows a hold marker (where a tool call
//! starts, so that the call is parsed whole instead of streamed as prose); stop string, text
//! that ends the generation and is never released.

/// The text gate of one generation: each token's text goes in, the text that can be released
/// comes out, and a matched stop string ends it.
#[derive(Debug, Default)]
pub struct TextGate {
    stops: Vec<String>,
    holds: Vec<String>,
    /// Text not released yet.
    pending: String,
    /// A hold marker has been seen: nothing more is released.
    holding: bool,
}

/// What one piece of text let through.
#[derive(Debug, PartialEq, Eq)]
pub struct Released {
    pub text: String,
    /// A stop string ended the text (it and what follows are dropped).
    pub stopped: bool,
}

impl TextGate {
    pub fn new(stops: &[String], holds: &[String]) -> Self {
        TextGate { stops: stops.to_vec(), holds: holds.to_vec(), ..Default::default() }
    }

    /// Takes the next piece of text; releases all of the pending text that can no longer be
    /// part of a stop string or a hold marker.
    pub fn push(&mut self, piece: &str) -> Released {
        self.pending.push_str(piece);
        let stop = first_match(&self.pending, &self.stops);
        if let Some(at) = stop {
            self.pending.truncate(at);
        }
        if !self.holding {
            if let Some(at) = first_match(&self.pending, &self.holds) {
                self.holding = true;
                return Released { text: self.pending.drain(..at).collect(), stopped: stop.is_some() };
            }
        }
        let keep = match (self.holding, stop) {
            (true, _) => self.pending.len(),
            (false, Some(_)) => 0,
            (false, None) => self.partial_suffix(),
        };
        let text = self.pending.drain(..self.pending.len() - keep).collect();
        Released { text, stopped: stop.is_some() }
    }

    /// The held text, at the end of the generation (a stop string's start that never completed,
    /// or everything from a hold marker on).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }

    /// Bytes at the end of `pending` that are a proper prefix of a stop string or hold marker:
    /// the longest such suffix (on a character boundary).
    fn partial_suffix(&self) -> usize {
        let p = &self.pending;
        self.stops
            .iter()
            .chain(&self.holds)
            .flat_map(|s| (1..s.len().min(p.len() + 1)).filter(move |&n| s.is_char_boundary(n) && p.ends_with(&s[..n])))
            .max()
            .unwrap_or(0)
    }
}

/// Where the earliest of `needles` starts in `text`.
fn first_match(text: &str, needles: &[String]) -> Option<usize> {
    needles.iter().filter_map(|n| text.find(n.as_str())).min()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(gate: &mut TextGate, pieces: &[&str]) -> (Vec<String>, bool) {
        let mut out = Vec::new();
        for p in pieces {
            let r = gate.push(p);
            out.push(r.text);
            if r.stopped {
                return (out, true);
            }
        }
        (out, false)
    }

    #[test]
    fn a_stop_string_across_tokens_is_never_released() {
        let mut g = TextGate::new(&["\n\n".into(), "END".into()], &[]);
        let (out, stopped) = run(&mut g, &["Paris", ".\n", "\nThe"]);
        assert_eq!(out, vec!["Paris", ".", ""]);
        assert!(stopped);
        assert_eq!(g.finish(), "");
        let mut g = TextGate::new(&["END".into()], &[]);
        assert_eq!(run(&mut g, &["aE", "N", "x"]), (vec!["a".into(), "".into(), "ENx".into()], false));
        let mut g = TextGate::new(&["END".into()], &[]);
        assert_eq!(run(&mut g, &["aEN"]).0, vec!["a"]);
        assert_eq!(g.finish(), "EN", "held at the end, never a stop");
        let mut g = TextGate::new(&["é!".into()], &[]);
        assert_eq!(run(&mut g, &["caf", "é", "!"]), (vec!["caf".into(), "".into(), "".into()], true));
    }

    #[test]
    fn a_hold_marker_keeps_the_rest() {
        let mut g = TextGate::new(&[], &["<tool_call>".into()]);
        let (out, _) = run(&mut g, &["Sure. <tool", "_call>\n{\"name\"", "}</tool_call>"]);
        assert_eq!(out, vec!["Sure. ", "", ""]);
        assert_eq!(g.finish(), "<tool_call>\n{\"name\"}</tool_call>");
        let mut g = TextGate::new(&["</tool_call>".into()], &["<tool_call>".into()]);
        let (out, stopped) = run(&mut g, &["<tool_call>x</tool_call>tail"]);
        assert_eq!((out, stopped), (vec!["".to_string()], true));
        assert_eq!(g.finish(), "<tool_call>x");
    }
}
