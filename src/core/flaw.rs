//! Deliberately broken KV-cache handling, for teaching ("analysing a flawed KV cache
//! implementation"): each `Flaw` is a bug a real implementation can have, run by the same engine
//! on the same model, so that its continuation can be set beside the correct one. The prompt is
//! always prefilled correctly; the flaw acts on every generated token fed back into the model.
//!
//! Everything about the flaws is here: their names and reasons, the codes the kernels read from
//! the step uniform (`CODES`, emitted into every WGSL module, and `kernel_code`), what the CPU
//! pass does differently (`rope_position`, `appends`), and the rows a flawed run writes
//! (`FlawRows`, the engine's bookkeeping).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", try_from = "String")]
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

    /// The codes of the step uniform's `flaw` field, as `const`s of every WGSL module. `SameRow`
    /// needs none: the engine passes the one row as the position.
    pub const CODES: [(&'static str, u32); 3] = [("FLAW_NONE", 0), ("FLAW_NO_APPEND", 1), ("FLAW_ROPE_POS_0", 2)];

    /// The number of codes: the decode step table keeps one slot per (code, position).
    pub const N_CODES: usize = Self::CODES.len();

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

    /// The code `rope_kv` reads from the step uniform (`CODES`).
    pub fn kernel_code(self) -> u32 {
        let name = match self {
            Flaw::NoAppend => "FLAW_NO_APPEND",
            Flaw::RopePos0 => "FLAW_ROPE_POS_0",
            Flaw::None | Flaw::SameRow => "FLAW_NONE",
        };
        Self::CODES.iter().find(|c| c.0 == name).map_or(0, |c| c.1)
    }

    /// The position RoPE turns a token at `pos` by.
    pub fn rope_position(self, pos: usize) -> usize {
        if self == Flaw::RopePos0 {
            0
        } else {
            pos
        }
    }

    /// Whether a token's K and V are written into the cache.
    pub fn appends(self) -> bool {
        self != Flaw::NoAppend
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

impl TryFrom<String> for Flaw {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

/// The cache rows a flawed generation has written, which no longer hold the K and V of the
/// tokens at their positions.
#[derive(Debug, Default, Clone, Copy)]
pub struct FlawRows {
    /// The first row a flawed generation fed (the prompt's rows before it are still right).
    pub tainted_from: Option<usize>,
    /// With `Flaw::SameRow`: the one row every generated token is written to.
    pub same_row: Option<usize>,
}

impl FlawRows {
    /// The row a token fed with `flaw` at position `pos` is written to.
    pub fn row(&self, flaw: Flaw, pos: usize) -> usize {
        match (flaw, self.same_row) {
            (Flaw::SameRow, Some(row)) => row,
            _ => pos,
        }
    }

    /// A flawed token is fed at `pos`: returns true the first time (the rows from `pos` on
    /// must then be cleared, so that rows the flaw leaves unwritten read as zeros).
    pub fn taint(&mut self, flaw: Flaw, pos: usize) -> bool {
        let first = self.tainted_from.is_none();
        self.tainted_from.get_or_insert(pos);
        if flaw == Flaw::SameRow {
            self.same_row.get_or_insert(pos);
        }
        first
    }

    /// The cache is cut back to `n` positions: rows from there are forgotten.
    pub fn rewind(&mut self, n: usize) {
        if self.tainted_from.is_some_and(|t| n <= t) {
            *self = FlawRows::default();
        }
    }

    /// How much of a cached prefix of `common` positions may be reused.
    pub fn reusable(&self, common: usize) -> usize {
        common.min(self.tainted_from.unwrap_or(usize::MAX))
    }
}
