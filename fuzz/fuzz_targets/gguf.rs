//! Any bytes through the GGUF reader, then the model config built from what it read, and the
//! header read piecewise: every outcome must be Ok or a named error — no panic, no unbounded
//! allocation or loop.
#![no_main]

use kvscope::core::config::Config;
use kvscope::core::gguf::{read_header, Gguf};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(g) = Gguf::parse(data) {
        let _ = Config::from_gguf(&g);
        for t in &g.tensors {
            let _ = g.tensor_data(t);
        }
    }
    let mut src: &[u8] = data;
    if let Ok(h) = read_header(&mut src) {
        let _ = Gguf::parse_prefix(&h, data.len() as u64);
    }
});
