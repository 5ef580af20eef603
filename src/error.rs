//! One error type for the whole engine. Every message names the thing that is wrong
//! (the metadata key, the tensor, the limit) so that a user can act on it.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("not a GGUF file: it starts with \"{}\" instead of \"GGUF\"", .0.escape_ascii())]
    BadMagic([u8; 4]),
    #[error("unsupported GGUF version {0} (supported: 2 and 3)")]
    UnsupportedVersion(u32),
    #[error("GGUF file is truncated: {what} needs {need} bytes at offset {offset}, but the file is {len} bytes long")]
    Truncated { what: String, offset: u64, need: u64, len: u64 },
    #[error("GGUF {what}: {msg}")]
    Malformed { what: String, msg: String },
    #[error("metadata key `{0}` is missing")]
    MissingKey(String),
    #[error("metadata key `{key}` has type {found}, expected {expected}")]
    WrongKeyType { key: String, expected: &'static str, found: &'static str },
    #[error("tensor `{0}` is missing")]
    MissingTensor(String),
    #[error("tensor `{name}` has type {ty}, which kvscope does not support (supported: {supported})")]
    UnsupportedType { name: String, ty: String, supported: String },
    #[error("tensor `{name}` has shape {found:?}, expected {expected:?}")]
    BadShape { name: String, expected: Vec<u64>, found: Vec<u64> },
    #[error("unsupported model architecture `{name}` (supported: {supported})")]
    UnsupportedArchitecture { name: String, supported: String },
    #[error("model config: {0}")]
    Config(String),
    /// A well-formed model whose shape the kernels do not take.
    #[error("model config: {0} is not supported")]
    NotSupported(String),
    /// An option or request the caller gave that cannot be honoured.
    #[error("{0}")]
    Option(String),
    /// A request field that cannot be honoured: `param` names it as the request spells it
    /// (`top_logprobs`, `messages[2].tool_call_id`), for an HTTP error's `param`; the message
    /// names it too.
    #[error("{msg}")]
    Param { param: String, msg: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    Template(String),
    #[error("the context is full: {used} of {capacity} positions are in use")]
    ContextFull { used: usize, capacity: usize },
    #[error("the prompt has {tokens} tokens but the context holds only {capacity}")]
    PromptTooLong { tokens: usize, capacity: usize },
    #[error("stopped")]
    Stopped,
    #[error("the prompt is empty: there is nothing to predict the next token from")]
    EmptyPrompt,
    #[error("token id {id} is outside the vocabulary (size {vocab})")]
    BadToken { id: u32, vocab: usize },
    #[error("no GPU adapter: {0}")]
    NoAdapter(String),
    #[error("GPU limit exceeded: {what} needs {need} bytes ({} MiB) but the device allows {limit} ({limit_name})", need.div_ceil(1 << 20))]
    Limit { what: String, need: u64, limit: u64, limit_name: &'static str },
    /// More memory than the backend can address: the weights and KV cache on wasm32's CPU
    /// backend past its 4 GiB.
    #[error("{what} need {} MiB, more than {limit}: {hint}", need.div_ceil(1 << 20))]
    Memory { what: String, need: u64, limit: String, hint: &'static str },
    #[error("the GPU device was lost ({0}); reload the engine")]
    DeviceLost(String),
    #[error("GPU: {0}")]
    Gpu(String),
    #[error("the engine is busy generating")]
    Busy,
    /// A split model (`core::split`) whose part is missing, misnamed or not the one its place
    /// needs.
    #[error("split model part `{name}`: {why}")]
    MissingPart { name: String, why: String },
    #[error("{0}")]
    Io(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of failure an error is, for callers that act on it (the page offers "Reload engine"
/// for `DeviceLost` and `Gpu`, and explains `NoAdapter`) rather than on the message's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum ErrorKind {
    /// The file is not a well-formed model: bad GGUF, missing or mis-shaped key or tensor,
    /// vocabulary or chat template that cannot be built.
    InvalidModel,
    /// A well-formed file that kvscope cannot run: GGUF version, tensor type, architecture.
    Unsupported,
    /// A request the engine refuses: empty prompt, unknown token, bad option.
    InvalidInput,
    /// The prompt or the conversation does not fit in the context.
    ContextFull,
    Stopped,
    Busy,
    /// No GPU adapter (in a browser: no WebGPU).
    NoAdapter,
    /// A buffer larger than the device allows.
    Limits,
    DeviceLost,
    /// Any other GPU failure: validation, out of memory, a failed readback.
    Gpu,
    Io,
}

impl ErrorKind {
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::InvalidModel => "InvalidModel",
            ErrorKind::Unsupported => "Unsupported",
            ErrorKind::InvalidInput => "InvalidInput",
            ErrorKind::ContextFull => "ContextFull",
            ErrorKind::Stopped => "Stopped",
            ErrorKind::Busy => "Busy",
            ErrorKind::NoAdapter => "NoAdapter",
            ErrorKind::Limits => "Limits",
            ErrorKind::DeviceLost => "DeviceLost",
            ErrorKind::Gpu => "Gpu",
            ErrorKind::Io => "Io",
        }
    }
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        use Error::*;
        match self {
            BadMagic(_)
            | Truncated { .. }
            | Malformed { .. }
            | MissingKey(_)
            | WrongKeyType { .. }
            | MissingTensor(_)
            | BadShape { .. }
            | Tokenizer(_)
            | Template(_)
            | MissingPart { .. } => ErrorKind::InvalidModel,
            Config(_) => ErrorKind::InvalidModel,
            UnsupportedVersion(_) | UnsupportedType { .. } | UnsupportedArchitecture { .. } | NotSupported(_) => ErrorKind::Unsupported,
            Option(_) | Param { .. } | EmptyPrompt | BadToken { .. } => ErrorKind::InvalidInput,
            ContextFull { .. } | PromptTooLong { .. } => ErrorKind::ContextFull,
            Stopped => ErrorKind::Stopped,
            Busy => ErrorKind::Busy,
            NoAdapter(_) => ErrorKind::NoAdapter,
            Limit { .. } | Memory { .. } => ErrorKind::Limits,
            DeviceLost(_) => ErrorKind::DeviceLost,
            Gpu(_) => ErrorKind::Gpu,
            Io(_) => ErrorKind::Io,
        }
    }

    /// The request field a `Param` error is about.
    pub fn param_name(&self) -> Option<&str> {
        match self {
            Error::Param { param, .. } => Some(param),
            _ => None,
        }
    }

    pub fn param(param: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Param { param: param.into(), msg: msg.into() }
    }

    pub(crate) fn malformed(what: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Malformed { what: what.into(), msg: msg.into() }
    }
}
