//! Milliseconds from a monotonic clock: `Instant` natively, `performance.now()` in the browser
//! (where `Instant::now` panics).

#[cfg(not(target_arch = "wasm32"))]
pub fn now_ms() -> f64 {
    use std::sync::OnceLock;
    use std::time::Instant;
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64() * 1e3
}

#[cfg(target_arch = "wasm32")]
pub fn now_ms() -> f64 {
    // `performance` of whichever global this runs in: the page's Window or a worker's scope.
    use wasm_bindgen::JsCast;
    js_sys::Reflect::get(&js_sys::global(), &"performance".into())
        .ok()
        .and_then(|p| p.dyn_into::<web_sys::Performance>().ok())
        .map(|p| p.now())
        .unwrap_or_else(js_sys::Date::now)
}

/// Lets the event loop run (natively: nothing). The CPU backend computes without awaiting
/// anything, so in a worker it yields between chunks, letting a Stop message in.
#[cfg(not(target_arch = "wasm32"))]
pub async fn yield_now() {}

#[cfg(target_arch = "wasm32")]
pub async fn yield_now() {
    // A message to a channel of our own is a task with no timer clamping (setTimeout(0) waits
    // 4 ms once nested).
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        let Ok(ch) = web_sys::MessageChannel::new() else {
            let _ = resolve.call0(&wasm_bindgen::JsValue::NULL);
            return;
        };
        ch.port1().set_onmessage(Some(&resolve));
        let _ = ch.port2().post_message(&wasm_bindgen::JsValue::NULL);
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}
