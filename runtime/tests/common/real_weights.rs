//! The real weight files that `scripts/fetch-test-weights.sh` downloads (SmolLM2 GGUF, MiniLM
//! safetensors and tokenizer), shared by the test crates of `kestrel` and `kestrel-models`
//! (included with `#[path]`).
//!
//! A test that needs one asks [`real_weight`]: `None` (the test then returns early, with a note
//! on stderr) when the file is absent — unless `KESTREL_REQUIRE_TEST_WEIGHTS=1`, which `.ci/run`
//! sets: then a missing file fails the test instead of letting it pass unexercised.

use std::path::PathBuf;

/// Where the files are: `$KESTREL_TEST_WEIGHTS`, else `target/test-weights` of the workspace
/// (both including crates sit one folder below its root).
fn dir() -> PathBuf {
    std::env::var_os("KESTREL_TEST_WEIGHTS")
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/test-weights")), PathBuf::from)
}

/// The path of the real test file `name`, or `None` when it has not been fetched (a panic
/// instead under `KESTREL_REQUIRE_TEST_WEIGHTS=1`).
pub fn real_weight(name: &str) -> Option<PathBuf> {
    let path = dir().join(name);
    if path.is_file() {
        return Some(path);
    }
    let required = std::env::var("KESTREL_REQUIRE_TEST_WEIGHTS").is_ok_and(|v| v == "1");
    assert!(!required, "{} is missing and KESTREL_REQUIRE_TEST_WEIGHTS=1 (run scripts/fetch-test-weights.sh)", path.display());
    eprintln!("skipped: {} not found (run scripts/fetch-test-weights.sh)", path.display());
    None
}
