//! Tokenizers against transformers (and SentencePiece): the real SmolLM2 GGUF (byte-level BPE)
//! and MiniLM `tokenizer.json` (WordPiece) when `scripts/fetch-test-weights.sh` has fetched them,
//! the committed tiny SentencePiece GGUF and `.model` always; streaming decode; malformed inputs.
//! Reference ids: tests/fixtures/tokenizer_reference.json (make_tokenizer_fixture.py).

#[path = "../../runtime/tests/common/real_weights.rs"]
mod real_weights;

use std::path::{Path, PathBuf};

use kestrel::weights;
use kestrel_models::ModelError;
use kestrel_models::llm::tokenizer::Tokenizer;
use real_weights::real_weight;
use serde_json::{Value, json};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn reference() -> Value {
    let text = std::fs::read_to_string(fixture("tokenizer_reference.json")).expect("read reference");
    serde_json::from_str(&text).expect("parse reference")
}

fn gguf_tokenizer(path: &Path) -> Tokenizer {
    let src = weights::open(path).expect("open GGUF");
    Tokenizer::from_gguf_metadata(&src.metadata()).expect("tokenizer from GGUF metadata")
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().expect("id list").iter().map(|x| x.as_u64().expect("id") as u32).collect()
}

/// Streams `ids` one at a time and returns the concatenated pieces (plus `finish`).
fn stream(tok: &Tokenizer, ids: &[u32]) -> String {
    let mut dec = tok.stream_decoder(false);
    let mut out = String::new();
    for &id in ids {
        out += &dec.push(id).expect("push");
    }
    out + &dec.finish().expect("finish")
}

/// Checks every case of a reference section: ids with and without special tokens, decode,
/// and that streaming reproduces decode.
fn check_cases(tok: &Tokenizer, section: &Value, ids_key: &str) {
    for case in section["cases"].as_array().expect("cases") {
        let text = case["text"].as_str().expect("text");
        let want = ids(&case[ids_key]);
        assert_eq!(tok.encode(text, false).expect("encode"), want, "ids of {text:?}");
        if let Some(with_special) = case.get("ids_add_special") {
            assert_eq!(tok.encode(text, true).expect("encode"), ids(with_special), "special ids of {text:?}");
        }
        let decoded = tok.decode(&want).expect("decode");
        if ids_key == "ids" {
            assert_eq!(decoded, case["decoded"].as_str().expect("decoded"), "decode of {text:?}");
        }
        assert_eq!(stream(tok, &want), decoded, "streamed decode of {text:?}");
    }
}

#[test]
fn smollm2_gguf_matches_transformers() {
    let Some(path) = real_weight("SmolLM2-135M-Instruct.Q4_1.gguf") else { return };
    let tok = gguf_tokenizer(&path);
    let r = &reference()["smollm2"];
    assert_eq!(tok.vocab_size(), 49152);
    assert_eq!(tok.vocab_size() as u64, r["vocab_size"].as_u64().expect("size"));
    check_cases(&tok, r, "ids");
    // transformers' own GGUF reading splits as GPT-2 does, ignoring tokenizer.ggml.pre =
    // "smollm" (numerals isolated first): it agrees wherever the text has no non-digit numeral.
    for case in r["cases"].as_array().expect("cases") {
        let text = case["text"].as_str().expect("text");
        if !text.chars().any(|c| c.is_numeric() && !c.is_ascii_digit()) {
            assert_eq!(ids(&case["ids_transformers_gguf"]), ids(&case["ids"]), "{text:?}");
        }
    }
    // The ~500-token prompt really is that long, and special tokens written in text are single ids.
    let long = r["cases"][5]["ids"].as_array().map(Vec::len);
    assert!(long.is_some_and(|n| n > 450), "long prompt has {long:?} tokens");
    assert_eq!(tok.encode("<|im_start|>user\nhi<|im_end|>", false).expect("encode")[..1], [1]);
    // Metadata: no BOS added (add_bos_token false), EOS <|im_end|>, <|endoftext|> also ends.
    assert_eq!(tok.bos_id(), Some(1));
    assert_eq!(tok.eos_ids(), &[2, 0]);
    assert_eq!(tok.token_text(2).as_deref(), r["eos_token"].as_str());
    assert_eq!(tok.token_text(1).as_deref(), r["bos_token"].as_str());
    assert_eq!(tok.chat_template(), r["chat_template"].as_str());
    assert!(tok.token_text(49151).is_some());
    assert_eq!(tok.token_text(49152), None);
}

#[test]
fn smollm2_stream_holds_back_split_characters() {
    let Some(path) = real_weight("SmolLM2-135M-Instruct.Q4_1.gguf") else { return };
    let tok = gguf_tokenizer(&path);
    // The crab's four UTF-8 bytes span several byte-level tokens: nothing is emitted until the
    // last one, then the whole character.
    let crab = tok.encode("🦀", false).expect("encode");
    assert!(crab.len() >= 2, "🦀 is {crab:?}");
    let mut dec = tok.stream_decoder(false);
    for &id in &crab[..crab.len() - 1] {
        assert_eq!(dec.push(id).expect("push"), "", "partial character emitted");
    }
    assert_eq!(dec.push(crab[crab.len() - 1]).expect("push"), "🦀");
    assert_eq!(dec.finish().expect("finish"), "");
    stream_invalid_bytes(&tok, |b| tok.token_id(&byte_level_char(b).to_string()).expect("byte token"));
}

/// GPT-2's byte-level spelling of byte `b`.
fn byte_level_char(b: u8) -> char {
    let printable = |x: u8| matches!(x, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    if printable(b) {
        return char::from(b);
    }
    let rank = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(0x100 + rank).expect("char")
}

/// Invalid UTF-8 from byte tokens: a lone continuation byte, a lead byte followed by ASCII, and
/// a trailing lead byte never panic; each becomes U+FFFD once it can no longer complete.
fn stream_invalid_bytes(tok: &Tokenizer, byte: impl Fn(u8) -> u32) {
    let a = tok.encode("a", false).expect("encode");
    let mut seq = vec![byte(0x80)];
    seq.extend(&a);
    seq.push(byte(0xE6));
    seq.extend(&a);
    seq.push(byte(0xF0));
    let mut dec = tok.stream_decoder(false);
    let mut pieces = Vec::new();
    for &id in &seq {
        pieces.push(dec.push(id).expect("push"));
    }
    let tail = dec.finish().expect("finish");
    let all: String = pieces.concat() + &tail;
    assert_eq!(all, tok.decode(&seq).expect("decode"));
    // (SentencePiece decodes "a" as " a".)
    assert_eq!(all.replace(' ', ""), "\u{FFFD}a\u{FFFD}a\u{FFFD}", "pieces {pieces:?} + {tail:?}");
    assert_eq!(pieces[0], "", "a lone byte is held until the next token");
    assert!(tail.ends_with('\u{FFFD}'), "finish flushes the incomplete trailing byte");
    // Ids outside the vocabulary are errors, not panics.
    let size = tok.vocab_size() as u32;
    assert!(matches!(tok.decode(&[size]), Err(ModelError::Tokenizer(_))));
    assert!(matches!(tok.stream_decoder(false).push(u32::MAX), Err(ModelError::Tokenizer(_))));
}

#[test]
fn sentencepiece_gguf_matches_sentencepiece() {
    let tok = gguf_tokenizer(&fixture("spm_tiny.gguf"));
    let r = &reference()["spm_tiny"];
    assert_eq!(tok.vocab_size() as u64, r["vocab_size"].as_u64().expect("size"));
    // SentencePiece's own ids (the dummy prefix is one `▁` before the text, whatever it starts
    // with); transformers agrees except on text starting with spaces, where its Metaspace
    // merges the prefix into the existing `▁` and loses a space.
    check_cases(&tok, r, "sentencepiece_ids");
    for case in r["cases"].as_array().expect("cases") {
        let text = case["text"].as_str().expect("text");
        let ids = ids(&case["sentencepiece_ids"]);
        assert_eq!(tok.decode(&ids).expect("decode"), text, "SentencePiece decoding is lossless");
        if !text.starts_with(' ') {
            assert_eq!(ids, self::ids(&case["ids"]), "transformers' ids of {text:?}");
        }
        // add_bos_token is set: BOS (id 1) first.
        let with_bos = tok.encode(text, true).expect("encode");
        assert_eq!(with_bos.first(), Some(&1));
        assert_eq!(&with_bos[1..], &ids[..]);
    }
    assert_eq!(tok.bos_id(), Some(1));
    assert_eq!(tok.eos_ids(), &[2]);
    assert_eq!(tok.token_text(1).as_deref(), Some("<s>"));
    // Special tokens written in the text: no dummy prefix before a leading one.
    let ids = tok.encode("<s>hello", false).expect("encode");
    assert_eq!(ids[0], 1);
    stream_invalid_bytes(&tok, |b| tok.token_id(&format!("<0x{b:02X}>")).expect("byte token"));
}

#[test]
fn sentencepiece_model_file_matches_sentencepiece() {
    let tok = Tokenizer::from_sentencepiece(&fixture("spm_tiny.model")).expect("load spm_tiny.model");
    let r = &reference()["spm_tiny"];
    assert_eq!(tok.vocab_size() as u64, r["vocab_size"].as_u64().expect("size"));
    check_cases(&tok, r, "sentencepiece_ids");
    assert_eq!(tok.bos_id(), Some(1));
    assert_eq!(tok.eos_ids(), &[2]);
    assert_eq!(tok.encode("hello", true).expect("encode")[0], 1);
    // Truncated and garbage files are typed errors.
    let bytes = std::fs::read(fixture("spm_tiny.model")).expect("read");
    let dir = std::env::temp_dir().join(format!("kestrel-spm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for (tag, data) in [("truncated", &bytes[..bytes.len() / 2]), ("garbage", &[0xFFu8; 64][..]), ("empty", &[][..])] {
        let path = dir.join(tag);
        std::fs::write(&path, data).expect("write");
        match Tokenizer::from_sentencepiece(&path) {
            Err(ModelError::Tokenizer(detail)) => eprintln!("{tag}: {detail}"),
            Err(e) => panic!("{tag}: wrong error kind {e}"),
            Ok(_) => panic!("{tag}: accepted"),
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn minilm_tokenizer_json_matches_transformers() {
    let Some(path) = real_weight("tokenizer.json") else { return };
    let tok = Tokenizer::from_file(&path, None).expect("load tokenizer.json");
    let r = &reference()["minilm"];
    assert_eq!(tok.vocab_size() as u64, r["vocab_size"].as_u64().expect("size"));
    // Its truncation (128) and padding are off: the long text is not cut.
    check_cases(&tok, r, "ids");
    let long = "word ".repeat(300);
    assert_eq!(tok.encode(&long, true).expect("encode").len(), 302);
    assert_eq!(tok.bos_id(), None);
    assert!(tok.eos_ids().is_empty());
    assert_eq!(tok.chat_template(), None);
}

/// A tokenizer.json written by hand (word-level, no post-processor) with a tokenizer_config.json
/// that asks for BOS and names a template list.
#[test]
fn tokenizer_json_with_config() {
    let dir = std::env::temp_dir().join(format!("kestrel-tokenizer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let special = |id: u32, content: &str| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
               "normalized": false, "special": true})
    };
    let tokenizer = json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [special(0, "<s>"), special(1, "</s>"), special(2, "<|im_end|>")],
        "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "unk_token": "[UNK]",
                  "vocab": {"<s>": 0, "</s>": 1, "<|im_end|>": 2, "hello": 3, "world": 4, "[UNK]": 5}}
    });
    let config = json!({
        "add_bos_token": true, "bos_token": {"content": "<s>", "special": true}, "eos_token": "</s>",
        "chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]
    });
    let tok_path = dir.join("tokenizer.json");
    let cfg_path = dir.join("tokenizer_config.json");
    std::fs::write(&tok_path, tokenizer.to_string()).expect("write");
    std::fs::write(&cfg_path, config.to_string()).expect("write");
    let tok = Tokenizer::from_file(&tok_path, Some(&cfg_path)).expect("load");
    assert_eq!(tok.encode("hello world", true).expect("encode"), [0, 3, 4]);
    assert_eq!(tok.encode("hello<|im_end|>world", false).expect("encode"), [3, 2, 4]);
    assert_eq!(tok.bos_id(), Some(0));
    assert_eq!(tok.eos_ids(), &[1, 2]);
    assert_eq!(tok.chat_template(), Some("D"));
    assert_eq!(tok.decode(&[3, 4]).expect("decode"), "hello world");
    assert_eq!(tok.decode_with(&[0, 3, 1], true).expect("decode"), "hello");

    // Broken inputs are typed errors.
    std::fs::write(&cfg_path, r#"{"bos_token": "<nope>"}"#).expect("write");
    assert!(matches!(Tokenizer::from_file(&tok_path, Some(&cfg_path)), Err(ModelError::Tokenizer(_))));
    std::fs::write(&cfg_path, r#"{"add_bos_token": "yes"}"#).expect("write");
    assert!(matches!(Tokenizer::from_file(&tok_path, Some(&cfg_path)), Err(ModelError::Tokenizer(_))));
    std::fs::write(&tok_path, "{not json").expect("write");
    assert!(matches!(Tokenizer::from_file(&tok_path, None), Err(ModelError::Tokenizer(_))));
    assert!(matches!(Tokenizer::from_file(&dir.join("missing.json"), None), Err(ModelError::Io { .. })));
    // A merge whose result is longer than any token makes tokenizers' BPE builder panic.
    let overlong = json!({"version": "1.0", "added_tokens": [], "normalizer": null, "pre_tokenizer": null,
        "post_processor": null, "decoder": null,
        "model": {"type": "BPE", "vocab": {"aaaa": 0, "bbbb": 1}, "merges": [["aaaa", "bbbb"]]}});
    std::fs::write(&tok_path, overlong.to_string()).expect("write");
    assert!(matches!(Tokenizer::from_file(&tok_path, None), Err(ModelError::Tokenizer(_))));
    std::fs::remove_dir_all(&dir).ok();
}

/// A byte-level vocabulary built here: every byte, a few merges, a control token.
fn tiny_gpt2() -> Value {
    let mut tokens: Vec<String> = (0..=255u8).map(|b| byte_level_char(b).to_string()).collect();
    let merges = ["h e", "l l", "he ll", "hell o", "Ġ w"];
    for m in merges {
        tokens.push(m.replace(' ', ""));
    }
    tokens.push("<|eot|>".into());
    let mut types = vec![1; tokens.len()];
    *types.last_mut().expect("last") = 3;
    json!({
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "llama-bpe",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.merges": merges,
        "tokenizer.ggml.eos_token_id": 261,
        "tokenizer.ggml.bos_token_id": 261,
        "tokenizer.ggml.add_bos_token": true,
    })
}

#[test]
fn byte_level_gguf_built_here() {
    let tok = Tokenizer::from_gguf_metadata(&tiny_gpt2()).expect("tiny gpt2");
    let h = u32::from(b'h');
    // "hello" merges to one token (id 259); " w" to 260; then "o", "r", "l", "d" bytes.
    assert_eq!(tok.encode("hello world", false).expect("encode"), [259, 260, 111, 114, 108, 100]);
    assert_eq!(tok.encode("hi<|eot|>", true).expect("encode"), [261, h, 105, 261]);
    assert_eq!(tok.decode(&[259, 260, 111]).expect("decode"), "hello wo");
    assert_eq!(tok.eos_ids(), &[261]);
    assert_eq!(stream(&tok, &tok.encode("héllo 日本", false).expect("encode")), "héllo 日本");
}

/// A change made to valid metadata.
type Edit = dyn Fn(&mut serde_json::Map<String, Value>);

#[test]
fn malformed_gguf_metadata_is_an_error() {
    let good = tiny_gpt2();
    let broken = |edit: &Edit| {
        let mut meta = good.as_object().expect("object").clone();
        edit(&mut meta);
        Tokenizer::from_gguf_metadata(&Value::Object(meta))
    };
    let cases: Vec<(&str, Box<Edit>)> = vec![
        ("no model", Box::new(|m| drop(m.remove("tokenizer.ggml.model")))),
        ("unknown model", Box::new(|m| drop(m.insert("tokenizer.ggml.model".into(), json!("rwkv"))))),
        ("no tokens", Box::new(|m| drop(m.remove("tokenizer.ggml.tokens")))),
        ("empty tokens", Box::new(|m| drop(m.insert("tokenizer.ggml.tokens".into(), json!([]))))),
        ("tokens not strings", Box::new(|m| drop(m.insert("tokenizer.ggml.tokens".into(), json!([1, 2]))))),
        ("no merges", Box::new(|m| drop(m.remove("tokenizer.ggml.merges")))),
        ("merge without space", Box::new(|m| drop(m.insert("tokenizer.ggml.merges".into(), json!(["he"]))))),
        ("merge of unknown tokens", Box::new(|m| drop(m.insert("tokenizer.ggml.merges".into(), json!(["xyz© qq"]))))),
        ("merge result unknown", Box::new(|m| drop(m.insert("tokenizer.ggml.merges".into(), json!(["a b"]))))),
        ("bos out of range", Box::new(|m| drop(m.insert("tokenizer.ggml.bos_token_id".into(), json!(262))))),
        ("eos negative", Box::new(|m| drop(m.insert("tokenizer.ggml.eos_token_id".into(), json!(-1))))),
        ("types too short", Box::new(|m| drop(m.insert("tokenizer.ggml.token_type".into(), json!([1]))))),
        ("flag not bool", Box::new(|m| drop(m.insert("tokenizer.ggml.add_bos_token".into(), json!(1))))),
        ("template not string", Box::new(|m| drop(m.insert("tokenizer.chat_template".into(), json!([]))))),
        ("llama without scores", Box::new(|m| drop(m.insert("tokenizer.ggml.model".into(), json!("llama"))))),
    ];
    for (what, edit) in cases {
        match broken(edit.as_ref()) {
            Err(ModelError::Tokenizer(detail)) => eprintln!("{what}: {detail}"),
            Err(e) => panic!("{what}: wrong error kind {e}"),
            Ok(_) => panic!("{what}: accepted"),
        }
    }
    assert!(matches!(Tokenizer::from_gguf_metadata(&json!([1])), Err(ModelError::Tokenizer(_))));
}
