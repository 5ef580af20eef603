//! Chat requests rendered with the model's Jinja chat template (minijinja), tools included.
//!
//! Glossary: message, one turn `{role, content}` (`role` system, user, assistant or tool; an
//! assistant turn may carry `tool_calls`, a tool turn answers one by `tool_call_id`); tool, a
//! function the model may call, OpenAI's `{type: "function", function: {name, description,
//! parameters}}`; tool call, `{id, type: "function", function: {name, arguments}}`, where
//! `arguments` is a JSON string in OpenAI's API and an object in the templates.

use minijinja::value::{Kwargs, Value as JinjaValue};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    #[serde(default)]
    pub content: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> Self {
        ChatMessage { role: role.into(), content: content.into(), ..Default::default() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ToolCall {
    #[serde(default)]
    pub id: String,
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: FunctionCall,
}

fn function_type() -> String {
    "function".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    /// A JSON string (OpenAI's API) or an object (as the templates write it).
    pub arguments: Value,
}

/// A chat turn to answer: the conversation and the tools the model may call.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    pub tools: Vec<Value>,
    pub tool_choice: Option<Value>,
    pub parallel_tool_calls: Option<bool>,
}

impl ChatRequest {
    pub fn new(messages: Vec<ChatMessage>) -> Self {
        ChatRequest { messages, ..Default::default() }
    }
}

/// What a template is rendered with besides the messages.
pub struct Frame<'a> {
    pub tools: &'a [Value],
    pub add_generation_prompt: bool,
    pub bos_token: String,
    pub eos_token: String,
}

/// Renders `template` over `messages`: each past tool call's `arguments` as an object (the
/// templates write it with `tojson`), `tools` only when there are any (templates test whether
/// it is defined), and `tojson` as Python's `json.dumps` writes it, which the templates were
/// trained with (`", "` and `": "`, non-ASCII as it is, `indent=N`).
pub fn render(template: &str, messages: &[ChatMessage], frame: &Frame) -> Result<String> {
    let mut env = minijinja::Environment::new();
    env.add_function("raise_exception", |msg: String| -> std::result::Result<String, minijinja::Error> {
        Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
    });
    env.add_filter("tojson", tojson);
    env.add_template("chat", template).map_err(|e| Error::Template(e.to_string()))?;
    let messages = messages.iter().map(template_message).collect::<Vec<_>>();
    let tools = (!frame.tools.is_empty()).then_some(frame.tools);
    env.get_template("chat")
        .and_then(|t| {
            t.render(minijinja::context! {
                messages => messages,
                tools => tools,
                add_generation_prompt => frame.add_generation_prompt,
                bos_token => frame.bos_token,
                eos_token => frame.eos_token,
            })
        })
        .map_err(|e| Error::Template(e.to_string()))
}

/// A message as the template sees it: tool-call arguments given as JSON text become objects
/// (`check_messages` has made sure they parse).
fn template_message(m: &ChatMessage) -> Value {
    let mut v = serde_json::to_value(m).expect("a message serialises");
    if let Some(calls) = v.get_mut("tool_calls").and_then(Value::as_array_mut) {
        for c in calls {
            if let Some(Value::String(s)) = c.pointer("/function/arguments").cloned() {
                c["function"]["arguments"] = serde_json::from_str(&s).unwrap_or(Value::String(s));
            }
        }
    }
    v
}

/// `x | tojson` and `x | tojson(indent=N)`, as transformers' chat templates have it.
fn tojson(value: JinjaValue, kwargs: Kwargs) -> std::result::Result<JinjaValue, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let v = serde_json::to_value(&value).map_err(|e| minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e.to_string()))?;
    let mut out = String::new();
    py_json(&v, indent, 0, &mut out);
    Ok(JinjaValue::from_safe_string(out))
}

/// Python's `json.dumps(v, ensure_ascii=False, indent=indent)`: `", "` and `": "` inline, `","`
/// and a newline plus `indent · depth` spaces when indented; keys in their order.
pub fn py_json(v: &Value, indent: Option<usize>, depth: usize, out: &mut String) {
    let (items, open, close): (Vec<(Option<&String>, &Value)>, char, char) = match v {
        Value::Array(a) => (a.iter().map(|x| (None, x)).collect(), '[', ']'),
        Value::Object(m) => (m.iter().map(|(k, x)| (Some(k), x)).collect(), '{', '}'),
        scalar => return out.push_str(&serde_json::to_string(scalar).expect("a scalar serialises")),
    };
    out.push(open);
    let pad = |n: usize| indent.map(|i| format!("\n{}", " ".repeat(i * n))).unwrap_or_default();
    for (i, (key, x)) in items.iter().enumerate() {
        out.push_str(if i == 0 {
            ""
        } else if indent.is_some() {
            ","
        } else {
            ", "
        });
        out.push_str(&pad(depth + 1));
        if let Some(k) = key {
            out.push_str(&serde_json::to_string(k).expect("a key serialises"));
            out.push_str(": ");
        }
        py_json(x, indent, depth + 1, out);
    }
    if !items.is_empty() {
        out.push_str(&pad(depth));
    }
    out.push(close);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tojson_writes_as_python_does() {
        let v = serde_json::json!({"b": 1, "a": [1, 2.5, "é\n"], "e": {}, "f": []});
        let mut s = String::new();
        py_json(&v, None, 0, &mut s);
        assert_eq!(s, r#"{"b": 1, "a": [1, 2.5, "é\n"], "e": {}, "f": []}"#);
        let mut s = String::new();
        py_json(&serde_json::json!({"a": [1], "b": {}}), Some(4), 0, &mut s);
        assert_eq!(s, "{\n    \"a\": [\n        1\n    ],\n    \"b\": {}\n}");
    }

    #[test]
    fn past_tool_call_arguments_render_as_objects() {
        let t = "{% for m in messages %}{% for c in m.tool_calls %}{{ c.function.arguments | tojson }}{% endfor %}{% endfor %}";
        let mut m = ChatMessage::new("assistant", "");
        m.tool_calls.push(ToolCall {
            id: "c1".into(),
            kind: "function".into(),
            function: FunctionCall { name: "f".into(), arguments: Value::String(r#"{"x":1}"#.into()) },
        });
        let frame = Frame { tools: &[], add_generation_prompt: false, bos_token: String::new(), eos_token: String::new() };
        assert_eq!(render(t, &[m], &frame).unwrap(), r#"{"x": 1}"#);
    }
}
