//! Byte-level BPE tokenizer built from the GGUF vocabulary (`tokenizers` crate), the model's chat
//! template (minijinja), and a streaming detokeniser that never emits a broken UTF-8 character.

use std::collections::HashMap;

use serde::Serialize;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior};

use crate::error::{Error, Result};
use crate::gguf::Gguf;

/// `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// The bytes each token stands for (byte-level BPE undone; control tokens as their text).
    token_bytes: Vec<Vec<u8>>,
    is_control: Vec<bool>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    /// Extra end-of-turn tokens (e.g. `<|im_end|>`) that also stop generation.
    pub eot: Option<u32>,
    pub add_bos: bool,
    chat_template: Option<String>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

/// GPT-2's map from bytes to printable characters, the alphabet of byte-level BPE vocabularies.
pub fn byte_to_char() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u32 {
        let printable = (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        table[b as usize] = if printable {
            char::from_u32(b).expect("latin-1")
        } else {
            n += 1;
            char::from_u32(255 + n).expect("shifted byte")
        };
    }
    table
}

/// The pre-tokeniser regexes llama.cpp uses for each `tokenizer.ggml.pre`.
fn pre_tokenizer(pre: &str) -> Result<Vec<PreTokenizerWrapper>> {
    let split = |re: &str| -> Result<PreTokenizerWrapper> {
        let s = Split::new(SplitPattern::Regex(re.into()), SplitDelimiterBehavior::Isolated, false)
            .map_err(|e| Error::Tokenizer(format!("pre-tokenizer regex: {e}")))?;
        Ok(s.into())
    };
    // Byte-level mapping without its own regex, after the splits above.
    let bytes = ByteLevel::new(false, false, false).into();
    Ok(match pre {
        // GPT-2 regex, with every digit split on its own first.
        "smollm" | "starcoder" | "refact" | "codeshell" => vec![Digits::new(true).into(), ByteLevel::new(false, false, true).into()],
        "gpt2" | "default" => vec![ByteLevel::new(false, false, true).into()],
        "llama3" | "llama-bpe" | "smaug-bpe" => vec![
            split(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")?,
            bytes,
        ],
        other => return Err(Error::Tokenizer(format!("pre-tokenizer `{other}` (tokenizer.ggml.pre) is not supported"))),
    })
}

impl Tokenizer {
    pub fn from_gguf(g: &Gguf) -> Result<Self> {
        let model = g.str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(Error::Tokenizer(format!(
                "tokenizer model `{model}` (tokenizer.ggml.model) is not supported; only byte-level BPE (`gpt2`) is"
            )));
        }
        let tokens = g.str_array("tokenizer.ggml.tokens")?;
        let merges = g.str_array("tokenizer.ggml.merges")?;
        let types = match g.int_array("tokenizer.ggml.token_type") {
            Ok(t) if t.len() == tokens.len() => t,
            Ok(t) => {
                return Err(Error::Tokenizer(format!("tokenizer.ggml.token_type has {} entries for {} tokens", t.len(), tokens.len())))
            }
            Err(Error::MissingKey(_)) => vec![1; tokens.len()],
            Err(e) => return Err(e),
        };
        let pre = g.str("tokenizer.ggml.pre").unwrap_or("default");

        let vocab: tokenizers::models::bpe::Vocab = tokens.iter().enumerate().map(|(i, t)| (t.to_string(), i as u32)).collect();
        let merges: Vec<(String, String)> = merges
            .iter()
            .enumerate()
            .map(|(i, m)| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| Error::Tokenizer(format!("merge #{i} `{m}` has no space between its two parts")))
            })
            .collect::<Result<_>>()?;
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| Error::Tokenizer(format!("building BPE from the GGUF vocabulary: {e}")))?;

        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(Sequence::new(pre_tokenizer(pre)?)));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        let is_control: Vec<bool> = types.iter().map(|&t| t == TOKEN_TYPE_CONTROL || t == TOKEN_TYPE_USER_DEFINED).collect();
        let specials: Vec<AddedToken> =
            tokens.iter().zip(&is_control).filter(|(_, &c)| c).map(|(t, _)| AddedToken::from(t.to_string(), true)).collect();
        inner.add_special_tokens(&specials);

        let ch2byte: HashMap<char, u8> = byte_to_char().iter().enumerate().map(|(b, &c)| (c, b as u8)).collect();
        let token_bytes = tokens
            .iter()
            .zip(&is_control)
            .map(|(t, &control)| {
                if control {
                    t.as_bytes().to_vec()
                } else {
                    // A character outside the byte alphabet stands for its own UTF-8.
                    let mut out = Vec::with_capacity(t.len());
                    for c in t.chars() {
                        match ch2byte.get(&c) {
                            Some(&b) => out.push(b),
                            None => out.extend(c.to_string().as_bytes()),
                        }
                    }
                    out
                }
            })
            .collect();

        let n = tokens.len() as u64;
        let id = |key: &str| -> Result<Option<u32>> {
            match g.get(key) {
                None => Ok(None),
                Some(v) => match v.as_u64() {
                    Some(i) if i < n => Ok(Some(i as u32)),
                    _ => Err(Error::Tokenizer(format!("`{key}` = {} is not a token id below {n}", v.summary()))),
                },
            }
        };
        let eos = id("tokenizer.ggml.eos_token_id")?;
        let eot = match id("tokenizer.ggml.eot_token_id")? {
            Some(t) => Some(t),
            None => tokens.iter().position(|t| *t == "<|im_end|>" || *t == "<|eot_id|>").map(|i| i as u32),
        };
        Ok(Tokenizer {
            inner,
            token_bytes,
            is_control,
            bos: id("tokenizer.ggml.bos_token_id")?,
            eos,
            eot: eot.filter(|t| Some(*t) != eos),
            add_bos: g.get("tokenizer.ggml.add_bos_token").and_then(|v| v.as_bool()).unwrap_or(false),
            chat_template: g.str("tokenizer.chat_template").ok().map(str::to_string),
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.token_bytes.len()
    }

    /// Text → ids. Control tokens written in the text (`<|im_start|>`) become their single id;
    /// BOS is prepended when the model asks for it.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode_fast(text, false).map_err(|e| Error::Tokenizer(format!("encoding: {e}")))?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if self.add_bos {
            ids.extend(self.bos);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.token_bytes.get(id as usize).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The token's text for display (lossy for tokens that are part of a character).
    pub fn token_text(&self, id: u32) -> String {
        String::from_utf8_lossy(self.token_bytes(id)).into_owned()
    }

    pub fn is_control(&self, id: u32) -> bool {
        self.is_control.get(id as usize).copied().unwrap_or(false)
    }

    pub fn is_stop(&self, id: u32) -> bool {
        Some(id) == self.eos || Some(id) == self.eot
    }

    pub fn decode(&self, ids: &[u32]) -> String {
        let mut s = Utf8Stream::default();
        let mut out: String = ids.iter().map(|&i| s.push(self.token_bytes(i))).collect();
        out.push_str(&s.finish());
        out
    }

    /// Renders the model's Jinja chat template over `messages`.
    pub fn apply_chat_template(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let src = self.chat_template.as_deref().ok_or_else(|| Error::Template("the model has no `tokenizer.chat_template`".into()))?;
        let mut env = minijinja::Environment::new();
        env.add_function("raise_exception", |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
        });
        env.add_template("chat", src).map_err(|e| Error::Template(e.to_string()))?;
        let tok = |id: Option<u32>| id.map(|i| self.token_text(i)).unwrap_or_default();
        env.get_template("chat")
            .and_then(|t| {
                t.render(minijinja::context! {
                    messages => messages,
                    add_generation_prompt => add_generation_prompt,
                    bos_token => tok(self.bos),
                    eos_token => tok(self.eos),
                })
            })
            .map_err(|e| Error::Template(e.to_string()))
    }
}

/// Turns a stream of byte pieces into text, holding back an incomplete UTF-8 character until
/// its last byte arrives. Bytes that can never become valid UTF-8 come out as U+FFFD.
#[derive(Default, Debug)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let good = e.valid_up_to();
                    out.push_str(std::str::from_utf8(&self.pending[..good]).expect("valid prefix"));
                    match e.error_len() {
                        // Incomplete character at the end: wait for more bytes.
                        None => {
                            self.pending.drain(..good);
                            return out;
                        }
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..good + bad);
                        }
                    }
                }
            }
        }
    }

    /// Flushes what is left (an incomplete character becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_stream_holds_split_characters() {
        let mut s = Utf8Stream::default();
        let euro = "€".as_bytes(); // 3 bytes
        assert_eq!(s.push(&[b'a', euro[0]]), "a");
        assert_eq!(s.push(&euro[1..2]), "");
        assert_eq!(s.push(&[euro[2], b'b']), "€b");
        assert_eq!(s.push(&[0xff, b'c']), "\u{fffd}c");
        assert_eq!(s.push(&euro[..1]), "");
        assert_eq!(s.finish(), "\u{fffd}");
    }

    #[test]
    fn byte_alphabet_is_a_bijection() {
        let t = byte_to_char();
        let set: std::collections::HashSet<char> = t.iter().copied().collect();
        assert_eq!(set.len(), 256);
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[b'\n' as usize], 'Ċ');
    }
}
