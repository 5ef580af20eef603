//! Deliberately broken KV-cache handling, for teaching ("analysing a flawed KV cache
//! implementation"): each `Flaw` is a bug a real implementation can have, run by the same engine
//! on the same model, so that its continuation can be set beside the correct one. The prompt is
//! always prefilled correctly; the flaw acts on every generated token fed back into the model.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Flaw {
    /// The correct cache.
    #[default]
    None,
    /// The new token's K and V are computed but never written into the cache: its query attends
    /// over an empty row (zeros) in place of its own K and V.
    NoAppend,
    /// RoPE's position is never advanced: every new token's q and k are rotated as position 0.
    RopePos0,
    /// The fill counter never advances: every step writes its K and V into the same row (the
    /// first generated token's), so the cache stops growing.
    SameRow,
}

impl Flaw {
    pub const ALL: [Flaw; 3] = [Flaw::NoAppend, Flaw::RopePos0, Flaw::SameRow];

    pub fn name(self) -> &'static str {
        match self {
            Flaw::None => "none",
            Flaw::NoAppend => "no-append",
            Flaw::RopePos0 => "rope-pos-0",
            Flaw::SameRow => "same-row",
        }
    }

    /// One sentence on what goes wrong, and why the text changes.
    pub fn why(self) -> &'static str {
        match self {
            Flaw::None => "The cache gains one row of K and V per token, and each query attends over all of them.",
            Flaw::NoAppend => {
                "Each new token's K and V are never written to the cache, so its query attends over an empty row instead of itself and the model loses track of what it just said."
            }
            Flaw::RopePos0 => {
                "Every new token is rotated as if it stood at position 0, so the attention scores that encode how far back each cached token is are wrong for every generated token."
            }
            Flaw::SameRow => {
                "The cache's fill counter never advances, so each step overwrites the previous token's K and V: the model only ever sees the prompt and the current token."
            }
        }
    }

    /// The code `rope_kv` reads from the step uniform (`Step.flaw`): 1 skips the cache write,
    /// 2 rotates at position 0, 0 is correct.
    pub fn kernel_code(self) -> u32 {
        match self {
            Flaw::NoAppend => 1,
            Flaw::RopePos0 => 2,
            Flaw::None | Flaw::SameRow => 0,
        }
    }
}

impl std::str::FromStr for Flaw {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        std::iter::once(Flaw::None).chain(Flaw::ALL).find(|f| f.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Flaw::ALL.iter().map(|f| f.name()).collect();
            Error::Option(format!("unknown flaw `{s}` (use none, {})", names.join(", ")))
        })
    }
}
