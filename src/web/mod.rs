//! Browser glue (wasm32 only): the engine exported to JavaScript.
//!
//! The model bytes stay in a JavaScript `Uint8Array` (outside the wasm heap); the header and then
//! each tensor are copied in piecewise and uploaded, so the heap never holds a second full copy.
//! The API is documented in the README ("Embedding the engine").

use std::cell::RefCell;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use crate::backend::gpu::{check_allocation, check_device, GpuContext, GpuOptions};
use crate::backend::BackendKind;
use crate::core::chat::{ChatMessage, ChatRequest};
use crate::core::config::KvType;
use crate::core::gguf::{read_header, ByteSource, Gguf, Reporting};
use crate::core::kv_policy::{Eviction, KvPolicy};
use crate::core::tokenizer::Tokenizer;
use crate::engine::kv_lab::{kv_compare_from, KvComparison};
use crate::engine::{ChatTurn, Engine, GenerateOptions, LoadOptions, ModelFacts, TokenEvent};

mod digest;

/// Every error reaches JavaScript as an `Error` whose `name` is its kind (`DeviceLost`,
/// `NoAdapter`, `Unsupported`, … — `crate::ErrorKind`) and whose `message` names what is wrong;
/// the page acts on the name, never on the message's words.
fn js_err(e: crate::Error) -> JsValue {
    let err = js_sys::Error::new(&e.to_string());
    err.set_name(e.kind().name());
    if let Some(p) = e.param_name() {
        // The request field at fault, for an HTTP error's `param` (`engine.fetch`).
        let _ = js_sys::Reflect::set(&err, &"param".into(), &p.into());
    }
    err.into()
}

/// A malformed argument from JavaScript (options, messages).
fn bad_arg(what: &str, e: impl std::fmt::Display) -> JsValue {
    js_err(crate::Error::Option(format!("{what}: {e}")))
}

fn to_js<T: Serialize>(v: &T) -> Result<JsValue, JsValue> {
    v.serialize(&serde_wasm_bindgen::Serializer::json_compatible()).map_err(|e| bad_arg("result", e))
}

/// Options from JavaScript: `undefined` and `null` mean every default.
fn from_js<T: serde::de::DeserializeOwned + Default>(what: &str, v: JsValue) -> Result<T, JsValue> {
    if v.is_undefined() || v.is_null() {
        return Ok(T::default());
    }
    serde_wasm_bindgen::from_value(v).map_err(|e| bad_arg(what, e))
}

#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
}

/// A model file as JavaScript gives it, read range by range (a clone reads the same file): a
/// `Uint8Array`, or a `Blob` (a picked `File`, a stored model) read slice by slice with the
/// worker's `FileReaderSync`, so that no copy of the whole file is made.
#[derive(Clone)]
enum JsBytes {
    Array(js_sys::Uint8Array),
    Blob(BlobReader),
    /// The first bytes of a file of `len` bytes (read with an HTTP Range request before a
    /// download): enough for its header; a read past them is `Truncated`.
    Head(js_sys::Uint8Array, u64),
}

/// A `Blob` read through windows of `window` bytes at multiples of `window`: each
/// `FileReaderSync` read is a round trip to the browser's blob store, so the small tensors come
/// from one read of the window they share instead of one read each, and a large tensor is read a
/// window at a time. A load reads its small tensors (norms) across the file before the large
/// ones, so the last `keep` windows are kept (the least recently read is dropped). Every read
/// makes a new buffer, which the garbage collector takes back late: a large file is read in
/// small windows (2 MiB), which keeps that garbage small, a small one in large windows (16 MiB),
/// which is faster.
#[derive(Clone)]
struct BlobReader {
    blob: web_sys::Blob,
    reader: web_sys::FileReaderSync,
    window: u64,
    keep: usize,
    /// Each window's index (its offset / window) and bytes (outside the wasm heap), the latest last.
    windows: Vec<(u64, js_sys::Uint8Array)>,
}

impl BlobReader {
    fn new(blob: web_sys::Blob) -> Result<Self, JsValue> {
        let (window, keep) = if blob.size() < (1u64 << 30) as f64 { (16 << 20, 6) } else { (2 << 20, 24) };
        Ok(BlobReader { blob, reader: web_sys::FileReaderSync::new()?, window, keep, windows: Vec::new() })
    }

    /// Window `i`, read now unless it is kept.
    fn window(&mut self, i: u64) -> crate::Result<js_sys::Uint8Array> {
        if let Some((_, w)) = self.windows.iter().find(|(j, _)| *j == i) {
            return Ok(w.clone());
        }
        let range = i * self.window..((i + 1) * self.window).min(self.blob.size() as u64);
        let failed = |e: JsValue| crate::Error::Io(format!("reading bytes {range:?} of the model file: {e:?}"));
        let slice = self.blob.slice_with_f64_and_f64(range.start as f64, range.end as f64).map_err(failed)?;
        let buf = self.reader.read_as_array_buffer(&slice).map_err(failed)?;
        let w = js_sys::Uint8Array::new(&buf);
        if self.windows.len() == self.keep {
            self.windows.remove(0);
        }
        self.windows.push((i, w.clone()));
        Ok(w)
    }

    fn read(&mut self, range: std::ops::Range<u64>, out: &mut [u8]) -> crate::Result<()> {
        let size = self.window;
        for i in range.start / size..range.end.div_ceil(size) {
            let (lo, hi) = (range.start.max(i * size), range.end.min((i + 1) * size));
            let w = self.window(i)?;
            w.subarray((lo - i * size) as u32, (hi - i * size) as u32)
                .copy_to(&mut out[(lo - range.start) as usize..(hi - range.start) as usize]);
        }
        Ok(())
    }
}

impl JsBytes {
    fn from_js(v: JsValue) -> Result<Self, JsValue> {
        if let Some(a) = v.dyn_ref::<js_sys::Uint8Array>() {
            return Ok(JsBytes::Array(a.clone()));
        }
        match v.dyn_into::<web_sys::Blob>() {
            // FileReaderSync exists in workers only, where the engine runs.
            Ok(blob) => Ok(JsBytes::Blob(BlobReader::new(blob)?)),
            Err(_) => Err(bad_arg("model", "expected the model file as a Uint8Array or a Blob")),
        }
    }
}

impl ByteSource for JsBytes {
    fn len(&self) -> u64 {
        match self {
            JsBytes::Array(a) => a.length() as u64,
            JsBytes::Blob(b) => b.blob.size() as u64,
            JsBytes::Head(_, len) => *len,
        }
    }

    fn read(&mut self, range: std::ops::Range<u64>, out: &mut Vec<u8>) -> crate::Result<()> {
        if range.end > self.len() {
            return Err(crate::Error::Io(format!("read of {range:?} past the end of the {}-byte file", self.len())));
        }
        out.resize((range.end - range.start) as usize, 0);
        match self {
            JsBytes::Array(a) | JsBytes::Head(a, _) if range.end <= a.length() as u64 => {
                a.subarray(range.start as u32, range.end as u32).copy_to(out)
            }
            JsBytes::Head(a, _) => {
                let (offset, need, len) = (range.start, range.end - range.start, a.length() as u64);
                return Err(crate::Error::Truncated { what: "the part read before the download".into(), offset, need, len });
            }
            JsBytes::Array(_) => unreachable!("checked against len()"),
            JsBytes::Blob(b) => b.read(range, out)?,
        }
        Ok(())
    }
}

/// A model as JavaScript gives it: one file (a `Uint8Array` or a `Blob`), or `{parts, name,
/// sizes?}` — a split set's files in order, named by the first — read as one model without
/// joining them (`core::split::open_model`; a part missing or out of place is named). With
/// `sizes`, the parts are the first bytes of files of those sizes (`JsBytes::Head`: enough to
/// check the model before a download). A clone reads the same files.
struct JsModel {
    parts: Vec<JsBytes>,
    name: String,
    len: u64,
    /// The model's bytes through its parts, opened again on a clone's first read.
    open: Option<Box<dyn ByteSource>>,
}

impl JsModel {
    fn from_js(v: JsValue) -> Result<Self, JsValue> {
        let field = |k: &str| js_sys::Reflect::get(&v, &k.into()).unwrap_or(JsValue::UNDEFINED);
        let (parts, name) = match field("parts").dyn_into::<js_sys::Array>() {
            Ok(a) if a.length() > 0 => {
                let mut parts = a.iter().map(JsBytes::from_js).collect::<Result<Vec<_>, _>>()?;
                if let Ok(sizes) = field("sizes").dyn_into::<js_sys::Array>() {
                    for (p, size) in parts.iter_mut().zip(sizes.iter()) {
                        if let (JsBytes::Array(a), Some(len)) = (&p, size.as_f64()) {
                            *p = JsBytes::Head(a.clone(), len as u64);
                        }
                    }
                }
                (parts, field("name").as_string().unwrap_or_default())
            }
            Ok(_) => return Err(bad_arg("model", "`parts` is empty")),
            Err(_) => (vec![JsBytes::from_js(v.clone())?], field("name").as_string().unwrap_or_default()),
        };
        let mut m = JsModel { parts, name, len: 0, open: None };
        let src = m.open_parts().map_err(js_err)?;
        m.len = src.len();
        m.open = Some(src);
        Ok(m)
    }

    /// One file as it is (a part of a set given alone is refused by the load's checks, with no
    /// second parse of its header here); several through `open_model`.
    fn open_parts(&self) -> crate::Result<Box<dyn ByteSource>> {
        if self.parts.len() == 1 {
            return Ok(Box::new(self.parts[0].clone()));
        }
        let rest = &self.parts[1..];
        crate::core::split::open_model(Box::new(self.parts[0].clone()), &self.name, &mut |i, part| match rest.get(i - 1) {
            Some(p) => Ok(Box::new(p.clone()) as Box<dyn ByteSource>),
            None => Err(crate::Error::Io(format!("{part} was not given with the first part"))),
        })
    }
}

impl Clone for JsModel {
    fn clone(&self) -> Self {
        JsModel { parts: self.parts.clone(), name: self.name.clone(), len: self.len, open: None }
    }
}

impl ByteSource for JsModel {
    fn len(&self) -> u64 {
        self.len
    }

    fn read(&mut self, range: std::ops::Range<u64>, out: &mut Vec<u8>) -> crate::Result<()> {
        if self.open.is_none() {
            self.open = Some(self.open_parts()?);
        }
        self.open.as_mut().map_or(Ok(()), |src| src.read(range, out))
    }
}

/// The WebGPU adapter the engine would run on, or an error that says what is missing.
#[wasm_bindgen(js_name = adapterInfo)]
pub async fn adapter_info() -> Result<String, JsValue> {
    GpuContext::new().await.map(|c| c.adapter_name()).map_err(js_err)
}

#[derive(Serialize)]
struct FlawInfo {
    name: &'static str,
    why: &'static str,
}

/// The teaching flaws a generation can run with (`flaw` option): [{name, why}].
#[wasm_bindgen]
pub fn flaws() -> Result<JsValue, JsValue> {
    to_js(&crate::Flaw::ALL.map(|f| FlawInfo { name: f.name(), why: f.why() }))
}

#[derive(Serialize)]
struct Defaults {
    context: usize,
    max_tokens: usize,
    report_top: usize,
    /// Where browsers have WebGPU, for a page that found none.
    webgpu_browsers: &'static str,
}

/// The engine's defaults, which the page and the JS API take where nothing is chosen:
/// {context, max_tokens, report_top, webgpu_browsers}.
#[wasm_bindgen]
pub fn defaults() -> Result<JsValue, JsValue> {
    to_js(&Defaults {
        context: crate::DEFAULT_CONTEXT,
        max_tokens: crate::engine::MAX_TOKENS,
        report_top: crate::engine::REPORT_TOP,
        webgpu_browsers: crate::backend::gpu::context::WEBGPU_BROWSERS,
    })
}

/// Bytes of wasm linear memory (it only grows: after a load this is the peak).
#[wasm_bindgen(js_name = wasmMemoryBytes)]
pub fn wasm_memory_bytes() -> f64 {
    wasm_bindgen::memory()
        .dyn_into::<js_sys::WebAssembly::Memory>()
        .map(|m| m.buffer().unchecked_into::<js_sys::ArrayBuffer>().byte_length() as f64)
        .unwrap_or(0.0)
}

/// Load settings from JavaScript (every field optional).
#[derive(Deserialize, Default)]
#[serde(default)]
struct JsLoadOptions {
    rows: Option<(u32, u32)>,
    /// Tokens per invocation of the prefill mat-mul.
    tokens: Option<u32>,
    kv_f16: bool,
    /// The KV-cache policy by name (`core::kv_policy`: f32, f16, q8_0, q4_0, window-N,
    /// sink-S-window-N, h2o-N); `kv_f16: true` is `f16`.
    kv_policy: Option<String>,
    /// The decode step's fusions (`GpuOptions::fuse` bits; 0: one dispatch per op).
    fuse: Option<u32>,
    /// False: no subgroup operations, where the device has them.
    subgroups: Option<bool>,
    /// "gpu" (default), "cpu" (the wasm CPU backend) or "reference" (the exact f32 pass).
    backend: Option<String>,
    /// inspectModel only: the whole file's length when `bytes` is only its first part (at least
    /// the header, e.g. from an HTTP Range request).
    file_bytes: Option<u64>,
}

impl JsLoadOptions {
    /// The engine's load options: the backend ("gpu" unless named), the context, the cache type
    /// and the GPU kernels' shapes.
    fn load(&self, context: usize) -> Result<LoadOptions, JsValue> {
        let backend = self.backend.as_deref().unwrap_or("gpu").parse().map_err(js_err)?;
        let d = GpuOptions::default();
        let gpu = GpuOptions {
            rows: self.rows,
            tokens: self.tokens,
            fuse: self.fuse.unwrap_or(d.fuse),
            subgroups: self.subgroups.unwrap_or(d.subgroups),
            ..d
        };
        Ok(LoadOptions { backend, context, gpu, ..Default::default() }.with_policy(self.policy()?))
    }

    /// `kv_policy` parsed (a bad name is refused with the forms a policy takes), else f16 or f32
    /// as `kv_f16` says.
    fn policy(&self) -> Result<KvPolicy, JsValue> {
        let old = KvPolicy::of(KvType::new(self.kv_f16));
        let Some(name) = &self.kv_policy else { return Ok(old) };
        let p: KvPolicy = name.trim().parse().map_err(js_err)?;
        if self.kv_f16 && p != old {
            return Err(js_err(crate::Error::Option(format!("kv_f16: true asks for an f16 cache, kv_policy for `{}`", p.name()))));
        }
        Ok(p)
    }
}

/// Reads only the header and runs every check a load would (`Engine::check`): what the model is
/// and what it needs at `context` positions with the cache `options` ask for (`{kv_policy,
/// backend}`, as `WebEngine.load`) — shown before anything is allocated (`ModelFacts`). On the
/// GPU backend it opens the device the load would and checks every buffer the model will make
/// against its limits and what it can allocate (`gpu::check_device`, `check_allocation`), then
/// closes it. With
/// `{file_bytes}`, `bytes` may be the file's first part only, as long as it holds the whole
/// header; a split set is `{parts, name, sizes}` with each part's first bytes (`JsModel`).
#[wasm_bindgen(js_name = inspectModel)]
pub async fn inspect_model(bytes: JsValue, context: usize, options: JsValue) -> Result<JsValue, JsValue> {
    let o = from_js::<JsLoadOptions>("load options", options)?;
    let load = o.load(context)?;
    let (header, file_bytes) = match o.file_bytes {
        Some(len) => {
            let mut src = JsBytes::from_js(bytes)?;
            let mut prefix = Vec::new();
            src.read(0..src.len(), &mut prefix).map_err(js_err)?;
            (prefix, len)
        }
        None => {
            let mut src = JsModel::from_js(bytes)?;
            (read_header(&mut src).map_err(js_err)?, src.len())
        }
    };
    let g = Gguf::parse_prefix(&header, file_bytes).map_err(js_err)?;
    let (cfg, _) = Engine::check(&g, &load).map_err(js_err)?;
    if load.backend == BackendKind::Gpu {
        let ctx = GpuContext::with_options(load.gpu).await.map_err(js_err)?;
        let need = check_device(&ctx, &g, &cfg, context, load.policy()).map_err(js_err)?;
        check_allocation(&ctx, &need, context, load.policy()).await.map_err(js_err)?;
        ctx.device.destroy();
    }
    to_js(&ModelFacts::new(&g, &cfg, context, load.kv))
}

/// The engine's state for JavaScript: its backend and cache fill beside the model's facts, and
/// the cache policy: its name, bytes of K and V per position over every layer, its attention
/// sinks, and under an evicting policy the positions each layer holds ([L][held], ascending;
/// null where every cached position is held).
#[derive(Serialize)]
struct EngineState<'a> {
    backend: String,
    cached_tokens: usize,
    kv_policy: String,
    kv_bytes_per_position: u64,
    kv_sinks: usize,
    kv_held: Option<Vec<&'a [usize]>>,
    #[serde(flatten)]
    facts: &'a ModelFacts,
}

impl<'a> EngineState<'a> {
    fn new(e: &'a Engine) -> Self {
        let p = e.policy;
        let held: Option<Vec<&[usize]>> = (0..e.cfg.n_layers).map(|l| e.held_positions(l)).collect();
        EngineState {
            backend: e.backend(),
            cached_tokens: e.position(),
            kv_policy: p.name(),
            kv_bytes_per_position: p.bytes_per_position(e.cfg.n_layers, e.cfg.kv_dim()),
            kv_sinks: match p.eviction {
                Eviction::SinkWindow { sinks, .. } => sinks,
                _ => 0,
            },
            kv_held: held,
            facts: &e.facts,
        }
    }
}

/// `kvCompare`'s result: the comparison (`KvComparison`) of the policies the backend runs, the
/// ones it refuses with the engine's error ({name, error: {name, message}}), and the backend.
#[derive(Serialize)]
struct WebComparison {
    #[serde(flatten)]
    comparison: KvComparison,
    refused: Vec<Refusal>,
    backend: String,
}

#[derive(Serialize)]
struct Refusal {
    name: String,
    error: ErrorInfo,
}

#[derive(Serialize)]
struct ErrorInfo {
    name: &'static str,
    message: String,
}

impl From<crate::Error> for ErrorInfo {
    fn from(e: crate::Error) -> Self {
        ErrorInfo { name: e.kind().name(), message: e.to_string() }
    }
}

/// Splits `names` into the policies that backend `load.backend` runs for the model in `src` and
/// the ones `Engine::check` refuses; a name that is no policy fails the whole call.
fn runnable(src: &mut JsModel, load: &LoadOptions, names: &[String]) -> crate::Result<(Vec<KvPolicy>, Vec<Refusal>)> {
    let header = read_header(src)?;
    let g = Gguf::parse_prefix(&header, src.len())?;
    let (mut run, mut refused) = (Vec::new(), Vec::new());
    for name in names {
        let p: KvPolicy = name.trim().parse()?;
        match Engine::check(&g, &load.clone().with_policy(p)) {
            Ok(_) => run.push(p),
            Err(e) => refused.push(Refusal { name: p.name(), error: e.into() }),
        }
    }
    Ok((run, refused))
}

/// The engine for one loaded model. Calls that run the model take it out of its cell while they
/// run, so a second call at the same time fails with "busy" instead of corrupting the cache.
#[wasm_bindgen]
pub struct WebEngine {
    inner: Rc<RefCell<Option<Engine>>>,
    /// The engine's stop flag, reachable while the engine itself is busy.
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

#[wasm_bindgen]
impl WebEngine {
    /// Parses the model and uploads it to the GPU, `context` positions of KV cache. `options`
    /// (optional): `{rows: [matvec, matmul], tokens: matmul}` weight rows (and the mat-mul's
    /// tokens) per kernel invocation (default: by
    /// adapter type), `kv_policy` the cache policy by name (`kv_f16: true`: `f16`). `bytes`: the
    /// model file, a `Uint8Array` or a `Blob` (a picked `File`, read slice by slice), or `{parts,
    /// name}`: a split set's files in order, named by its first (`JsModel`). `on_info`
    /// (optional) gets the header's facts (`inspectModel`'s) once they pass the checks, before
    /// the weights are read; `on_read` (optional) `(got, total)`: bytes of the file read so far,
    /// as the weights go to the backend, every 250 ms of a longer load (`Reporting`).
    pub async fn load(
        bytes: JsValue,
        context: usize,
        options: JsValue,
        on_info: Option<js_sys::Function>,
        on_read: Option<js_sys::Function>,
    ) -> Result<WebEngine, JsValue> {
        let load = from_js::<JsLoadOptions>("load options", options)?.load(context)?;
        let mut report = |facts: &ModelFacts| {
            if let (Some(f), Ok(v)) = (&on_info, to_js(facts)) {
                let _ = f.call1(&JsValue::NULL, &v);
            }
        };
        let mut read = |got: u64, total: u64| {
            if let Some(f) = &on_read {
                let _ = f.call2(&JsValue::NULL, &(got as f64).into(), &(total as f64).into());
            }
        };
        let mut model = JsModel::from_js(bytes)?;
        let mut src = Reporting::new(&mut model, &mut read);
        let engine = Engine::load_reporting(&mut src, load, &mut report).await.map_err(js_err)?;
        let stop = engine.stop_handle();
        Ok(WebEngine { inner: Rc::new(RefCell::new(Some(engine))), stop })
    }

    /// Ends the running generation after the current step or prefill chunk.
    pub fn stop(&self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Destroys the GPU device, as a driver reset would: for testing the page's recovery.
    #[wasm_bindgen(js_name = loseDevice)]
    pub fn lose_device(&self) -> Result<(), JsValue> {
        self.with(|e| e.gpu().map(|g| g.ctx.device.destroy()))?;
        Ok(())
    }

    fn with<T>(&self, f: impl FnOnce(&mut Engine) -> T) -> Result<T, JsValue> {
        let mut cell = self.inner.borrow_mut();
        let e = cell.as_mut().ok_or_else(|| js_err(crate::Error::Busy))?;
        Ok(f(e))
    }

    /// Backend, cache fill, and the model's facts (`ModelFacts`).
    pub fn state(&self) -> Result<JsValue, JsValue> {
        self.with(|e| to_js(&EngineState::new(e)))?
    }

    /// Empties the KV cache.
    pub fn reset(&self) -> Result<(), JsValue> {
        self.with(|e| e.reset())
    }

    pub fn tokenize(&self, text: String) -> Result<Vec<u32>, JsValue> {
        self.with(|e| e.tokenizer.encode(&text))?.map_err(js_err)
    }

    /// One decode step from the current cache: the last token is already cached and its logits
    /// are ready, so this picks the next token, reports it, and writes its K and V into the next
    /// cache row. Needs a non-empty cache (run `complete` or `chat` first).
    pub fn step(&self, options: JsValue, on_token: js_sys::Function) -> js_sys::Promise {
        self.run(Turn::Step, options, on_token)
    }

    /// The `k` most probable next tokens under the current logits: [{id, p, text}].
    pub fn peek(&self, k: usize) -> Result<JsValue, JsValue> {
        let rows = self.with(|e| {
            crate::core::sampler::top_k(e.logits(), k, 1.0)
                .into_iter()
                .map(|t| WebTop { id: t.id, p: t.p, text: e.tokenizer.token_text(t.id) })
                .collect::<Vec<_>>()
        })?;
        to_js(&rows)
    }

    /// Display text of a token (lossy where it is part of a character).
    #[wasm_bindgen(js_name = tokenText)]
    pub fn token_text(&self, id: u32) -> Result<String, JsValue> {
        self.with(|e| e.tokenizer.token_text(id))
    }

    /// Completes `prompt` from an empty cache. `on_token({id, text, pos, ms, top})` is called per
    /// token; returning false stops. Resolves to the summary.
    pub fn complete(&self, prompt: String, options: JsValue, on_token: js_sys::Function) -> js_sys::Promise {
        self.run(Turn::Complete(prompt), options, on_token)
    }

    /// Renders `request` with the model's chat template and answers its last message, keeping
    /// the cached prefix so that only the new turn is prefilled. `request`: the messages
    /// ([{role, content, tool_calls?, tool_call_id?}]), or {messages, tools, tool_choice,
    /// parallel_tool_calls}; with tools the summary has `content` and `tool_calls` ([{name,
    /// arguments}]).
    pub fn chat(&self, request: JsValue, options: JsValue, on_token: js_sys::Function) -> js_sys::Promise {
        let req = match js_sys::Array::is_array(&request) {
            true => serde_wasm_bindgen::from_value::<Vec<ChatMessage>>(request).map(ChatRequest::new),
            false => serde_wasm_bindgen::from_value::<ChatRequest>(request),
        };
        match req {
            Ok(r) => self.run(Turn::Chat(r), options, on_token),
            Err(e) => js_sys::Promise::reject(&bad_arg("messages", e)),
        }
    }

    /// The benchmark of `kvscope bench` on this device: prefill batched and token by token, decode
    /// after each of `contexts` cached positions, per-token counters and memory. Empties the
    /// cache. With `profile`, also where the GPU time of a decode step and a prefill chunk goes.
    /// Resolves to the report (the CLI's `--json` fields).
    pub fn bench(&self, prompt_tokens: usize, gen_tokens: usize, gpu_argmax: bool, contexts: Vec<usize>, profile: bool) -> js_sys::Promise {
        let inner = self.inner.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let mut engine = inner.borrow_mut().take().ok_or_else(|| js_err(crate::Error::Busy))?;
            let o = crate::bench::BenchOptions {
                prompt_tokens,
                gen_tokens,
                gpu_argmax,
                contexts,
                profile,
                response_format: Default::default(),
            };
            let result = crate::bench::run(&mut engine, &o).await;
            engine.reset();
            *inner.borrow_mut() = Some(engine);
            to_js(&result.map_err(js_err)?)
        })
    }

    /// The KV-cache lab (`kvscope kv-compare`): `text` through the exact cache and each of
    /// `policies` (names), every model loaded afresh from `bytes` (this engine's model file) on
    /// the backend `options` names (load options, as `load`), for the text's tokens and the free
    /// generation (`kv_lab::PREFIX` + `FREE_STEPS` positions at least). `stop()` ends it. The
    /// text must fit this engine's context. Resolves to {positions, free_steps, prefix_text,
    /// reference, policies, refused, backend} (`WebComparison`).
    #[wasm_bindgen(js_name = kvCompare)]
    pub fn kv_compare(&self, bytes: JsValue, text: String, policies: Vec<String>, options: JsValue) -> js_sys::Promise {
        let prepared = (|| {
            let (ids, context) = self.with(|e| e.tokenizer.encode(&text).map(|ids| (ids, e.context)))?.map_err(js_err)?;
            if ids.len() > context {
                return Err(bad_arg("text", format!("it has {} tokens; this engine's context holds {context}", ids.len())));
            }
            let lab = crate::engine::kv_lab::PREFIX + crate::engine::kv_lab::FREE_STEPS;
            let load = from_js::<JsLoadOptions>("load options", options)?.load(ids.len().max(lab))?;
            Ok((ids, load))
        })();
        let (ids, load) = match prepared {
            Ok(p) => p,
            Err(e) => return js_sys::Promise::reject(&e),
        };
        let stop = self.stop.clone();
        stop.store(false, std::sync::atomic::Ordering::Relaxed);
        wasm_bindgen_futures::future_to_promise(async move {
            let mut src = JsModel::from_js(bytes)?;
            let (run, refused) = runnable(&mut src, &load, &policies).map_err(js_err)?;
            if run.is_empty() && !refused.is_empty() {
                // Nothing to compare: every refusal, in one error of the first one's kind.
                let e = js_sys::Error::new(&refused.iter().map(|r| r.error.message.as_str()).collect::<Vec<_>>().join("; "));
                e.set_name(refused[0].error.name);
                return Err(e.into());
            }
            let comparison = kv_compare_from(src, &load, &ids, &run, &stop).await.map_err(js_err)?;
            to_js(&WebComparison { comparison, refused, backend: load.backend.name().into() })
        })
    }

    fn run(&self, turn: Turn, options: JsValue, on_token: js_sys::Function) -> js_sys::Promise {
        let inner = self.inner.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let mut opts: GenerateOptions = from_js("generate options", options)?;
            let mut engine = inner.borrow_mut().take().ok_or_else(|| js_err(crate::Error::Busy))?;
            let tok = engine.tokenizer.clone();
            let result = async {
                let (ids, reused, chat) = prepare(&mut engine, &turn, &mut opts)?;
                // The first event also carries the tokens this turn prefilled, from `turn_start`.
                let fresh = &ids[reused.min(ids.len())..];
                let mut prefilled = Some(fresh.iter().map(|&i| tok.token_text(i)).collect::<Vec<_>>());
                let mut cb_err = None;
                let summary = engine
                    .generate(fresh, &opts, &mut |ev| {
                        let mut w = WebTokenEvent::new(ev, &tok);
                        w.turn_start = reused;
                        w.prefilled = prefilled.take();
                        match to_js(&w).and_then(|v| on_token.call1(&JsValue::NULL, &v)) {
                            Ok(r) => r.as_bool() != Some(false),
                            Err(e) => {
                                cb_err = Some(e);
                                false
                            }
                        }
                    })
                    .await?;
                let reply = chat.and_then(|c| c.reply(&summary.text));
                Ok::<_, crate::Error>((WebSummary { summary, reused_tokens: reused, reply }, cb_err))
            }
            .await;
            *inner.borrow_mut() = Some(engine);
            let (summary, cb_err) = result.map_err(js_err)?;
            match cb_err {
                Some(e) => Err(e),
                None => to_js(&summary),
            }
        })
    }
}

enum Turn {
    Complete(String),
    Chat(ChatRequest),
    Step,
}

/// A turn's tokens and the cache rows kept from before it (and, for a chat turn, the turn, to
/// read its reply): a completion starts from an empty cache, a chat turn keeps the cached
/// prefix of its conversation, a step continues the cache.
fn prepare(engine: &mut Engine, turn: &Turn, opts: &mut GenerateOptions) -> crate::Result<(Vec<u32>, usize, Option<ChatTurn>)> {
    Ok(match turn {
        Turn::Complete(p) => {
            engine.reset();
            (engine.tokenizer.encode(p)?, 0, None)
        }
        Turn::Chat(req) => {
            let chat = ChatTurn::new(&engine.tokenizer, req, opts)?;
            let reused = engine.reuse_prefix(&chat.ids);
            (chat.ids.clone(), reused, Some(chat))
        }
        Turn::Step => {
            opts.max_tokens = 1;
            (Vec::new(), engine.position(), None)
        }
    })
}

/// A turn's summary for JavaScript: the engine's, the cache rows kept from before the turn, and
/// a chat turn with tools' reply (`content`, `tool_calls`).
#[derive(Serialize)]
struct WebSummary {
    #[serde(flatten)]
    summary: crate::engine::Summary,
    reused_tokens: usize,
    #[serde(flatten)]
    reply: Option<crate::core::tools::Reply>,
}

/// A `TokenEvent` with display text for the token and each row of the next-token table.
#[derive(Serialize)]
struct WebTokenEvent<'a> {
    id: u32,
    /// The text this token completes in the output (may be empty mid-character).
    text: &'a str,
    /// This token on its own, for tables.
    token: String,
    pos: usize,
    ms: f64,
    top: Vec<WebTop>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attention: Option<&'a [f32]>,
    /// [L × h × pos]: every layer's weights for this token's query.
    #[serde(skip_serializing_if = "Option::is_none")]
    attention_layers: Option<&'a [f32]>,
    /// First event only: attention_layer's weights of each prompt query, [h × (i + 1)] each.
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_attention: Option<&'a [Vec<f32>]>,
    /// Cache rows kept from before this turn; this turn's tokens start at this position.
    turn_start: usize,
    /// First event of a turn only: the tokens prefilled at positions turn_start.., as text.
    #[serde(skip_serializing_if = "Option::is_none")]
    prefilled: Option<Vec<String>>,
    /// With `logprobs`: this token's log probability and bytes, and the alternatives'.
    #[serde(skip_serializing_if = "Option::is_none")]
    logprob: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes: Option<&'a [u8]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_logprobs: Option<Vec<WebLogprob<'a>>>,
}

#[derive(Serialize)]
struct WebTop {
    id: u32,
    p: f32,
    text: String,
}

/// One alternative of a token's logprobs: its text (lossy where it is part of a character) and
/// bytes.
#[derive(Serialize)]
struct WebLogprob<'a> {
    id: u32,
    logprob: f32,
    text: String,
    bytes: &'a [u8],
}

impl<'a> WebTokenEvent<'a> {
    fn new(ev: &'a TokenEvent, tok: &'a Tokenizer) -> Self {
        WebTokenEvent {
            id: ev.id,
            text: &ev.text,
            token: tok.token_text(ev.id),
            pos: ev.pos,
            ms: ev.ms,
            top: ev.top.iter().map(|t| WebTop { id: t.id, p: t.p, text: tok.token_text(t.id) }).collect(),
            attention: ev.attention.as_deref(),
            attention_layers: ev.attention_layers.as_deref(),
            prompt_attention: ev.prompt_attention.as_deref(),
            turn_start: 0,
            prefilled: None,
            logprob: ev.logprob,
            bytes: ev.logprob.map(|_| tok.token_bytes(ev.id)),
            top_logprobs: ev.top_logprobs.as_ref().map(|top| {
                top.iter()
                    .map(|t| WebLogprob { id: t.id, logprob: t.logprob, text: tok.token_text(t.id), bytes: tok.token_bytes(t.id) })
                    .collect()
            }),
        }
    }
}
