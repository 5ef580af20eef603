//! Constrained decoding with llguidance: at each step only the tokens that keep the text a
//! prefix of what a grammar matches may be picked.
//!
//! Glossary: grammar, what the generated text must match (a JSON schema, or a Lark grammar
//! for a forced tool call); mask, a bitset over the vocabulary, bit t set when token t keeps the
//! text a valid prefix (`core::logits::apply_mask` bans the others); matcher, one
//! generation's place in its grammar; grammar's end, no token can extend the text any more.

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};
use serde::Deserialize;
use serde_json::Value;

use crate::clock::now_ms;
use crate::core::logits::apply_mask;
use crate::core::tokenizer::Tokenizer;
use crate::error::{Error, Result};

/// OpenAI's `response_format`: `{type: "text"}`, `{type: "json_object"}` or `{type:
/// "json_schema", json_schema: {name, description, schema, strict}}`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    #[default]
    Text,
    JsonObject,
    JsonSchema {
        json_schema: JsonSchema,
    },
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct JsonSchema {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub schema: Option<Value>,
    /// The text always keeps to the schema; `strict` is accepted and changes nothing.
    #[serde(default)]
    pub strict: Option<bool>,
}

/// What a generation's text must match.
#[derive(Debug, Clone, PartialEq)]
pub enum Grammar {
    /// A JSON Schema (`{"type": "object"}` for any object).
    Json(Value),
    /// A Lark grammar (llguidance's dialect, with `%json {…}` for JSON parts).
    Lark(String),
}

impl ResponseFormat {
    /// The grammar this format asks for, if any: JSON without whitespace between tokens unless
    /// the schema's `x-guidance` says otherwise (flexible whitespace lets a sampled model run on
    /// in spaces and newlines).
    pub fn grammar(&self) -> Option<Grammar> {
        let schema = match self {
            ResponseFormat::Text => return None,
            ResponseFormat::JsonObject => serde_json::json!({"type": "object"}),
            ResponseFormat::JsonSchema { json_schema } => json_schema.schema.clone().unwrap_or(serde_json::json!({})),
        };
        Some(Grammar::Json(compact(schema)))
    }
}

/// `schema` with `x-guidance: {whitespace_flexible: false}` unless it sets its own options.
fn compact(mut schema: Value) -> Value {
    if let Value::Object(m) = &mut schema {
        m.entry("x-guidance").or_insert_with(|| serde_json::json!({"whitespace_flexible": false}));
    }
    schema
}

/// The model's vocabulary as llguidance sees it: each token's bytes, control tokens marked with
/// 0xFF (never produced as text), padded to the logits' size.
struct Vocab {
    trie: TokTrie,
    tokenizer: Arc<Tokenizer>,
}

impl TokenizerEnv for Vocab {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        if self.tokenizer.add_space_prefix {
            // SentencePiece puts a space before the text: its ids are not this text's.
            return self.trie.greedy_tokenize(s);
        }
        self.trie
            .tokenize_with_greedy_fallback(s, |s| self.tokenizer.encode_text(s).unwrap_or_else(|_| self.trie.greedy_tokenize(s.as_bytes())))
    }

    fn tokenize_is_canonical(&self) -> bool {
        !self.tokenizer.add_space_prefix
    }
}

/// The grammar compiler of one model, built once (its token trie is the vocabulary's) and
/// shared by every generation.
pub struct Grammars {
    factory: ParserFactory,
}

impl Grammars {
    /// `n_logits`: the logits row's length (the vocabulary, padded).
    pub fn new(tokenizer: Arc<Tokenizer>, n_logits: usize) -> Result<Self> {
        let special = |b: &[u8]| [&[TokTrie::SPECIAL_TOKEN_MARKER][..], b].concat();
        let words: Vec<Vec<u8>> = (0..n_logits as u32)
            .map(|id| match tokenizer.token_bytes(id) {
                // Unused ids (and the padding past the vocabulary) can never be text.
                [] => special(format!("<[{id}]>").as_bytes()),
                b if tokenizer.is_control(id) => special(b),
                b => b.to_vec(),
            })
            .collect();
        let eos = tokenizer.stop_tokens().to_vec();
        let first = *eos.first().ok_or_else(|| Error::Tokenizer("the vocabulary has no end-of-generation token".into()))?;
        let trie = TokTrie::from(&TokRxInfo::new(words.len() as u32, first), &words).with_eos_tokens(&eos);
        let env: TokEnv = Arc::new(Vocab { trie, tokenizer });
        let mut factory = ParserFactory::new_simple(&env).map_err(|e| Error::Tokenizer(format!("grammar vocabulary: {e}")))?;
        factory.quiet();
        Ok(Grammars { factory })
    }

    /// A matcher for `grammar`, or the error that says what is wrong with it (an invalid schema:
    /// `Error::Param` naming `param`).
    pub fn matcher(&self, grammar: &Grammar, param: &str) -> Result<Constraint> {
        let top = match grammar {
            Grammar::Json(schema) => TopLevelGrammar::from_json_schema(schema.clone()),
            Grammar::Lark(lark) => TopLevelGrammar::from_lark(lark.clone()),
        };
        let t0 = now_ms();
        let parser = self.factory.create_parser(top).map_err(|e| Error::param(param, format!("{param}: {e}")))?;
        let m = Matcher::new(Ok(parser));
        if let Some(e) = m.get_error() {
            return Err(Error::param(param, format!("{param}: {e}")));
        }
        Ok(Constraint { m, compile_ms: now_ms() - t0, ms: 0.0 })
    }
}

/// One generation's matcher, and the time it has taken.
pub struct Constraint {
    m: Matcher,
    /// Compiling the grammar.
    pub compile_ms: f64,
    /// Computing masks and advancing past picked tokens.
    pub ms: f64,
}

impl Constraint {
    /// The grammar's end: no token extends the text (the matcher must not be asked for a mask).
    pub fn ended(&self) -> bool {
        self.m.is_stopped()
    }

    /// Bans every token the grammar does not allow next.
    pub fn mask(&mut self, logits: &mut [f32]) -> Result<()> {
        let t0 = now_ms();
        let mask = self.m.compute_mask().map_err(|e| Error::Option(format!("the grammar has no next token: {e}")))?;
        apply_mask(logits, mask.as_slice());
        self.ms += now_ms() - t0;
        Ok(())
    }

    /// Advances past the picked token (one the mask allowed).
    pub fn accept(&mut self, id: u32) -> Result<()> {
        let t0 = now_ms();
        self.m.consume_token(id).map_err(|e| Error::Option(format!("the grammar refused token {id}: {e}")))?;
        self.ms += now_ms() - t0;
        Ok(())
    }
}
