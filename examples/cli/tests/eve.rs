//! `kestrel generate` with an Eve model end to end on the tiny fixture
//! (models/tests/fixtures/eve/tiny, made by tools/eve_reference/make_eve_fixtures.py):
//! `--input-ids` (with −200 where the image goes) and `--pixel-values` give the reference's
//! greedy ids; bad inputs fail cleanly.

mod common;

use std::path::{Path, PathBuf};

use common::{assert_clean_failure, kestrel, path};
use serde_json::Value;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/tests/fixtures/eve/tiny")
}

#[test]
fn input_ids_and_pixel_values_give_the_reference_greedy_ids() {
    let dir = fixture();
    let r: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).expect("reference")).expect("json");
    let out = kestrel(&[
        "generate",
        "--model",
        path(&dir),
        "--input-ids",
        path(&dir.join("input_ids.npy")),
        "--pixel-values",
        path(&dir.join("pixel_values.npy")),
        "--temperature",
        "0",
        "--max-tokens",
        "16",
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(stdout.lines().last().expect("json line")).expect("json");
    assert_eq!(v["tokens"], r["generated"]);
    assert_eq!(v["image_tokens"], r["image_tokens"]);
    assert_eq!(v["prompt_tokens"], r["spliced_length"]);
}

#[test]
fn bad_inputs_fail_cleanly() {
    let dir = fixture();
    let run = |args: &[&str]| kestrel(&[&["generate", "--max-tokens", "2", "--model", path(&dir)][..], args].concat());
    // The image placeholder without an image; an image without a tokenizer or ids.
    assert_clean_failure(&run(&["--input-ids", path(&dir.join("input_ids.npy"))]), "image");
    assert_clean_failure(&run(&["--image", path(&dir.join("image.png")), "--prompt", "hi"]), "tokenizer");
    // Pixel values of the wrong shape (token ids given as pixels).
    let ids = dir.join("input_ids.npy");
    assert_clean_failure(&run(&["--pixel-values", path(&ids), "--input-ids", path(&ids)]), "integers");
}
