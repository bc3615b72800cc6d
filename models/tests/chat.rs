//! Chat templates: Jinja templates rendered exactly as transformers' `apply_chat_template` does
//! (SmolLM2's own template, Llama 2's, a block-layout one; references in
//! tests/fixtures/tokenizer_reference.json), the built-in Vicuna v1 and ChatML formats, and
//! template errors.

use std::path::{Path, PathBuf};

use kestrel::weights;
use kestrel_models::ModelError;
use kestrel_models::llm::chat::{ChatMessage, ChatTemplate, VICUNA_SYSTEM};
use kestrel_models::llm::tokenizer::Tokenizer;
use serde_json::Value;

fn reference() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer_reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("read reference")).expect("parse reference")
}

fn messages(v: &Value) -> Vec<ChatMessage> {
    let list = v.as_array().expect("messages");
    list.iter().map(|m| ChatMessage::new(m["role"].as_str().expect("role"), m["content"].as_str().expect("content"))).collect()
}

fn text(v: &Value) -> &str {
    v.as_str().expect("string")
}

#[test]
fn smollm2_template_matches_transformers() {
    let r = &reference()["smollm2"];
    let template = ChatTemplate::Jinja(text(&r["chat_template"]).to_owned());
    let (bos, eos) = (text(&r["bos_token"]), text(&r["eos_token"]));
    for case in r["chat"].as_array().expect("chat") {
        let msgs = messages(case.get("messages").unwrap_or(&r["messages"]));
        let add_gen = case["add_generation_prompt"].as_bool().expect("flag");
        let rendered = template.render(&msgs, add_gen, bos, eos).expect("render");
        assert_eq!(rendered, text(&case["rendered"]), "add_generation_prompt = {add_gen}");
    }
}

/// With the real GGUF: its template is the fixture's, and the rendered prompt tokenizes to
/// transformers' ids.
#[test]
fn smollm2_gguf_prompt_ids() {
    let dir = std::env::var_os("KESTREL_TEST_WEIGHTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-weights"));
    let path = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    if !path.exists() {
        eprintln!("skipped: {} not found (run scripts/fetch-test-weights.sh)", path.display());
        return;
    }
    let tok = Tokenizer::from_gguf_metadata(&weights::open(&path).expect("open").metadata()).expect("tokenizer");
    let r = &reference()["smollm2"];
    let template = ChatTemplate::from_tokenizer(&tok).expect("the GGUF has a template");
    assert_eq!(template, ChatTemplate::Jinja(text(&r["chat_template"]).to_owned()));
    let bos = tok.bos_id().and_then(|id| tok.token_text(id)).expect("bos");
    let eos = tok.eos_ids().first().and_then(|&id| tok.token_text(id)).expect("eos");
    for case in r["chat"].as_array().expect("chat") {
        let msgs = messages(case.get("messages").unwrap_or(&r["messages"]));
        let add_gen = case["add_generation_prompt"].as_bool().expect("flag");
        let prompt = template.render(&msgs, add_gen, &bos, &eos).expect("render");
        let want: Vec<u32> = case["ids"].as_array().expect("ids").iter().map(|x| x.as_u64().expect("id") as u32).collect();
        assert_eq!(tok.encode(&prompt, true).expect("encode"), want);
    }
}

#[test]
fn jinja_features_match_transformers() {
    for case in reference()["templates"].as_array().expect("templates") {
        let template = ChatTemplate::Jinja(text(&case["template"]).to_owned());
        let add_gen = case["add_generation_prompt"].as_bool().expect("flag");
        let rendered =
            template.render(&messages(&case["messages"]), add_gen, text(&case["bos_token"]), text(&case["eos_token"])).expect("render");
        assert_eq!(rendered, text(&case["rendered"]), "{} (add_generation_prompt = {add_gen})", text(&case["name"]));
    }
}

#[test]
fn raise_exception_and_bad_templates_are_errors() {
    let llama2 = reference()["templates"][0]["template"].as_str().expect("template").to_owned();
    let twice = [ChatMessage::user("a"), ChatMessage::user("b")];
    match ChatTemplate::Jinja(llama2).render(&twice, true, "<s>", "</s>") {
        Err(ModelError::Template(detail)) => {
            eprintln!("{detail}");
            assert!(detail.contains("roles must alternate"), "{detail}");
        }
        other => panic!("expected a template error, got {other:?}"),
    }
    for bad in ["{% for m in messages %}", "{{ messages[0]['role'] }}", "{{ 1 + }}", "{{ 'a'.nosuchmethod() }}"] {
        match ChatTemplate::Jinja(bad.into()).render(&[], false, "", "") {
            Err(ModelError::Template(detail)) => eprintln!("{bad}: {detail}"),
            other => panic!("{bad}: expected a template error, got {other:?}"),
        }
    }
}

#[test]
fn vicuna_v1_is_llavas_format() {
    let conv = [ChatMessage::user("What is in the image?"), ChatMessage::assistant("A cat."), ChatMessage::user("Color?")];
    let prompt = ChatTemplate::Vicuna1.render(&conv, true, "<s>", "</s>").expect("render");
    assert_eq!(prompt, format!("{VICUNA_SYSTEM} USER: What is in the image? ASSISTANT: A cat.</s>USER: Color? ASSISTANT:"));
    assert!(VICUNA_SYSTEM.starts_with("A chat between a curious user and an artificial intelligence assistant. "));
    assert!(VICUNA_SYSTEM.ends_with("gives helpful, detailed, and polite answers to the user's questions."));
    // A leading system message replaces the default; an empty message is just "ROLE:".
    let with_system = [ChatMessage::system("Be brief."), ChatMessage::user("Hi"), ChatMessage::assistant("")];
    let prompt = ChatTemplate::Vicuna1.render(&with_system, false, "<s>", "</s>").expect("render");
    assert_eq!(prompt, "Be brief. USER: Hi ASSISTANT:");
    let tool = [ChatMessage::new("tool", "x")];
    assert!(matches!(ChatTemplate::Vicuna1.render(&tool, true, "", ""), Err(ModelError::Template(_))));
}

#[test]
fn chatml_format() {
    let conv = [ChatMessage::system("S"), ChatMessage::user("Hi"), ChatMessage::assistant("Hello")];
    let prompt = ChatTemplate::ChatMl.render(&conv, true, "<s>", "</s>").expect("render");
    assert_eq!(
        prompt,
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(ChatTemplate::ChatMl.render(&conv[1..2], false, "", "").expect("render"), "<|im_start|>user\nHi<|im_end|>\n");
}

#[test]
fn nested_loops_run_out_of_fuel_quickly() {
    // 10^10 iterations unbounded (about 20 minutes before the bound), three levels forever.
    let hostile = [
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}ok",
        "{% for i in range(100000) %}{% for j in range(100000) %}{% for k in range(100000) %}{% endfor %}{% endfor %}{% endfor %}ok",
    ];
    for source in hostile {
        let start = std::time::Instant::now();
        match ChatTemplate::Jinja(source.into()).render(&[ChatMessage::user("hi")], true, "", "") {
            Err(ModelError::Template(detail)) => assert!(detail.contains("budget"), "{detail}"),
            other => panic!("expected a template error, got {other:?}"),
        }
        let secs = start.elapsed().as_secs_f64();
        assert!(secs < 30.0, "the bound took {secs:.1} s");
        eprintln!("stopped after {secs:.2} s");
    }
}

#[test]
fn long_conversations_fit_the_template_budget() {
    // SmolLM2's real template over 2 000 messages renders in full.
    let template = text(&reference()["smollm2"]["chat_template"]).to_owned();
    let convo: Vec<ChatMessage> =
        (0..2000).map(|i| if i % 2 == 0 { ChatMessage::user(format!("q{i}")) } else { ChatMessage::assistant(format!("a{i}")) }).collect();
    let text = ChatTemplate::Jinja(template).render(&convo, true, "", "").expect("render");
    assert!(text.contains("q1998") && text.contains("a1999"), "{}", &text[text.len().saturating_sub(200)..]);
}
