//! A chat turn: the request checked, rendered with the model's template and tokenised; what
//! its tools ask of the generation (a call held back to be parsed whole, or forced by a
//! grammar); and the reply read back into prose and tool calls (`core::tools`).

use crate::core::chat::ChatRequest;
use crate::core::tokenizer::Tokenizer;
use crate::core::tools::{Choice, Reply, ToolFormat};
use crate::engine::options::GenerateOptions;
use crate::error::Result;

pub struct ChatTurn {
    /// The rendered conversation's tokens, ending with the assistant's turn opened.
    pub ids: Vec<u32>,
    /// The template's tool format, when the model is shown tools.
    format: Option<ToolFormat>,
    parallel: bool,
}

impl ChatTurn {
    /// Checks `req` (refusing `tools` by name where the template has no tool support) and
    /// renders it; sets in `opts` what its tools imply.
    pub fn new(tokenizer: &Tokenizer, req: &ChatRequest, opts: &mut GenerateOptions) -> Result<Self> {
        req.check()?;
        let choice = req.choice()?;
        let format = match req.tools.is_empty() {
            true => None,
            false => Some(ToolFormat::of_template(tokenizer.chat_template())?),
        };
        let shown = if choice == Choice::None { &[][..] } else { &req.tools[..] };
        let text = tokenizer.render_chat(&req.messages, shown, true)?;
        let format = format.filter(|_| choice != Choice::None);
        if let Some(f) = format {
            opts.hold = f.markers();
            let forced: Vec<_> = match &choice {
                Choice::Required => req.tools.iter().collect(),
                Choice::Function(name) => req.tools.iter().filter(|t| t["function"]["name"] == name.as_str()).collect(),
                _ => Vec::new(),
            };
            opts.tool_grammar = (!forced.is_empty()).then(|| f.grammar(&forced));
        }
        Ok(ChatTurn { ids: tokenizer.encode(&text)?, format, parallel: req.parallel_tool_calls.unwrap_or(true) })
    }

    /// The reply's prose and tool calls, when the model was shown tools.
    pub fn reply(&self, text: &str) -> Option<Reply> {
        self.format.map(|f| f.parse(text, self.parallel))
    }
}
