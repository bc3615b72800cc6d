//! `kestrel generate` with LLaVA models end to end on the tiny fixtures
//! (models/tests/fixtures/llava): `--image` goes through the model's own processor and
//! tokenizer and gives transformers' greedy ids; `--input-ids` + `--pixel-values` +
//! `--dump-logits` give transformers' logits (≤ 5e-3: the CLI's default f16 KV cache, the
//! decoder's stated f16-cache bound); bad inputs give a clear message and a non-zero exit code,
//! never a panic.

mod common;

use std::process::Command;

use common::{assert_clean_failure, fixture, flat, json_of, kestrel, path};
use serde_json::Value;

fn reference(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture(name).join("reference.json")).expect("reference.json");
    serde_json::from_str(&text).expect("valid json")
}

#[test]
fn image_prompt_gives_transformers_greedy_ids() {
    for (model, image, photo) in [("llava/llava15", "chelsea", "chelsea"), ("llava/llava_next", "tall", "tall_97x411")] {
        let r = reference(model);
        let photo = fixture("preprocess").join(format!("{photo}.png"));
        let dir = fixture(model);
        let args = ["generate", "--model", path(&dir), "--image", path(&photo), "--prompt", "What is in the picture?"];
        let out = kestrel(&[&args[..], &["--temperature", "0", "--max-tokens", "16", "--json"]].concat());
        let v = json_of(&out);
        let want = &r["images"][image];
        assert_eq!(v["tokens"], want["generated"], "{model}: greedy ids");
        let image_tokens = want["image_features"].as_array().expect("features").len();
        assert_eq!(v["image_tokens"].as_u64(), Some(image_tokens as u64), "{model}: image tokens");
        assert_eq!(v["prompt_tokens"].as_u64(), want["input_ids"].as_array().map(|a| a.len() as u64), "{model}: prompt tokens");
    }
}

#[test]
fn gguf_pair_gives_transformers_greedy_ids() {
    for (name, image, photo) in [("llava15", "chelsea", "chelsea"), ("llava_next", "tall", "tall_97x411")] {
        let r = reference(&format!("llava/{name}"));
        let dir = fixture("llava/gguf");
        let (model, mmproj) = (dir.join(format!("{name}.gguf")), dir.join(format!("{name}-mmproj.gguf")));
        let photo = fixture("preprocess").join(format!("{photo}.png"));
        let out = kestrel(&[
            "generate",
            "--model",
            path(&model),
            "--mmproj",
            path(&mmproj),
            "--image",
            path(&photo),
            "--prompt",
            "What is in the picture?",
            "--temperature",
            "0",
            "--max-tokens",
            "16",
            "--json",
        ]);
        assert_eq!(json_of(&out)["tokens"], r["images"][image]["generated"], "{name} GGUF pair: greedy ids");
    }
}

#[test]
fn input_ids_and_pixel_values_dump_transformers_logits() {
    let dir = fixture("llava/llava_next");
    let r = reference("llava/llava_next");
    let dump = std::env::temp_dir().join(format!("kestrel-llava-logits-{}.npy", std::process::id()));
    let out = kestrel(&[
        "generate",
        "--model",
        path(&dir),
        "--input-ids",
        path(&dir.join("input_ids_chelsea.npy")),
        "--pixel-values",
        path(&dir.join("pixel_values_chelsea.npy")),
        "--image-size",
        "300x451",
        "--temperature",
        "0",
        "--max-tokens",
        "16",
        "--dump-logits",
        path(&dump),
        "--json",
    ]);
    let v = json_of(&out);
    let want = &r["images"]["chelsea"];
    assert_eq!(v["tokens"], want["generated"]);
    let (shape, logits) = kestrel_models::npy::read_npy_f32(&dump).expect("dumped logits");
    let _ = std::fs::remove_file(&dump);
    let expected = flat(&want["generated_logits"]);
    assert_eq!(shape, vec![16, expected.len() / 16]);
    let d = logits.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(d <= 5e-3, "dumped logits max |Δ| {d}");
}

#[test]
fn bad_inputs_fail_cleanly() {
    let llava = fixture("llava/llava15");
    let next = fixture("llava/llava_next");
    let text_only = fixture("llm/llama_gqa");
    let photo = fixture("preprocess/chelsea.png");
    let run = |args: &[&str]| kestrel(&[&["generate", "--max-tokens", "2"][..], args].concat());
    assert_clean_failure(&run(&["--model", path(&text_only), "--image", path(&photo), "--prompt", "hi"]), "text-only");
    assert_clean_failure(&run(&["--model", path(&llava), "--image", "/nonexistent.png", "--prompt", "hi"]), "nonexistent.png");
    let corrupt = std::env::temp_dir().join(format!("kestrel-corrupt-{}.png", std::process::id()));
    std::fs::write(&corrupt, b"\x89PNG\r\n\x1a\nnot really").expect("write");
    let out = run(&["--model", path(&llava), "--image", path(&corrupt), "--prompt", "hi"]);
    let _ = std::fs::remove_file(&corrupt);
    assert_clean_failure(&out, "image");
    // Pixel values of the wrong shape (NeXT's five tiles given to LLaVA-1.5), and NeXT's
    // without the image size.
    let px = next.join("pixel_values_chelsea.npy");
    assert_clean_failure(&run(&["--model", path(&llava), "--pixel-values", path(&px), "--prompt", "hi"]), "--image-size");
    let out = run(&["--model", path(&llava), "--pixel-values", path(&px), "--image-size", "300x451", "--prompt", "hi"]);
    assert_clean_failure(&out, "tiles");
    assert_clean_failure(&run(&["--model", path(&next), "--pixel-values", path(&px), "--prompt", "hi"]), "--image-size");
    let ids = llava.join("input_ids_chelsea.npy");
    assert_clean_failure(&run(&["--model", path(&llava), "--pixel-values", path(&ids), "--prompt", "hi"]), "integers");
    // Image tokens without an image, and an image without a tokenizer or ids.
    assert_clean_failure(&run(&["--model", path(&llava), "--input-ids", path(&ids)]), "image");
    let t5 = fixture("llava/llava15_t5");
    assert_clean_failure(&run(&["--model", path(&t5), "--image", path(&photo), "--prompt", "hi"]), "tokenizer");
}

#[test]
fn profile_keeps_vision_language_architectures_apart() {
    let out = kestrel(&["profile", "llava-1.5-7b", "slab-deit-t"]);
    assert_clean_failure(&out, "apart from other models");
}

/// `kestrel chat --image`: the first turn is what `generate --chat --image` gives (the same
/// template, the image opening the user turn), a second turn reuses the cache; a text-only
/// model refuses the image.
#[test]
fn chat_with_an_image() {
    use std::io::Write;
    let dir = fixture("llava/llava15");
    let photo = fixture("preprocess/chelsea.png");
    let common = ["--model", path(&dir), "--image", path(&photo), "--temperature", "0", "--max-tokens", "8"];
    let out = kestrel(&[&["generate", "--chat", "--prompt", "What is in the picture?", "--json"][..], &common].concat());
    let want = json_of(&out)["text"].as_str().expect("text").to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kestrel"))
        .args([&["chat"][..], &common].concat())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run kestrel chat");
    child.stdin.take().expect("stdin").write_all(b"What is in the picture?\nAnd the colour?\n").expect("write");
    let out = child.wait_with_output().expect("chat");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(&want), "first turn differs from generate --chat");
    assert_eq!(stderr.matches("prefill:").count(), 2, "two turns: {stderr}");
    let text_only = fixture("llm/llama_gqa");
    let out = kestrel(&["chat", "--model", path(&text_only), "--image", path(&photo)]);
    assert_clean_failure(&out, "text-only");
}
