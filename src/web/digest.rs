//! SHA-256 over a stream of slices, for the page's model store: a download is hashed as it is
//! written, never held whole, and checked against the model's published hash. (WebCrypto's
//! `digest` takes one buffer, which fails past 2 GiB and doubles the memory of any model.)

use sha2::{Digest, Sha256};
use wasm_bindgen::prelude::*;

/// `new Sha256()`, then `update(slice)` for each slice in order, then `hex()`.
#[wasm_bindgen(js_name = Sha256)]
pub struct Sha256Stream {
    inner: Sha256,
}

#[wasm_bindgen(js_class = Sha256)]
impl Sha256Stream {
    #[wasm_bindgen(constructor)]
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Sha256Stream { inner: Sha256::new() }
    }

    /// Hashes the next `slice` (copied into wasm memory, one slice at a time).
    pub fn update(&mut self, slice: &[u8]) {
        self.inner.update(slice);
    }

    /// The digest of everything hashed so far, as 64 lowercase hex digits (the hasher goes on).
    pub fn hex(&self) -> String {
        self.inner.clone().finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}
