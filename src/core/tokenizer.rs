//! The tokenizer built from a GGUF vocabulary (`tokenizers` crate) the way llama.cpp builds it:
//! byte-level BPE (`tokenizer.ggml.model = gpt2`) with llama.cpp's pre-tokeniser regexes, or
//! SentencePiece (`llama`) with scores, `▁` for spaces and `<0xXX>` byte fallback. Also the model's
//! chat template (minijinja) and a streaming detokeniser that never emits a broken UTF-8 character.

use std::collections::HashMap;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior};

pub use crate::core::chat::ChatMessage;
use crate::core::chat::{render, Frame};
use crate::core::gguf::{Gguf, Value};
use crate::error::{Error, Result};

/// `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
const TOKEN_TYPE_NORMAL: i64 = 1;
const TOKEN_TYPE_UNKNOWN: i64 = 2;
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;
const TOKEN_TYPE_UNUSED: i64 = 5;
const TOKEN_TYPE_BYTE: i64 = 6;

/// SentencePiece's visible space, U+2581.
const SPM_SPACE: char = '▁';

/// Texts llama.cpp takes as end-of-turn (`special_eot_id`), in the order they are looked for.
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];

/// Texts llama.cpp adds to its end-of-generation set (`special_eog_ids`) whatever the model:
/// end of turn, of text, of message, and the fill-in-the-middle pad, repository and file
/// separator tokens.
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
    "<|fim_pad|>",
    "<fim-pad>",
    "<fim_pad>",
    "<PAD>",
    "[PAD]",
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
    "<|file_sep|>",
];

fn is_eog_text(t: &str) -> bool {
    matches!(t.as_bytes().first(), Some(b'<' | b'_' | b'[')) && EOG_TEXTS.contains(&t)
}

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// The bytes each token stands for, as llama.cpp's `token_to_piece(special = true)` gives
    /// them: byte-level BPE undone, `▁` as a space, `<0xXX>` as that byte, control and
    /// user-defined tokens as their text, unused tokens as nothing.
    token_bytes: Vec<Vec<u8>>,
    is_control: Vec<bool>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    /// The end-of-turn token (e.g. `<|im_end|>`, `<end_of_turn>`) when it is not `eos`.
    pub eot: Option<u32>,
    /// Every token that ends generation (llama.cpp's end-of-generation set: eos, eot, eom and
    /// the tokens named like them).
    eog: Vec<u32>,
    pub add_bos: bool,
    /// SentencePiece: a space is put before the text (and after each special token); the
    /// detokeniser takes it off the first token again.
    pub add_space_prefix: bool,
    /// llama.cpp's `clean_spaces`: the detokeniser drops the space before `?!.,` and some
    /// apostrophe contractions.
    clean_spaces: bool,
    chat_template: Option<String>,
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

/// llama.cpp's settings for one family of `tokenizer.ggml.pre` values of a byte-level BPE
/// vocabulary (`llama_vocab::impl::load` and `llm_tokenizer_bpe`, src/llama-vocab.cpp).
struct PreTokenizer {
    names: &'static [&'static str],
    /// Applied in order: each splits every piece so far into its matches and the text between.
    regexes: &'static [&'static str],
    /// A whole pre-token that is in the vocabulary is taken as it is, without merges.
    ignore_merges: bool,
    clean_spaces: bool,
    /// `add_bos` when `tokenizer.ggml.add_bos_token` is absent.
    add_bos: bool,
}

const GPT2_RE: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const LLAMA3_RE: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_RE: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const TEKKEN_RE: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

#[rustfmt::skip]
const PRE_TOKENIZERS: &[PreTokenizer] = &[
    PreTokenizer { names: &["default"], regexes: &[r"[\p{P}\$\+<=>\^~\|]+", GPT2_RE, r"\p{N}+", r"[0-9][0-9][0-9]"],
                   ignore_merges: false, clean_spaces: true, add_bos: false },
    PreTokenizer { names: &["gpt-2", "phi-2", "roberta-bpe", "mpt", "olmo"], regexes: &[GPT2_RE],
                   ignore_merges: false, clean_spaces: true, add_bos: false },
    PreTokenizer { names: &["llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral"], regexes: &[LLAMA3_RE],
                   ignore_merges: true, clean_spaces: true, add_bos: true },
    PreTokenizer { names: &["smaug-bpe", "dbrx"], regexes: &[LLAMA3_RE],
                   ignore_merges: false, clean_spaces: true, add_bos: false },
    PreTokenizer { names: &["smollm", "command-r"], regexes: &[r"\p{N}", GPT2_RE],
                   ignore_merges: false, clean_spaces: false, add_bos: false },
    PreTokenizer { names: &["starcoder", "refact", "codeshell"], regexes: &[r"\p{N}", GPT2_RE],
                   ignore_merges: false, clean_spaces: true, add_bos: false },
    PreTokenizer { names: &["qwen2", "deepseek-r1-qwen"], regexes: &[QWEN2_RE],
                   ignore_merges: false, clean_spaces: false, add_bos: false },
    PreTokenizer { names: &["stablelm2"], regexes: &[QWEN2_RE],
                   ignore_merges: false, clean_spaces: true, add_bos: false },
    PreTokenizer { names: &["tekken"], regexes: &[TEKKEN_RE],
                   ignore_merges: true, clean_spaces: false, add_bos: true },
];

/// The `tokenizer.ggml.pre` values kvscope builds, for error messages.
pub fn supported_pre_tokenizers() -> Vec<&'static str> {
    PRE_TOKENIZERS.iter().flat_map(|p| p.names.iter().copied()).collect()
}

fn pre_tokenizer(pre: &str) -> Result<&'static PreTokenizer> {
    PRE_TOKENIZERS.iter().find(|p| p.names.contains(&pre)).ok_or_else(|| {
        Error::Tokenizer(format!(
            "pre-tokenizer `{pre}` (tokenizer.ggml.pre) is not supported (supported: {})",
            supported_pre_tokenizers().join(", ")
        ))
    })
}

/// The split regexes, then the byte-to-character mapping of byte-level BPE.
fn byte_level_pre_tokenizer(p: &PreTokenizer) -> Result<Sequence> {
    let mut steps: Vec<PreTokenizerWrapper> = Vec::with_capacity(p.regexes.len() + 1);
    for re in p.regexes {
        let split = Split::new(SplitPattern::Regex(re.to_string()), SplitDelimiterBehavior::Isolated, false)
            .map_err(|e| Error::Tokenizer(format!("pre-tokenizer regex `{re}`: {e}")))?;
        steps.push(split.into());
    }
    steps.push(ByteLevel::new(false, false, false).into());
    Ok(Sequence::new(steps))
}

/// The merges that make a BPE model tokenise like llama.cpp's SentencePiece tokeniser
/// (`llm_tokenizer_spm`). That one starts from single characters and, over and over, joins the
/// adjacent pair whose joined text is a token with the highest score, the leftmost pair on ties.
///
/// A token `t` can only come out of that process on a span of text if the process run on `t`'s
/// text alone ends in `t`: until `t` is formed, no pair reaching out of its span may be joined
/// (it would make a symbol that is not `t`), so the joins inside the span are those of the run
/// on `t` alone, in the same order. The last join of that run, `l + r → t`, is therefore the only
/// way `t` is ever made; any other cut of `t` into two tokens never gets joined. One merge per
/// token that its own run produces, ranked by the token's score (highest first, then by id), so
/// that BPE's lowest-rank-first, leftmost-on-ties order is llama.cpp's order wherever distinct
/// tokens have distinct scores.
fn spm_merges(tokens: &[&str], scores: &[f32], vocab: &Vocab) -> Vec<(String, String)> {
    // The score of a text's token, as llama.cpp's `text_to_token` (the last token of that text).
    let score = |s: &str| vocab.get(s).map(|&i| scores[i as usize]);
    // (merged id, cut in bytes)
    let mut merges: Vec<(u32, u32)> = Vec::with_capacity(tokens.len());
    // Symbol k of the run is t[bounds[k]..bounds[k + 1]]; pair[k] is the score of joining
    // symbols k and k + 1, None when the joined text is no token.
    let mut bounds: Vec<usize> = Vec::new();
    let mut pair: Vec<Option<f32>> = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        if t.chars().nth(1).is_none() || vocab.get(*t) != Some(&(i as u32)) {
            continue;
        }
        bounds.clear();
        bounds.extend(t.char_indices().map(|(b, _)| b));
        bounds.push(t.len());
        pair.clear();
        pair.extend((0..bounds.len() - 2).map(|k| score(&t[bounds[k]..bounds[k + 2]])));
        loop {
            // The best pair: highest score, leftmost on ties.
            let mut best: Option<(usize, f32)> = None;
            for (k, s) in pair.iter().enumerate() {
                if let Some(s) = *s {
                    if best.is_none_or(|(_, b)| s > b) {
                        best = Some((k, s));
                    }
                }
            }
            let Some((k, _)) = best else { break };
            if pair.len() == 1 {
                // The last two symbols join into t. A single character that is no token becomes
                // bytes in the BPE model and joins nothing there.
                let cut = bounds[1];
                if vocab.contains_key(&t[..cut]) && vocab.contains_key(&t[cut..]) {
                    merges.push((i as u32, cut as u32));
                }
                break;
            }
            bounds.remove(k + 1);
            pair.remove(k);
            if k > 0 {
                pair[k - 1] = score(&t[bounds[k - 1]..bounds[k + 1]]);
            }
            if k < pair.len() {
                pair[k] = score(&t[bounds[k]..bounds[k + 2]]);
            }
        }
    }
    merges.sort_unstable_by(|a, b| scores[b.0 as usize].total_cmp(&scores[a.0 as usize]).then(a.0.cmp(&b.0)));
    merges
        .into_iter()
        .map(|(t, cut)| {
            let t = tokens[t as usize];
            (t[..cut as usize].to_string(), t[cut as usize..].to_string())
        })
        .collect()
}

/// The byte a SentencePiece byte token `<0xXX>` stands for.
fn spm_byte(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// Which vocabulary `tokenizer.ggml.model` names.
#[derive(Clone, Copy, PartialEq)]
enum Model {
    /// `gpt2`: byte-level BPE with merges.
    Bpe,
    /// `llama`: SentencePiece with scores.
    Spm,
}

/// The vocabulary as the metadata gives it, with llama.cpp's classes of each token.
struct Vocabulary<'a> {
    model: Model,
    tokens: Vec<&'a str>,
    types: Vec<i64>,
    /// End-of-generation tokens by their text (`EOG_TEXTS`).
    is_eog_text: Vec<bool>,
    /// Control tokens: never shown as text.
    is_control: Vec<bool>,
    /// Written in the text, these are taken as single tokens before the text is tokenised.
    is_special: Vec<bool>,
}

/// What each vocabulary model builds: the `tokenizers` tokenizer, the bytes of each token, and
/// how text is framed.
struct Built {
    inner: tokenizers::Tokenizer,
    token_bytes: Vec<Vec<u8>>,
    add_bos: bool,
    add_space_prefix: bool,
    clean_spaces: bool,
}

impl<'a> Vocabulary<'a> {
    fn read(g: &'a Gguf) -> Result<Self> {
        let model = match g.str("tokenizer.ggml.model")? {
            "gpt2" => Model::Bpe,
            "llama" => Model::Spm,
            other => {
                return Err(Error::Tokenizer(format!(
                    "tokenizer model `{other}` (tokenizer.ggml.model) is not supported \
                     (supported: `gpt2`, byte-level BPE, and `llama`, SentencePiece)"
                )))
            }
        };
        let tokens = g.str_array("tokenizer.ggml.tokens")?;
        let n = tokens.len();
        if n == 0 {
            return Err(Error::Tokenizer("tokenizer.ggml.tokens is empty".into()));
        }
        let types = match g.int_array("tokenizer.ggml.token_type") {
            Ok(t) if t.len() == n => t,
            Ok(t) => return Err(Error::Tokenizer(format!("tokenizer.ggml.token_type has {} entries for {n} tokens", t.len()))),
            Err(Error::MissingKey(_)) => vec![TOKEN_TYPE_NORMAL; n],
            Err(e) => return Err(e),
        };
        // llama.cpp makes control tokens of the end-of-generation tokens whatever their type.
        let is_eog_text: Vec<bool> = tokens.iter().map(|t| is_eog_text(t)).collect();
        let is_control: Vec<bool> =
            types.iter().zip(&is_eog_text).map(|(&ty, &eog)| eog || matches!(ty, TOKEN_TYPE_CONTROL | TOKEN_TYPE_UNKNOWN)).collect();
        let is_special: Vec<bool> = types.iter().zip(&is_control).map(|(&ty, &c)| c || ty == TOKEN_TYPE_USER_DEFINED).collect();
        Ok(Vocabulary { model, tokens, types, is_eog_text, is_control, is_special })
    }

    /// (text, type, special) of each token, in id order.
    fn each(&self) -> impl Iterator<Item = (&'a str, i64, bool)> + '_ {
        self.tokens.iter().zip(&self.types).zip(&self.is_special).map(|((&t, &ty), &special)| (t, ty, special))
    }

    /// The id a metadata key names, checked against the vocabulary.
    fn id(&self, g: &Gguf, key: &str) -> Result<Option<u32>> {
        let n = self.tokens.len();
        match g.get(key) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(i) if i < n as u64 => Ok(Some(i as u32)),
                _ => Err(Error::Tokenizer(format!("`{key}` = {} is not a token id below {n}", v.summary()))),
            },
        }
    }

    /// The id of special token `what` (`bos`, `eos`, `unknown`), with llama.cpp's defaults for
    /// SentencePiece vocabularies: bos 1, eos 2, unknown 0.
    fn special(&self, g: &Gguf, what: &str, spm_default: u32) -> Result<Option<u32>> {
        let default = (self.model == Model::Spm && (spm_default as usize) < self.tokens.len()).then_some(spm_default);
        Ok(self.id(g, &format!("tokenizer.ggml.{what}_token_id"))?.or(default))
    }

    fn map(&self) -> Vocab {
        let mut vocab = Vocab::with_capacity(self.tokens.len());
        vocab.extend(self.tokens.iter().enumerate().map(|(i, t)| (t.to_string(), i as u32)));
        vocab
    }

    /// Byte-level BPE (`gpt2`): merges from the metadata, llama.cpp's pre-tokenizer by name.
    fn bpe(&self, g: &Gguf) -> Result<Built> {
        let flag = |key: &str| g.get(key).and_then(Value::as_bool);
        let pre = pre_tokenizer(g.str("tokenizer.ggml.pre").unwrap_or("default"))?;
        let merges = g
            .str_array("tokenizer.ggml.merges")?
            .iter()
            .enumerate()
            .map(|(i, m)| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| Error::Tokenizer(format!("merge #{i} `{m}` has no space between its two parts")))
            })
            .collect::<Result<Vec<_>>>()?;
        let bpe = BPE::builder()
            .vocab_and_merges(self.map(), merges)
            .ignore_merges(pre.ignore_merges)
            .build()
            .map_err(|e| Error::Tokenizer(format!("building BPE from the GGUF vocabulary: {e}")))?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(byte_level_pre_tokenizer(pre)?));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        let ch2byte: HashMap<char, u8> = byte_to_char().iter().enumerate().map(|(b, &c)| (c, b as u8)).collect();
        let token_bytes = self
            .each()
            .map(|(t, ty, special)| match ty {
                _ if special => t.as_bytes().to_vec(),
                TOKEN_TYPE_UNUSED => Vec::new(),
                // A character outside the byte alphabet stands for its own UTF-8.
                _ => t.chars().flat_map(|c| ch2byte.get(&c).map_or_else(|| c.to_string().into_bytes(), |&b| vec![b])).collect(),
            })
            .collect();
        let add_bos = flag("tokenizer.ggml.add_bos_token").unwrap_or(pre.add_bos);
        let add_space_prefix = flag("tokenizer.ggml.add_space_prefix").unwrap_or(false);
        Ok(Built { inner, token_bytes, add_bos, add_space_prefix, clean_spaces: pre.clean_spaces })
    }

    /// SentencePiece (`llama`): merges derived from the scores, byte fallback, `▁` for spaces.
    fn spm(&self, g: &Gguf, unk: Option<u32>) -> Result<Built> {
        let flag = |key: &str| g.get(key).and_then(Value::as_bool);
        let n = self.tokens.len();
        let scores = g.f32_array("tokenizer.ggml.scores").map_err(|e| match e {
            Error::MissingKey(k) => {
                Error::Tokenizer(format!("`{k}` is missing: a SentencePiece vocabulary needs its token scores to order its merges"))
            }
            e => e,
        })?;
        if scores.len() != n {
            return Err(Error::Tokenizer(format!("tokenizer.ggml.scores has {} entries for {n} tokens", scores.len())));
        }
        let add_space_prefix = flag("tokenizer.ggml.add_space_prefix").unwrap_or(true);
        let token_bytes = self
            .each()
            .map(|(t, ty, special)| match ty {
                _ if special => Ok(t.as_bytes().to_vec()),
                TOKEN_TYPE_NORMAL => Ok(t.replace(SPM_SPACE, " ").into_bytes()),
                TOKEN_TYPE_BYTE => {
                    spm_byte(t).map(|b| vec![b]).ok_or_else(|| Error::Tokenizer(format!("byte token `{t}` is not of the form <0xXX>")))
                }
                _ => Ok(Vec::new()),
            })
            .collect::<Result<Vec<_>>>()?;
        let vocab = self.map();
        let merges = spm_merges(&self.tokens, &scores, &vocab);
        let mut builder = BPE::builder().vocab_and_merges(vocab, merges).byte_fallback(true);
        if let Some(u) = unk {
            builder = builder.unk_token(self.tokens[u as usize].to_string());
        }
        let bpe = builder.build().map_err(|e| Error::Tokenizer(format!("building the SentencePiece model: {e}")))?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        let space = Replace::new(" ", SPM_SPACE.to_string()).map_err(|e| Error::Tokenizer(format!("space normalizer: {e}")))?;
        let mut norm: Vec<NormalizerWrapper> = Vec::new();
        if add_space_prefix {
            // Each piece of text between special tokens, as llama.cpp puts its space before the
            // text and after every special token.
            norm.push(Prepend::new(SPM_SPACE.to_string()).into());
        }
        norm.push(space.into());
        inner.with_normalizer(Some(NormalizerSequence::new(norm)));
        let add_bos = flag("tokenizer.ggml.add_bos_token").unwrap_or(true);
        Ok(Built { inner, token_bytes, add_bos, add_space_prefix, clean_spaces: false })
    }

    /// llama.cpp's end-of-generation set: eos, eot, eom, the fill-in-the-middle ends, and every
    /// token named like one of them.
    fn end_of_generation(&self, g: &Gguf, eos: Option<u32>, eot: Option<u32>) -> Result<Vec<u32>> {
        let mut eog: Vec<u32> = [eos, eot].into_iter().flatten().collect();
        for k in ["eom", "fim_pad", "fim_rep", "fim_sep"] {
            eog.extend(self.id(g, &format!("tokenizer.ggml.{k}_token_id"))?);
        }
        eog.extend(self.is_eog_text.iter().enumerate().filter(|(_, &e)| e).map(|(i, _)| i as u32));
        eog.sort_unstable();
        eog.dedup();
        Ok(eog)
    }
}

impl Tokenizer {
    pub fn from_gguf(g: &Gguf) -> Result<Self> {
        let v = Vocabulary::read(g)?;
        let (bos, eos, unk) = (v.special(g, "bos", 1)?, v.special(g, "eos", 2)?, v.special(g, "unknown", 0)?);
        let mut built = match v.model {
            Model::Bpe => v.bpe(g)?,
            Model::Spm => v.spm(g, unk)?,
        };
        let specials: Vec<AddedToken> =
            v.tokens.iter().zip(&v.is_special).filter(|(_, &s)| s).map(|(t, _)| AddedToken::from(t.to_string(), true)).collect();
        built.inner.add_special_tokens(&specials);
        let eot = match v.id(g, "tokenizer.ggml.eot_token_id")? {
            Some(t) => Some(t),
            None => EOT_TEXTS.iter().find_map(|e| built.inner.token_to_id(e)),
        };
        Ok(Tokenizer {
            eog: v.end_of_generation(g, eos, eot)?,
            inner: built.inner,
            token_bytes: built.token_bytes,
            is_control: v.is_control,
            bos,
            eos,
            eot: eot.filter(|t| Some(*t) != eos),
            add_bos: built.add_bos,
            add_space_prefix: built.add_space_prefix,
            clean_spaces: built.clean_spaces,
            chat_template: g.str("tokenizer.chat_template").ok().map(str::to_string),
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.token_bytes.len()
    }

    /// Text → ids, as llama.cpp's `llama_tokenize(add_special = true, parse_special = true)`:
    /// control and user-defined tokens written in the text (`<|im_start|>`) become their single
    /// id; BOS is prepended when the model asks for it.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode_fast(text, false).map_err(|e| Error::Tokenizer(format!("encoding: {e}")))?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if self.add_bos {
            ids.extend(self.bos);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// Text → ids without BOS: the tokens of a piece of text as it would stand inside a longer
    /// one (for the grammar's literal strings).
    pub fn encode_text(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode_fast(text, false).map_err(|e| Error::Tokenizer(format!("encoding: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The bytes of one token (llama.cpp's `token_to_piece(special = true)`); a piece of a
    /// character for byte tokens and some byte-level BPE tokens.
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.token_bytes.get(id as usize).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The token's text for display (lossy for tokens that are part of a character).
    pub fn token_text(&self, id: u32) -> String {
        String::from_utf8_lossy(self.token_bytes(id)).into_owned()
    }

    /// A control token (or the unknown token): llama.cpp leaves these out of text unless asked.
    pub fn is_control(&self, id: u32) -> bool {
        self.is_control.get(id as usize).copied().unwrap_or(false)
    }

    /// Whether generation stops at this token (end of sequence, of turn, or the like).
    pub fn is_stop(&self, id: u32) -> bool {
        self.eog.binary_search(&id).is_ok()
    }

    /// The tokens that end generation, ascending.
    pub fn stop_tokens(&self) -> &[u32] {
        &self.eog
    }

    pub fn has_chat_template(&self) -> bool {
        self.chat_template.is_some()
    }

    /// Ids → text, as llama.cpp's `llama_detokenize(remove_special = false, unparse_special =
    /// true)`: the pieces one after another, the first one's leading space dropped when the
    /// vocabulary adds a space prefix, then llama.cpp's `clean_spaces` passes where the
    /// vocabulary has them.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for (i, &id) in ids.iter().enumerate() {
            let piece = self.token_bytes(id);
            bytes.extend_from_slice(match piece {
                [b' ', rest @ ..] if i == 0 && self.add_space_prefix => rest,
                _ => piece,
            });
        }
        if self.clean_spaces {
            clean_spaces(&mut bytes);
        }
        let mut s = Utf8Stream::default();
        let mut out = s.push(&bytes);
        out.push_str(&s.finish());
        out
    }

    /// Renders the model's chat template over `messages`.
    pub fn apply_chat_template(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        self.render_chat(messages, &[], add_generation_prompt)
    }

    /// Renders the model's chat template over `messages` with `tools` (`core::chat::render`).
    pub fn render_chat(&self, messages: &[ChatMessage], tools: &[serde_json::Value], add_generation_prompt: bool) -> Result<String> {
        let src = self.chat_template().ok_or_else(|| Error::Template("the model has no `tokenizer.chat_template`".into()))?;
        let tok = |id: Option<u32>| id.map(|i| self.token_text(i)).unwrap_or_default();
        let frame = Frame { tools, add_generation_prompt, bos_token: tok(self.bos), eos_token: tok(self.eos) };
        render(src, messages, &frame)
    }

    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }
}

/// llama.cpp's `clean_spaces` for display (`llama_vocab::impl::detokenize`), its three in-place
/// passes as they are: drop the space before `?`, `!`, `.`, `,`; turn ` ' ` into `'`; drop the
/// space before `'s`, `'m`, `'re`, `'ve`.
fn clean_spaces(text: &mut Vec<u8>) {
    let n = text.len();
    let mut total = n.min(1);
    for i in 1..n {
        let x = text[i];
        if text[i - 1] == b' ' && matches!(x, b'?' | b'!' | b'.' | b',') {
            total -= 1;
        }
        text[total] = x;
        total += 1;
    }
    text.truncate(total);

    let n = text.len();
    let mut total = n.min(1);
    let mut i = 1;
    while i < n {
        let x = text[i];
        if x == b'\'' && i + 1 < n && text[i - 1] == b' ' && text[i + 1] == b' ' {
            total -= 1;
            i += 1;
            text[i] = 0;
        }
        text[total] = x;
        total += 1;
        i += 1;
    }
    text.truncate(total);

    let n = text.len();
    let mut total = n.min(1);
    for i in 1..n {
        let x = text[i];
        if text[i - 1] == b' ' && x == b'\'' && i + 1 < n {
            let x1 = text[i + 1];
            let x2 = if i + 2 < n { text[i + 2] } else { 0 };
            if matches!(x1, b's' | b'm') || matches!((x1, x2), (b'r', b'e') | (b'v', b'e')) {
                total -= 1;
            }
        }
        text[total] = x;
        total += 1;
    }
    text.truncate(total);
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
