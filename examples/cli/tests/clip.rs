//! `kestrel clip` end to end on the tiny CLIP fixtures (models/tests/fixtures/clip): `--json`
//! from `--pixel-values` / `--text-ids` matches transformers' `CLIPModel` (≤ 2e-3 per value, the
//! acceptance bound of issue #17), images and texts go through the model's own preprocessing and
//! tokenizer, and bad inputs give a clear message and a non-zero exit code, never a panic.

mod common;

use common::{assert_clean_failure, fixture, kestrel, path};
use serde_json::Value;

fn flat(v: &Value) -> Vec<f64> {
    match v {
        Value::Array(a) => a.iter().flat_map(flat).collect(),
        other => vec![other.as_f64().expect("number")],
    }
}

#[test]
fn json_matches_transformers() {
    for name in ["clip/tiny", "clip/legacy"] {
        let dir = fixture(name);
        let out = kestrel(&[
            "clip",
            "--model",
            path(&dir),
            "--pixel-values",
            path(&dir.join("pixel_values.npy")),
            "--text-ids",
            path(&dir.join("input_ids.npy")),
            "--json",
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let got: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
        let want: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).expect("reference")).expect("json");
        for key in ["image_embeds", "text_embeds", "logits_per_image"] {
            let (g, w) = (flat(&got[key]), flat(&want[key]));
            assert_eq!(g.len(), w.len(), "{name} {key}");
            let d = g.iter().zip(&w).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            assert!(d <= 2e-3, "{name} {key}: max |Δ| {d}");
        }
    }
}

#[test]
fn images_and_texts_run_through_the_model_files() {
    let photos = fixture("preprocess");
    let out = kestrel(&[
        "clip",
        "--model",
        path(&fixture("clip/tiny")),
        "--image",
        path(&photos.join("chelsea.png")),
        "--image",
        path(&photos.join("rocket.jpg")),
        "--text",
        "a photo of a cat",
        "--text",
        "the rocket on the sky!",
        "--text",
        "a dog",
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(got["image_embeds"].as_array().map(Vec::len), Some(2));
    assert_eq!(got["text_embeds"].as_array().map(Vec::len), Some(3));
    assert_eq!(flat(&got["logits_per_image"]).len(), 6);
}

#[test]
fn bad_inputs_are_clear_errors() {
    let tiny = fixture("clip/tiny");
    let legacy = fixture("clip/legacy");
    // --pixel-values of another model's size.
    let out = kestrel(&["clip", "--model", path(&tiny), "--pixel-values", path(&legacy.join("pixel_values.npy"))]);
    assert_clean_failure(&out, "this model takes [3, 3, 32, 32]");
    // Token ids given as pixel values, and pixel values as token ids.
    let out = kestrel(&["clip", "--model", path(&tiny), "--pixel-values", path(&tiny.join("input_ids.npy"))]);
    assert_clean_failure(&out, "integers");
    let out = kestrel(&["clip", "--model", path(&tiny), "--text-ids", path(&tiny.join("pixel_values.npy"))]);
    assert_clean_failure(&out, "floats");
    // A text-only CLIP given an image.
    let out = kestrel(&["clip", "--model", path(&fixture("clip/text_only")), "--image", path(&fixture("preprocess/chelsea.png"))]);
    assert_clean_failure(&out, "no vision tower");
    // A missing image, a corrupt one, nothing to do.
    let out = kestrel(&["clip", "--model", path(&tiny), "--image", "/nonexistent/cat.png"]);
    assert_clean_failure(&out, "/nonexistent/cat.png");
    let out = kestrel(&["clip", "--model", path(&tiny), "--image", path(&tiny.join("config.json"))]);
    assert_clean_failure(&out, "image");
    let out = kestrel(&["clip", "--model", path(&tiny)]);
    assert_clean_failure(&out, "give images");
    // A directory that is not a model.
    let out = kestrel(&["clip", "--model", path(&fixture("preprocess")), "--text", "a cat"]);
    assert_clean_failure(&out, "config.json");
}
