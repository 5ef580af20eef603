//! The request parameters an OpenAI-style app passes, on the default model (CPU backend): stop
//! strings against the plain run's text, logprobs against a log-softmax of the model's own logits
//! computed here, penalties and logit bias against the same logits processed by hand, JSON
//! schemas by constrained decoding (every sampled output parses and keeps to the schema), forced
//! tool calls in Qwen 2.5's and Llama 3.1's templates, and each bad request refused by name with
//! the engine usable after.

mod common;

use std::collections::{BTreeMap, HashMap};

use common::{default_model, with_chat_template, LLAMA31_TEMPLATE, QWEN25_TEMPLATE};
use kvscope::core::chat::{ChatMessage, ChatRequest, FunctionCall, ToolCall};
use kvscope::core::grammar::{JsonSchema, ResponseFormat};
use kvscope::core::sampler::SamplerConfig;
use kvscope::engine::ChatTurn;
use kvscope::{BackendKind, Engine, GenerateOptions, LoadOptions, StopReason, Summary, TokenEvent};
use serde_json::{json, Value};

const PROMPT: &str = "The capital of France is";

fn engine(bytes: &[u8]) -> Engine {
    pollster::block_on(Engine::load(bytes, LoadOptions { backend: BackendKind::Cpu, context: 512, ..Default::default() })).expect("load")
}

/// Runs `ids` from an empty cache; the events and the summary.
fn run(e: &mut Engine, ids: &[u32], opts: &GenerateOptions) -> kvscope::Result<(Vec<TokenEvent>, Summary)> {
    e.reset();
    let mut events = Vec::new();
    let s = pollster::block_on(e.generate(ids, opts, &mut |ev| {
        events.push(ev.clone());
        true
    }))?;
    Ok((events, s))
}

fn greedy(n: usize) -> GenerateOptions {
    GenerateOptions { max_tokens: n, ..Default::default() }
}

/// The model's logits after `ids`, from an empty cache.
fn logits_after(e: &mut Engine, ids: &[u32]) -> Vec<f32> {
    e.reset();
    let all = pollster::block_on(e.logits_for(ids)).unwrap();
    all[all.len() - all.len() / ids.len()..].to_vec()
}

fn argmax(l: &[f32]) -> u32 {
    (0..l.len()).fold(0, |b, i| if l[i] > l[b] { i } else { b }) as u32
}

#[test]
fn stop_strings_end_the_text_where_the_plain_run_has_them() {
    let Some(bytes) = default_model() else { return };
    let mut e = engine(&bytes);
    let ids = e.tokenizer.encode(PROMPT).unwrap();
    let (_, plain) = run(&mut e, &ids, &greedy(16)).unwrap();
    // " Paris.\n\nThe answer is: …": "." ends a token, "\n\nThe" spans two.
    for stop in [".", "\n\nThe", "answer is"] {
        let at = plain.text.find(stop).unwrap_or_else(|| panic!("{stop:?} in {:?}", plain.text));
        let opts = GenerateOptions { stop: vec!["never".into(), stop.into()], ..greedy(16) };
        let (events, s) = run(&mut e, &ids, &opts).unwrap();
        assert_eq!(s.text, plain.text[..at], "stop {stop:?}");
        assert_eq!(s.stop, StopReason::StopString);
        assert_eq!(events.iter().map(|ev| ev.text.as_str()).collect::<String>() + &s.tail, s.text, "the events carry the text");
        // The tokens are the plain run's, up to the one that completed the stop string.
        assert!(s.generated_tokens < plain.generated_tokens);
    }
    let (_, s) = run(&mut e, &ids, &GenerateOptions { stop: vec!["zzz".into()], ..greedy(16) }).unwrap();
    assert_eq!((s.text.as_str(), s.stop), (plain.text.as_str(), StopReason::MaxTokens));
}

#[test]
fn logprobs_are_the_log_softmax_of_the_step_logits() {
    let Some(bytes) = default_model() else { return };
    let mut e = engine(&bytes);
    let mut ids = e.tokenizer.encode(PROMPT).unwrap();
    let opts = GenerateOptions { logprobs: true, top_logprobs: 5, ..greedy(4) };
    let (events, _) = run(&mut e, &ids, &opts).unwrap();
    assert_eq!(events.len(), 4);
    for ev in &events {
        let l = logits_after(&mut e, &ids);
        let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse = max + l.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
        let top = ev.top_logprobs.as_ref().unwrap();
        assert_eq!(top.len(), 5);
        assert!((ev.logprob.unwrap() as f64 - (l[ev.id as usize] as f64 - lse)).abs() < 1e-5);
        for (t, row) in top.iter().zip(&ev.top) {
            assert!((t.logprob as f64 - (l[t.id as usize] as f64 - lse)).abs() < 1e-5, "{t:?}");
            // The alternatives are the next-token table's rows, in its order.
            assert_eq!(t.id, row.id);
            assert!(((t.logprob as f64).exp() - row.p as f64).abs() < 1e-6, "{t:?} {row:?}");
        }
        assert_eq!(top[0].id, ev.id, "greedy picks the most probable");
        ids.push(ev.id);
    }
}

/// OpenAI's frequency and presence penalties and llama.cpp's repetition penalty, written out
/// again from their definitions.
fn penalised(l: &mut [f32], generated: &[u32], window: &[u32], freq: f32, pres: f32, rep: f32) {
    let mut seen: Vec<u32> = window.to_vec();
    seen.sort();
    seen.dedup();
    for j in seen {
        let v = &mut l[j as usize];
        *v = if *v > 0.0 { *v / rep } else { *v * rep };
    }
    let mut counts: HashMap<u32, u32> = HashMap::new();
    for &g in generated {
        *counts.entry(g).or_default() += 1;
    }
    for (j, c) in counts {
        l[j as usize] -= c as f32 * freq + pres;
    }
}

#[test]
fn penalties_and_bias_pick_what_the_processed_logits_say() {
    let Some(bytes) = default_model() else { return };
    let mut e = engine(&bytes);
    let prompt = e.tokenizer.encode("Paris, Paris, Paris, Paris,").unwrap();
    let (freq, pres, rep, last_n) = (0.7, 0.4, 1.3, 8);
    let opts = GenerateOptions {
        frequency_penalty: freq,
        presence_penalty: pres,
        repetition_penalty: rep,
        repeat_last_n: last_n,
        logprobs: true,
        ..greedy(10)
    };
    let (events, _) = run(&mut e, &prompt, &opts).unwrap();
    let (plain, _) = run(&mut e, &prompt, &greedy(10)).unwrap();
    assert_ne!(
        events.iter().map(|ev| ev.id).collect::<Vec<_>>(),
        plain.iter().map(|ev| ev.id).collect::<Vec<_>>(),
        "the penalties change the text"
    );
    let mut seq = prompt.clone();
    let mut generated = Vec::new();
    for ev in &events {
        let mut l = logits_after(&mut e, &seq);
        penalised(&mut l, &generated, &seq[seq.len().saturating_sub(last_n)..], freq, pres, rep);
        assert_eq!(ev.id, argmax(&l), "token {} of {:?}", generated.len(), e.tokenizer.decode(&generated));
        generated.push(ev.id);
        seq.push(ev.id);
    }

    // The bias: -100 bans the greedy token (the second is picked), +100 forces any token.
    let ids = e.tokenizer.encode(PROMPT).unwrap();
    let (first, _) = run(&mut e, &ids, &greedy(1)).unwrap();
    let banned = BTreeMap::from([(first[0].id.to_string(), -100.0)]);
    let (ev, _) = run(&mut e, &ids, &GenerateOptions { logit_bias: banned, logprobs: true, top_logprobs: 3, ..greedy(1) }).unwrap();
    assert_eq!(ev[0].id, first[0].top[1].id);
    assert!(ev[0].top_logprobs.as_ref().unwrap().iter().all(|t| t.id != first[0].id), "a banned token has no logprob");
    let forced = BTreeMap::from([("198".to_string(), 100.0)]);
    let (ev, _) = run(&mut e, &ids, &GenerateOptions { logit_bias: forced, ..greedy(3) }).unwrap();
    assert!(ev.iter().all(|ev| ev.id == 198), "{:?}", ev.iter().map(|ev| ev.id).collect::<Vec<_>>());
}

fn schema_format(schema: Value) -> ResponseFormat {
    ResponseFormat::JsonSchema { json_schema: JsonSchema { name: "person".into(), schema: Some(schema), strict: Some(true) } }
}

fn chat_ids(e: &Engine, req: &ChatRequest, opts: &mut GenerateOptions) -> Vec<u32> {
    ChatTurn::new(&e.tokenizer, req, opts).unwrap().ids
}

#[test]
fn json_schema_output_parses_and_keeps_to_the_schema_at_temperature_1() {
    let Some(bytes) = default_model() else { return };
    let mut e = engine(&bytes);
    let schema = json!({
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer", "minimum": 0, "maximum": 120}, "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2}},
        "required": ["name", "age", "tags"],
        "additionalProperties": false
    });
    let req = ChatRequest::new(vec![ChatMessage::new("user", "Describe a person as JSON.")]);
    for seed in 0..6 {
        let sampler = SamplerConfig { temperature: 1.0, seed, ..Default::default() };
        let mut opts = GenerateOptions { sampler, response_format: schema_format(schema.clone()), ..greedy(64) };
        let ids = chat_ids(&e, &req, &mut opts);
        let (_, s) = run(&mut e, &ids, &opts).unwrap();
        let v: Value = serde_json::from_str(&s.text).unwrap_or_else(|err| panic!("seed {seed}: {:?}: {err}", s.text));
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["name", "age", "tags"], "seed {seed}: {v}");
        assert!(v["name"].as_str().unwrap().chars().count() <= 12);
        assert!((0..=120).contains(&v["age"].as_i64().unwrap()), "{v}");
        assert!(v["tags"].as_array().unwrap().iter().all(|t| t == "a" || t == "b"), "{v}");
        assert_eq!(s.stop, StopReason::GrammarEnd, "seed {seed}");
        assert!(s.grammar_ms > 0.0);
    }
    // Any object.
    let mut opts = GenerateOptions { response_format: ResponseFormat::JsonObject, ..greedy(48) };
    let ids = chat_ids(&e, &req, &mut opts);
    let (_, s) = run(&mut e, &ids, &opts).unwrap();
    if s.stop != StopReason::MaxTokens {
        assert!(serde_json::from_str::<Value>(&s.text).unwrap().is_object(), "{:?}", s.text);
    }
    assert!(s.text.starts_with('{'), "{:?}", s.text);
}

fn weather_tool() -> Value {
    json!({"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}})
}

#[test]
fn a_forced_tool_call_is_parsed_in_qwen_and_llama_templates() {
    let Some(bytes) = default_model() else { return };
    for (template, marker) in [(QWEN25_TEMPLATE, "<tool_call>"), (LLAMA31_TEMPLATE, "{\"name\": ")] {
        let mut e = engine(&with_chat_template(&bytes, template));
        let mut req = ChatRequest::new(vec![ChatMessage::new("user", "What is the weather in Paris?")]);
        req.tools = vec![json!({"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}), weather_tool()];
        req.tool_choice = Some(json!({"type": "function", "function": {"name": "get_weather"}}));
        let mut opts = greedy(40);
        let turn = ChatTurn::new(&e.tokenizer, &req, &mut opts).unwrap();
        let prompt = e.tokenizer.decode(&turn.ids);
        assert!(prompt.contains("\"get_weather\""), "the tools are in the prompt: {prompt}");
        let (events, s) = run(&mut e, &turn.ids, &opts).unwrap();
        assert!(s.text.starts_with(marker), "{:?}", s.text);
        assert!(events.iter().all(|ev| ev.text.is_empty()), "a call is held back, not streamed as prose");
        assert_eq!(s.tail, s.text);
        let reply = turn.reply(&s.text).unwrap();
        assert_eq!(reply.content, None, "{:?}", s.text);
        assert_eq!(reply.tool_calls.len(), 1);
        assert_eq!(reply.tool_calls[0].name, "get_weather");
        let args: Value = serde_json::from_str(&reply.tool_calls[0].arguments).unwrap();
        assert!(args["city"].is_string(), "{args}");

        // The call and its answer as the next turn's history.
        req.messages.push(ChatMessage {
            role: "assistant".into(),
            tool_calls: vec![ToolCall {
                id: "call_1".into(),
                kind: "function".into(),
                function: FunctionCall { name: "get_weather".into(), arguments: Value::String(reply.tool_calls[0].arguments.clone()) },
            }],
            ..Default::default()
        });
        let mut answer = ChatMessage::new("tool", "{\"temperature\": 21}");
        answer.tool_call_id = Some("call_1".into());
        req.messages.push(answer);
        req.tool_choice = Some(json!("none"));
        let mut opts = greedy(4);
        let turn = ChatTurn::new(&e.tokenizer, &req, &mut opts).unwrap();
        let prompt = e.tokenizer.decode(&turn.ids);
        // Llama 3.1's template writes a tool answer with `tojson` (a string is iterable to Jinja).
        assert!(prompt.contains("{\"temperature\": 21}") || prompt.contains(r#""{\"temperature\": 21}""#), "{prompt}");
        assert!(prompt.contains(r#"{"name": "get_weather""#), "the past call: {prompt}");
        assert!(opts.tool_grammar.is_none() && opts.hold.is_empty());
        run(&mut e, &turn.ids, &opts).unwrap();
    }
}

#[test]
fn bad_requests_are_refused_by_name_and_the_engine_runs_after() {
    let Some(bytes) = default_model() else { return };
    let mut e = engine(&bytes);
    let ids = e.tokenizer.encode(PROMPT).unwrap();
    let (_, want) = run(&mut e, &ids, &greedy(4)).unwrap();
    let bad: Vec<(GenerateOptions, &str, &str)> = vec![
        (GenerateOptions { response_format: schema_format(json!({"type": "nonsense"})), ..greedy(4) }, "response_format", "nonsense"),
        (GenerateOptions { logit_bias: BTreeMap::from([("49152".into(), 1.0)]), ..greedy(4) }, "logit_bias[49152]", "not a token id"),
        (GenerateOptions { logit_bias: BTreeMap::from([("7".into(), -101.0)]), ..greedy(4) }, "logit_bias[7]", "-100 to 100"),
        (GenerateOptions { logprobs: true, top_logprobs: 21, ..greedy(4) }, "top_logprobs", "0 to 20"),
        (GenerateOptions { stop: (0..5).map(|i| i.to_string()).collect(), ..greedy(4) }, "stop", "at most 4"),
        (GenerateOptions { frequency_penalty: 2.5, ..greedy(4) }, "frequency_penalty", "-2 to 2"),
        (GenerateOptions { repetition_penalty: 0.0, ..greedy(4) }, "repetition_penalty", "above 0"),
    ];
    for (opts, param, says) in bad {
        let err = run(&mut e, &ids, &opts).unwrap_err();
        assert_eq!(err.param_name(), Some(param), "{err}");
        assert!(err.to_string().contains(says), "{param}: {err}");
        assert_eq!(run(&mut e, &ids, &greedy(4)).unwrap().1.text, want.text, "after {param}");
    }
    // A tool message that answers no call; tools on a template without tool support.
    let mut req = ChatRequest::new(vec![ChatMessage::new("user", "hi")]);
    let mut answer = ChatMessage::new("tool", "22");
    answer.tool_call_id = Some("call_9".into());
    req.messages.push(answer);
    let err = ChatTurn::new(&e.tokenizer, &req, &mut greedy(4)).err().unwrap();
    assert_eq!(err.param_name(), Some("messages[1].tool_call_id"), "{err}");
    let mut req = ChatRequest::new(vec![ChatMessage::new("user", "hi")]);
    req.tools.push(weather_tool());
    let err = ChatTurn::new(&e.tokenizer, &req, &mut greedy(4)).err().unwrap();
    assert_eq!(err.param_name(), Some("tools"));
    assert!(err.to_string().contains("no tool support"), "{err}");
    assert_eq!(run(&mut e, &ids, &greedy(4)).unwrap().1.text, want.text);
}
