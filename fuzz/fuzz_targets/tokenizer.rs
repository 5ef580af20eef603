//! The tokenizer and chat template built from the metadata of any GGUF the reader accepts, then
//! used: errors are fine, panics are not.
#![no_main]

use kvscope::core::gguf::Gguf;
use kvscope::core::tokenizer::{ChatMessage, Tokenizer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(g) = Gguf::parse(data) {
        if let Ok(t) = Tokenizer::from_gguf(&g) {
            let ids = t.encode("Hello world <|im_start|> 123 héllo").unwrap_or_default();
            let _ = t.decode(&ids);
            let _ = t.apply_chat_template(&[ChatMessage { role: "user".into(), content: "hi".into() }], true);
        }
    }
});
