//! Shared harness of the LLM decoder tests: the GPU context, the fixture models and their
//! reference logits, and the optional real SmolLM2 GGUF.
#![allow(dead_code)]

#[path = "../../../runtime/tests/common/real_weights.rs"]
mod real_weights;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use kestrel::Quant;
use kestrel::{Context, ContextOptions, DType};
use kestrel_models::llm::decoder::{Decoder, DecoderOptions};
use kestrel_models::llm::load::{LoadedModel, load};
use kestrel_models::llm::weights::LoadOptions;
use real_weights::real_weight;
use serde_json::Value;

/// The device with every fast path it offers.
pub fn ctx() -> Arc<Context> {
    static C: OnceLock<Arc<Context>> = OnceLock::new();
    C.get_or_init(|| match Context::new(&ContextOptions::from_env()) {
        Ok(c) => c,
        Err(e) => panic!("cannot create a GPU context (is lavapipe installed?): {e}"),
    })
    .clone()
}

/// Runs long GPU tests one at a time. wgpu's GL backend holds its adapter context while a
/// submission executes and panics ("Could not lock adapter context") when another thread waits
/// for it longer than its timeout — which a real model's passes on llvmpipe can exceed.
pub fn serial() -> MutexGuard<'static, ()> {
    static M: Mutex<()> = Mutex::new(());
    M.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `models/tests/fixtures/llm/NAME`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llm").join(name)
}

/// A JSON fixture.
pub fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A tiny model's reference: the token ids and the logits at every position.
pub struct Reference {
    pub ids: Vec<u32>,
    pub logits: Vec<Vec<f32>>,
}

/// `fixtures/llm/NAME/reference.json`.
pub fn reference(name: &str) -> Reference {
    let v = read_json(&fixture(name).join("reference.json"));
    let ids = v["ids"].as_array().expect("ids").iter().map(|x| x.as_u64().expect("id") as u32).collect();
    let logits = v["logits"]
        .as_array()
        .expect("logits")
        .iter()
        .map(|row| row.as_array().expect("row").iter().map(|x| x.as_f64().expect("logit") as f32).collect())
        .collect();
    Reference { ids, logits }
}

/// Loads the model at `path` (q/k/v and gate/up stacked where possible).
pub fn load_model(path: &Path, quant: Quant, fold_repbn: bool) -> LoadedModel {
    load_model_with(path, &LoadOptions { quant, fold_repbn, fuse_projections: true })
}

/// Loads the model at `path` with `opts`.
pub fn load_model_with(path: &Path, opts: &LoadOptions) -> LoadedModel {
    load(&ctx(), path, opts, &mut |_, _| {}).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A decoder over a tiny fixture model with an f32 (or `kv`) cache of `context` positions.
pub fn tiny_decoder(name: &str, quant: Quant, fold_repbn: bool, kv: DType, context: usize) -> Decoder {
    tiny_decoder_with(name, &LoadOptions { quant, fold_repbn, fuse_projections: true }, kv, context)
}

/// [`tiny_decoder`] loaded with `opts`.
pub fn tiny_decoder_with(name: &str, opts: &LoadOptions, kv: DType, context: usize) -> Decoder {
    let m = load_model_with(&fixture(name), opts);
    Decoder::new(&ctx(), m.config, m.weights, &DecoderOptions { context: Some(context), kv_dtype: Some(kv) }).expect("decoder")
}

/// Largest absolute difference.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// The SmolLM2 GGUF, or `None` (with a note) when it has not been fetched (see
/// [`real_weight`]).
pub fn smollm2() -> Option<PathBuf> {
    real_weight("SmolLM2-135M-Instruct.Q4_1.gguf")
}
