//! Tool calling: which tool format a chat template writes, the checks a request with tools
//! must pass, the grammar that forces a call, and the calls read back from the model's text.
//!
//! Glossary (with `core::chat`'s): tool format, how a template family writes a tool call in the
//! text — Qwen 2.5's `<tool_call>\n{"name": …, "arguments": {…}}\n</tool_call>` blocks, or Llama
//! 3.x's bare `{"name": …, "parameters": {…}}`; tool choice, OpenAI's `tool_choice`: `none` (the
//! model is not shown the tools), `auto` (it may call one), `required` or `{type: "function",
//! function: {name}}` (it must call one, or that one: a grammar forces the call).

use serde_json::{json, Value};

use crate::core::chat::{ChatMessage, ChatRequest};
use crate::core::grammar::Grammar;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolFormat {
    /// Qwen 2.5: `<tool_call>` blocks around `{"name", "arguments"}`.
    Qwen,
    /// Llama 3.1 / 3.2: one bare `{"name", "parameters"}` object.
    Llama,
}

/// A tool call read from the model's text: `arguments` as JSON text, as OpenAI's API gives it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Call {
    pub name: String,
    pub arguments: String,
}

/// The model's reply split into its prose and its tool calls.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Reply {
    pub content: Option<String>,
    pub tool_calls: Vec<Call>,
}

/// `tool_choice` as the engine acts on it.
#[derive(Debug, Clone, PartialEq)]
pub enum Choice {
    None,
    Auto,
    Required,
    Function(String),
}

impl ToolFormat {
    /// The format `template` writes tool calls in; a template without tools, or with a format
    /// kvscope does not read, is refused by name (`tools`).
    pub fn of_template(template: Option<&str>) -> Result<Self> {
        let t = template.unwrap_or("");
        if t.contains("<tool_call>") {
            Ok(ToolFormat::Qwen)
        } else if t.contains("\"parameters\": ") && t.contains("tools") {
            Ok(ToolFormat::Llama)
        } else if t.contains("tools") {
            Err(Error::param("tools", "tools: this model's chat template writes tool calls in a format kvscope does not read (it reads Qwen 2.5's <tool_call> JSON and Llama 3.x's JSON calls)"))
        } else {
            Err(Error::param("tools", "tools: this model's chat template has no tool support"))
        }
    }

    /// Where a call starts in the text: the reply is held back from there on, to be parsed
    /// whole (`core::stop_strings`).
    pub fn markers(self) -> Vec<String> {
        match self {
            ToolFormat::Qwen => vec!["<tool_call>".into()],
            ToolFormat::Llama => vec!["{\"name\"".into(), "<|python_tag|>".into()],
        }
    }

    /// A grammar that forces one call of one of `tools` (each `{type, function: {name,
    /// parameters}}`), written as the template writes past calls (`", "` and `": "`).
    pub fn grammar(self, tools: &[&Value]) -> Grammar {
        let args = match self {
            ToolFormat::Qwen => "arguments",
            ToolFormat::Llama => "parameters",
        };
        let each: Vec<Value> = tools
            .iter()
            .map(|t| {
                let f = &t["function"];
                let params = f.get("parameters").cloned().unwrap_or(json!({"type": "object"}));
                json!({"type": "object", "properties": {"name": {"const": f["name"]}, args: params},
                       "required": ["name", args], "additionalProperties": false})
            })
            .collect();
        let schema = json!({"anyOf": each, "x-guidance": {"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "}});
        let call = format!("call: %json {schema}");
        Grammar::Lark(match self {
            ToolFormat::Qwen => format!("start: \"<tool_call>\\n\" call \"\\n</tool_call>\"\n{call}\n"),
            ToolFormat::Llama => format!("start: call\n{call}\n"),
        })
    }

    /// Splits the model's text into prose and calls. Text that does not parse as a call stays
    /// prose; with `parallel` false only the first call is kept.
    pub fn parse(self, text: &str, parallel: bool) -> Reply {
        let (mut prose, mut calls) = match self {
            ToolFormat::Qwen => qwen_calls(text),
            ToolFormat::Llama => llama_call(text),
        };
        if !parallel {
            calls.truncate(1);
        }
        if calls.is_empty() {
            prose = text.to_string();
        }
        let prose = prose.trim();
        Reply { content: (!prose.is_empty()).then(|| prose.to_string()), tool_calls: calls }
    }
}

/// `{"name": N, key: {…}}` → a call, from an object with a string name and an object under
/// `key` (or `arguments`).
fn call_of(v: &Value, key: &str) -> Option<Call> {
    let name = v.get("name")?.as_str()?;
    let args = v.get(key).or_else(|| v.get("arguments")).filter(|a| a.is_object())?;
    Some(Call { name: name.to_string(), arguments: serde_json::to_string(args).ok()? })
}

/// Qwen 2.5: each `<tool_call>…</tool_call>` block (the last may be cut short) whose JSON parses
/// is a call; the rest is prose.
fn qwen_calls(text: &str) -> (String, Vec<Call>) {
    let (mut prose, mut calls, mut rest) = (String::new(), Vec::new(), text);
    while let Some(start) = rest.find("<tool_call>") {
        prose.push_str(&rest[..start]);
        let body = &rest[start + "<tool_call>".len()..];
        let end = body.find("</tool_call>").unwrap_or(body.len());
        match serde_json::from_str::<Value>(body[..end].trim()).ok().and_then(|v| call_of(&v, "arguments")) {
            Some(c) => calls.push(c),
            None => prose.push_str(&rest[start..start + "<tool_call>".len() + end]),
        }
        rest = body[end..].strip_prefix("</tool_call>").unwrap_or(&body[end..]);
    }
    prose.push_str(rest);
    (prose, calls)
}

/// Llama 3.x: one JSON object (after `<|python_tag|>`, if any) with a name and parameters.
fn llama_call(text: &str) -> (String, Vec<Call>) {
    let Some(start) = text.find('{') else { return (text.to_string(), Vec::new()) };
    let mut values = serde_json::Deserializer::from_str(&text[start..]).into_iter::<Value>();
    match values.next().and_then(|v| v.ok()).and_then(|v| call_of(&v, "parameters")) {
        Some(c) => {
            let end = start + values.byte_offset();
            (format!("{}{}", text[..start].replace("<|python_tag|>", ""), &text[end..]), vec![c])
        }
        None => (text.to_string(), Vec::new()),
    }
}

impl ChatRequest {
    /// The tool choice, checked against the tools: absent, `auto` with tools and `none`
    /// without; a named function must be one of them.
    pub fn choice(&self) -> Result<Choice> {
        let bad = |what: &str| Error::param("tool_choice", format!("tool_choice: {what}"));
        let choice = match &self.tool_choice {
            None => return Ok(if self.tools.is_empty() { Choice::None } else { Choice::Auto }),
            Some(Value::String(s)) if s == "none" => Choice::None,
            Some(Value::String(s)) if s == "auto" => Choice::Auto,
            Some(Value::String(s)) if s == "required" => Choice::Required,
            Some(v @ Value::Object(_)) => match v.pointer("/function/name").and_then(Value::as_str) {
                Some(name) => Choice::Function(name.to_string()),
                None => return Err(bad("an object must be {type: \"function\", function: {name}}")),
            },
            Some(v) => return Err(bad(&format!("{v} is not one of none, auto, required or {{type: \"function\", function: {{name}}}}"))),
        };
        if choice != Choice::None && self.tools.is_empty() {
            return Err(bad("there are no tools to choose from"));
        }
        if let Choice::Function(name) = &choice {
            if !self.tools.iter().any(|t| t.pointer("/function/name").and_then(Value::as_str) == Some(name)) {
                return Err(bad(&format!("`{name}` is not one of the tools")));
            }
        }
        Ok(choice)
    }

    /// Every tool is `{type: "function", function: {name, …}}`; every tool message answers an
    /// earlier assistant call by its id; every past call's arguments are JSON.
    pub fn check(&self) -> Result<()> {
        for (i, t) in self.tools.iter().enumerate() {
            if t.get("type").and_then(Value::as_str) != Some("function") || t.pointer("/function/name").and_then(Value::as_str).is_none() {
                return Err(Error::param(
                    format!("tools[{i}]"),
                    format!("tools[{i}] must be {{type: \"function\", function: {{name, description, parameters}}}}"),
                ));
            }
        }
        let mut open: Vec<&str> = Vec::new();
        for (i, m) in self.messages.iter().enumerate() {
            check_calls(i, m)?;
            open.extend(m.tool_calls.iter().map(|c| c.id.as_str()));
            if m.role == "tool" {
                let id = m.tool_call_id.as_deref().unwrap_or("");
                let Some(at) = open.iter().position(|&o| o == id && !id.is_empty()) else {
                    return Err(Error::param(
                        format!("messages[{i}].tool_call_id"),
                        format!("messages[{i}] is a tool message whose tool_call_id `{id}` answers no earlier assistant tool call"),
                    ));
                };
                open.remove(at);
            }
        }
        Ok(())
    }
}

/// A past assistant call's arguments must be a JSON object, or JSON text of one.
fn check_calls(i: usize, m: &ChatMessage) -> Result<()> {
    for (j, c) in m.tool_calls.iter().enumerate() {
        let ok = match &c.function.arguments {
            Value::String(s) => serde_json::from_str::<Value>(s).is_ok_and(|v| v.is_object()),
            v => v.is_object(),
        };
        if !ok {
            let param = format!("messages[{i}].tool_calls[{j}].function.arguments");
            return Err(Error::param(param.clone(), format!("{param} is not a JSON object")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(name: &str, arguments: &str) -> Call {
        Call { name: name.into(), arguments: arguments.into() }
    }

    #[test]
    fn qwen_blocks_become_calls() {
        let text = "Let me look.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"t\", \"arguments\": {}}\n</tool_call>";
        let r = ToolFormat::Qwen.parse(text, true);
        assert_eq!(r.content.as_deref(), Some("Let me look."));
        assert_eq!(r.tool_calls, vec![call("get_weather", r#"{"city":"Paris"}"#), call("t", "{}")]);
        assert_eq!(ToolFormat::Qwen.parse(text, false).tool_calls.len(), 1);
        let broken = "<tool_call>\n{\"name\": \"x\", \"argu";
        assert_eq!(ToolFormat::Qwen.parse(broken, true), Reply { content: Some(broken.into()), tool_calls: vec![] });
        assert_eq!(ToolFormat::Qwen.parse("Paris.", true), Reply { content: Some("Paris.".into()), tool_calls: vec![] });
    }

    #[test]
    fn llama_json_becomes_a_call() {
        let r = ToolFormat::Llama.parse("{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Rome\"}}", true);
        assert_eq!(r, Reply { content: None, tool_calls: vec![call("get_weather", r#"{"city":"Rome"}"#)] });
        let r = ToolFormat::Llama.parse("<|python_tag|>{\"name\": \"f\", \"parameters\": {}}", true);
        assert_eq!(r.tool_calls, vec![call("f", "{}")]);
        assert_eq!(r.content, None);
        assert_eq!(ToolFormat::Llama.parse("{\"a\": 1}", true).tool_calls, vec![]);
    }

    #[test]
    fn requests_are_checked_by_name() {
        let tool = json!({"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}});
        let mut r = ChatRequest::new(vec![ChatMessage::new("user", "hi")]);
        assert_eq!(r.choice().unwrap(), Choice::None);
        r.tools.push(tool);
        assert_eq!(r.choice().unwrap(), Choice::Auto);
        r.tool_choice = Some(json!({"type": "function", "function": {"name": "g"}}));
        assert_eq!(r.choice().unwrap_err().param_name(), Some("tool_choice"));
        let mut answer = ChatMessage::new("tool", "22 C");
        answer.tool_call_id = Some("call_9".into());
        r.messages.push(answer);
        let e = r.check().unwrap_err();
        assert_eq!(e.param_name(), Some("messages[1].tool_call_id"));
        assert!(e.to_string().contains("`call_9` answers no earlier assistant tool call"), "{e}");
        assert!(ToolFormat::of_template(Some("{{ messages }}")).unwrap_err().to_string().contains("no tool support"));
    }
}
