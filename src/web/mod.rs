//! Browser glue (wasm32 only): the engine exported to JavaScript.
//!
//! ```js
//! import init, { adapterInfo, WebEngine } from './kvscope.js';
//! await init();
//! const engine = await WebEngine.load(new Uint8Array(await (await fetch('models/…gguf')).arrayBuffer()));
//! const summary = await engine.generate('The capital of France is', 32, (ev) => console.log(ev.text));
//! ```

use std::cell::RefCell;
use std::rc::Rc;

use wasm_bindgen::prelude::*;

use crate::engine::{Engine, GenerateOptions, LoadOptions};
use crate::gpu::GpuContext;

fn js_err(e: crate::Error) -> JsValue {
    js_sys::Error::new(&e.to_string()).into()
}

#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
}

/// The WebGPU adapter the engine would run on, or an error that says what is missing.
#[wasm_bindgen(js_name = adapterInfo)]
pub async fn adapter_info() -> Result<String, JsValue> {
    GpuContext::new().await.map(|c| c.adapter_name()).map_err(js_err)
}

#[wasm_bindgen]
pub struct WebEngine {
    inner: Rc<RefCell<Option<Engine>>>,
}

#[wasm_bindgen]
impl WebEngine {
    /// Parses the GGUF bytes and uploads the model to the GPU.
    pub async fn load(bytes: Vec<u8>) -> Result<WebEngine, JsValue> {
        let engine = Engine::load(&bytes, LoadOptions::default()).await.map_err(js_err)?;
        Ok(WebEngine { inner: Rc::new(RefCell::new(Some(engine))) })
    }

    /// Greedy generation from a fresh cache; `on_token` gets `{id, text, pos, ms, top}` per token.
    /// Resolves to the summary.
    pub fn generate(&self, prompt: String, max_tokens: usize, on_token: js_sys::Function) -> js_sys::Promise {
        let inner = self.inner.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            // The engine is taken out while it runs so that a second call fails cleanly.
            let mut engine = inner.borrow_mut().take().ok_or_else(|| JsValue::from_str("the engine is busy"))?;
            engine.reset();
            let result = async {
                let ids = engine.tokenizer.encode(&prompt)?;
                let opts = GenerateOptions { max_tokens, ..Default::default() };
                engine
                    .generate(&ids, &opts, &mut |ev| {
                        let v = serde_wasm_bindgen::to_value(ev).unwrap_or(JsValue::NULL);
                        on_token.call1(&JsValue::NULL, &v).map(|r| r.as_bool() != Some(false)).unwrap_or(false)
                    })
                    .await
            }
            .await;
            *inner.borrow_mut() = Some(engine);
            let summary = result.map_err(js_err)?;
            serde_wasm_bindgen::to_value(&summary).map_err(|e| e.into())
        })
    }
}
