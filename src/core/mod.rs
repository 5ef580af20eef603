//! What every backend shares: the file (`gguf`, `quant`), the model it describes (`config`), its
//! vocabulary (`tokenizer`), how the next token is chosen (`sampler`), and the teaching flaws
//! (`flaw`).

pub mod config;
pub mod flaw;
pub mod gguf;
pub mod kv_policy;
pub mod quant;
pub mod sampler;
pub mod tokenizer;
