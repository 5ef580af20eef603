//! What every backend shares: the file (`gguf`, `quant`), the model it describes (`config`), its
//! vocabulary (`tokenizer`) and chat template (`chat`, `tools`), how the next token is chosen
//! (`logits`, `grammar`, `sampler`), where its text stops (`stop_strings`), and the teaching
//! flaws (`flaw`).

pub mod chat;
pub mod config;
pub mod flaw;
pub mod gguf;
pub mod grammar;
pub mod kv_policy;
pub mod logits;
pub mod quant;
pub mod sampler;
pub mod split;
pub mod stop_strings;
pub mod tokenizer;
pub mod tools;
