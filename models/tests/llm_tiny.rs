//! The decoder on tiny random-weight Hugging Face models (fixtures/make_llm_fixtures.py)
//! against transformers' float32 logits.
//!
//! Tolerances (absolute, on logits of magnitude ~1–10):
//! - f32 weights and f32 KV cache vs transformers: ≤ 1e-3 at every position.
//! - KV-cache decode (prefill of a prefix, then one token per step) vs a fresh full prefill of
//!   the same prefix: ≤ 1e-4.
//! - f16 KV cache vs transformers: ≤ 5e-3 (keys and values rounded to f16; measured 6e-4).
//! - SLAB-LLaMA PRepBN folded into the linears vs run as a separate affine op: ≤ 1e-4 relative
//!   to the largest logit.
//! - The same checkpoint converted to a Kestrel model file: f32 ≤ 1e-3; w8 ≤ 0.15.

mod llm_common;

use kestrel::Quant;
use kestrel::{Context, ContextOptions, DType};
use kestrel_models::llm::config::{MlpKind, NormKind};
use kestrel_models::llm::decoder::{Decoder, DecoderOptions};
use kestrel_models::llm::load::load;
use kestrel_models::llm::weights::{LoadOptions, Stacked};
use llm_common::{max_abs_diff, reference, tiny_decoder, tiny_decoder_with};

/// Runs the reference ids through `dec`: a prefill of the first `split` tokens, then one token
/// per step; returns the logits after each position from `split - 1` on.
fn incremental(dec: &mut Decoder, ids: &[u32], split: usize) -> Vec<Vec<f32>> {
    let mut rows = vec![dec.prefill(&ids[..split]).expect("prefill").to_vec().expect("readback")];
    for &id in &ids[split..] {
        rows.push(dec.decode_step(id).expect("decode").to_vec().expect("readback"));
    }
    rows
}

/// Every position's logits of `name` against transformers, within `tol`.
fn check_against_reference(name: &str, kv: DType, tol: f32) {
    let r = reference(name);
    let mut dec = tiny_decoder(name, Quant::F32, true, kv, 32);
    let split = 5;
    let rows = incremental(&mut dec, &r.ids, split);
    let mut worst = 0.0f32;
    for (i, row) in rows.iter().enumerate() {
        let d = max_abs_diff(row, &r.logits[split - 1 + i]);
        assert!(d <= tol, "{name}: position {}: max |Δlogit| {d} > {tol}", split - 1 + i);
        worst = worst.max(d);
    }
    eprintln!("{name} ({kv:?} cache): max |Δlogit| vs transformers {worst:e}");
}

#[test]
fn llama_gqa_matches_transformers() {
    check_against_reference("llama_gqa", DType::F32, 1e-3);
}

#[test]
fn llama_with_biases_tied_and_linear_rope_matches_transformers() {
    let m = llm_common::load_model(&llm_common::fixture("llama_bias"), Quant::F32, true);
    assert!(m.config.qkv_bias && m.config.o_bias && m.config.tie_embeddings, "{:?}", m.config);
    check_against_reference("llama_bias", DType::F32, 1e-3);
}

#[test]
fn pangu_pi_layers_match_reference() {
    let m = llm_common::load_model(&llm_common::fixture("pangu_pi"), Quant::F32, true);
    assert_eq!((m.config.mlp, m.config.aug_shortcut, m.config.qkv_bias, m.config.o_bias), (MlpKind::PanguVanilla, Some(16), true, false));
    check_against_reference("pangu_pi", DType::F32, 1e-3);
}

#[test]
fn slab_repbn_folded_matches_reference() {
    let m = llm_common::load_model(&llm_common::fixture("slab_repbn"), Quant::F32, true);
    assert_eq!(m.config.norm, NormKind::RepBn);
    check_against_reference("slab_repbn", DType::F32, 1e-3);
}

#[test]
fn slab_repbn_folded_equals_unfolded() {
    let r = reference("slab_repbn");
    let mut folded = tiny_decoder("slab_repbn", Quant::F32, true, DType::F32, 32);
    let mut kept = tiny_decoder("slab_repbn", Quant::F32, false, DType::F32, 32);
    let a = folded.prefill(&r.ids).expect("prefill").to_vec().expect("readback");
    let b = kept.prefill(&r.ids).expect("prefill").to_vec().expect("readback");
    let scale = b.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let rel = max_abs_diff(&a, &b) / scale;
    eprintln!("slab_repbn folded vs unfolded: max |Δ| / max |logit| = {rel:e}");
    assert!(rel <= 1e-4, "folded vs unfolded differ by {rel:e} (relative)");
}

#[test]
fn stacked_projections_equal_separate_ones() {
    // q|k|v and gate|up stacked into one linear each vs three and two linears: every output
    // element is the same dot product over the same (identically quantised) row, so only the
    // kernels' accumulation order may differ — f32 rounding, ≤ 1e-5 on these logits (|logit| ≲ 5;
    // measured: bit-identical on lavapipe and llvmpipe).
    // Covers each storage (f32/f16 dense, w8/w4 packed, SLAB's folded biases, q/k/v biases) and
    // both prefill (matmul) and decode (GEMV) steps.
    for name in ["llama_gqa", "llama_bias", "slab_repbn"] {
        let r = reference(name);
        for quant in [Quant::F32, Quant::F16, Quant::W8, Quant::W4] {
            let opts = |fuse_projections| LoadOptions { quant, fold_repbn: true, fuse_projections };
            let mut fused = tiny_decoder_with(name, &opts(true), DType::F32, 32);
            let mut separate = tiny_decoder_with(name, &opts(false), DType::F32, 32);
            assert!(fused.weights().layers.iter().all(|l| matches!((&l.qkv, &l.gate_up), (Stacked::Fused(_), Stacked::Fused(_)))));
            assert!(separate.weights().layers.iter().all(|l| matches!((&l.qkv, &l.gate_up), (Stacked::Separate(_), Stacked::Separate(_)))));
            let (a, b) = (incremental(&mut fused, &r.ids, 5), incremental(&mut separate, &r.ids, 5));
            let d = a.iter().zip(&b).map(|(x, y)| max_abs_diff(x, y)).fold(0.0, f32::max);
            eprintln!("{name} {}: stacked vs separate max |Δlogit| {d:e}", quant.name());
            assert!(d <= 1e-5, "{name} {}: stacked vs separate max |Δlogit| {d}", quant.name());
        }
    }
}

#[test]
fn a_stack_larger_than_the_largest_buffer_stays_separate() {
    // llama_gqa's gate|up stack is 2·128·64 f32 = 64 KiB; q|k|v 32 KiB; the embedding 25 KiB.
    // With buffers limited to 48 KiB (as phones limit them, only larger) q|k|v still stacks and
    // gate|up loads as two linears; the logits match transformers as before.
    let opts = ContextOptions { max_buffer_override: Some(48 << 10), weight_textures: Some(false), ..ContextOptions::from_env() };
    let ctx = Context::new(&opts).expect("GPU context");
    let load_opts = LoadOptions { quant: Quant::F32, fold_repbn: true, fuse_projections: true };
    let m = load(&ctx, &llm_common::fixture("llama_gqa"), &load_opts, &mut |_, _| {}).expect("load");
    assert!(m.weights.layers.iter().all(|l| matches!((&l.qkv, &l.gate_up), (Stacked::Fused(_), Stacked::Separate(_)))));
    let r = reference("llama_gqa");
    let mut dec =
        Decoder::new(&ctx, m.config, m.weights, &DecoderOptions { context: Some(32), kv_dtype: Some(DType::F32) }).expect("decoder");
    let got = dec.prefill(&r.ids).expect("prefill").to_vec().expect("readback");
    let d = max_abs_diff(&got, &r.logits[r.ids.len() - 1]);
    assert!(d <= 1e-3, "max |Δlogit| {d}");
}

#[test]
fn dynamic_ntk_prefill_matches_transformers() {
    // The reference is one forward pass over all 16 tokens (beyond max_position_embeddings 8),
    // so transformers' dynamic NTK base is the one for 16 positions; a prefill of all 16 uses
    // the same. (A KV-cached decode keeps keys rotated with the bases of earlier lengths, as
    // transformers' own cache does.)
    let r = reference("llama_ntk");
    let mut dec = tiny_decoder("llama_ntk", Quant::F32, true, DType::F32, 32);
    let got = dec.prefill(&r.ids).expect("prefill").to_vec().expect("readback");
    let d = max_abs_diff(&got, &r.logits[r.ids.len() - 1]);
    eprintln!("llama_ntk: max |Δlogit| {d:e}");
    assert!(d <= 1e-3, "dynamic NTK: max |Δlogit| {d}");
}

#[test]
fn kv_cache_decode_equals_full_rerun() {
    let r = reference("llama_gqa");
    let mut cached = tiny_decoder("llama_gqa", Quant::F32, true, DType::F32, 32);
    let rows = incremental(&mut cached, &r.ids, 3);
    let mut fresh = tiny_decoder("llama_gqa", Quant::F32, true, DType::F32, 32);
    let mut worst = 0.0f32;
    for (i, row) in rows.iter().enumerate() {
        fresh.reset();
        let full = fresh.prefill(&r.ids[..3 + i]).expect("prefill").to_vec().expect("readback");
        worst = worst.max(max_abs_diff(row, &full));
    }
    eprintln!("llama_gqa: cached decode vs full re-run: max |Δlogit| {worst:e}");
    assert!(worst <= 1e-4, "cached decode differs from a full re-run by {worst}");
}

#[test]
fn f16_kv_cache_within_tolerance() {
    check_against_reference("llama_gqa", DType::F16, 5e-3);
}

/// Converts the llama_gqa checkpoint into a Kestrel model file (`quant`, with its config.json
/// recorded) and checks the decoder loaded from it against transformers within `tol`.
fn check_kestrel_file(quant: kestrel::Quant, tol: f32) {
    use kestrel::weights::convert::{ConvertOptions, convert};
    let dir = llm_common::fixture("llama_gqa");
    let config = llm_common::read_json(&dir.join("config.json"));
    let out = std::env::temp_dir().join(format!("kestrel-llm-test-{}-{}.kestrel", std::process::id(), quant.name()));
    let src = kestrel::weights::open(&dir.join("model.safetensors")).expect("open");
    convert(src.as_ref(), &out, &ConvertOptions { quant, architecture: Some("llama".into()), config: Some(config) }, |_, _| {})
        .expect("convert");
    let r = reference("llama_gqa");
    let mut dec = {
        let m = llm_common::load_model(&out, Quant::Native, true);
        Decoder::new(&llm_common::ctx(), m.config, m.weights, &DecoderOptions { context: Some(32), kv_dtype: Some(DType::F32) })
            .expect("decoder")
    };
    let got = dec.prefill(&r.ids).expect("prefill").to_vec().expect("readback");
    let _ = std::fs::remove_file(&out);
    let d = max_abs_diff(&got, &r.logits[r.ids.len() - 1]);
    eprintln!("llama_gqa as a {} Kestrel file: max |Δlogit| {d:e}", quant.name());
    assert!(d <= tol, "{} Kestrel file: max |Δlogit| {d} > {tol}", quant.name());
}

#[test]
fn kestrel_files_of_a_hf_model_load() {
    check_kestrel_file(Quant::F32, 1e-3);
    // int8 per output channel: logits of magnitude ~3 move by a few hundredths (measured 0.057).
    check_kestrel_file(Quant::W8, 0.15);
}

/// Writes a safetensors file of f32 tensors (name, shape, little-endian bytes).
fn write_f32_safetensors(path: &std::path::Path, tensors: &[(String, Vec<usize>, Vec<u8>)]) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, shape, bytes) in tensors {
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [data.len(), data.len() + bytes.len()]}),
        );
        data.extend_from_slice(bytes);
    }
    let header = serde_json::Value::Object(header).to_string();
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&data);
    std::fs::write(path, out).expect("write shard");
}

#[test]
fn sharded_hf_checkpoints_load() {
    // llama_gqa's tensors split over two shards with an index, as transformers saves large models.
    let src_dir = llm_common::fixture("llama_gqa");
    let dir = std::env::temp_dir().join(format!("kestrel-llm-sharded-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::copy(src_dir.join("config.json"), dir.join("config.json")).expect("copy config");
    let src = kestrel::weights::open(&src_dir.join("model.safetensors")).expect("open");
    /// (name, shape, f32 bytes) of each tensor in one shard.
    type Shard = Vec<(String, Vec<usize>, Vec<u8>)>;
    let mut shards: [Shard; 2] = [Vec::new(), Vec::new()];
    let mut map = serde_json::Map::new();
    for (i, t) in src.tensors().iter().enumerate() {
        assert_eq!(t.dtype, kestrel::weights::WeightDType::F32, "{}", t.name);
        let file = format!("model-0000{}-of-00002.safetensors", i % 2 + 1);
        map.insert(t.name.clone(), file.into());
        shards[i % 2].push((t.name.clone(), t.shape.clone(), src.bytes(&t.name).expect("bytes").into_owned()));
    }
    for (i, shard) in shards.iter().enumerate() {
        write_f32_safetensors(&dir.join(format!("model-0000{}-of-00002.safetensors", i + 1)), shard);
    }
    std::fs::write(dir.join("model.safetensors.index.json"), serde_json::json!({"metadata": {}, "weight_map": map}).to_string())
        .expect("index");
    let r = reference("llama_gqa");
    let m = llm_common::load_model(&dir, Quant::F32, true);
    let mut dec = Decoder::new(&llm_common::ctx(), m.config, m.weights, &DecoderOptions { context: Some(32), kv_dtype: Some(DType::F32) })
        .expect("decoder");
    let got = dec.prefill(&r.ids).expect("prefill").to_vec().expect("readback");
    let _ = std::fs::remove_dir_all(&dir);
    let d = max_abs_diff(&got, &r.logits[r.ids.len() - 1]);
    eprintln!("llama_gqa from two shards: max |Δlogit| {d:e}");
    assert!(d <= 1e-3, "sharded checkpoint: max |Δlogit| {d} > 1e-3");
}

/// Warnings the library logs, captured for the test that checks one.
struct Captured(std::sync::Mutex<Vec<String>>);

impl log::Log for Captured {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::Level::Warn
    }
    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            self.0.lock().expect("log lock").push(record.args().to_string());
        }
    }
    fn flush(&self) {}
}

static CAPTURED: Captured = Captured(std::sync::Mutex::new(Vec::new()));

#[test]
fn a_context_beyond_the_trained_length_warns() {
    log::set_logger(&CAPTURED).expect("the only logger of this test binary");
    log::set_max_level(log::LevelFilter::Warn);
    let warned = |context: usize| {
        let _dec = tiny_decoder("llama_gqa", Quant::F32, true, DType::F32, context);
        let needle = format!("context of {context} positions exceeds the 64");
        CAPTURED.0.lock().expect("log lock").iter().any(|m| m.contains(&needle))
    };
    assert!(!warned(64), "the trained length itself must not warn");
    assert!(warned(65));
}

#[test]
fn embedding_rows_in_a_prompt_equal_their_token_ids() {
    use kestrel::Recorder;
    use kestrel::ops::gather::embedding;
    use kestrel_models::llm::decoder::Segment;

    let r = reference("llama_gqa");
    let ids = &r.ids[..9];
    let mut dec = tiny_decoder("llama_gqa", Quant::F32, true, DType::F32, 32);
    let want = dec.prefill(ids).expect("prefill").to_vec().expect("readback");
    // The middle four tokens given as rows of the embedding table, as an image's features are.
    let ctx = dec.gpu().clone();
    let mut rec = Recorder::new(&ctx);
    let middle = kestrel::Tensor::from_u32(&ctx, &[4], &ids[3..7]).expect("ids");
    let rows = embedding(&mut rec, &dec.weights().embed, &middle).expect("embedding");
    rec.submit().expect("submit");
    let before = rows.to_vec_f32().expect("readback");
    dec.reset();
    let segments = [Segment::Tokens(&ids[..3]), Segment::Embeddings(&rows), Segment::Tokens(&ids[7..])];
    let got = dec.prefill_segments(&segments).expect("prefill segments").to_vec().expect("readback");
    assert!(max_abs_diff(&got, &want) <= 1e-5, "max |Δlogit| {}", max_abs_diff(&got, &want));
    assert_eq!(rows.to_vec_f32().expect("readback"), before, "the given rows were written");
    // Rows alone (the whole prompt as embeddings) also work and stay unwritten.
    let all = kestrel::Tensor::from_u32(&ctx, &[ids.len()], ids).expect("ids");
    let mut rec = Recorder::new(&ctx);
    let rows = embedding(&mut rec, &dec.weights().embed, &all).expect("embedding");
    rec.submit().expect("submit");
    let before = rows.to_vec_f32().expect("readback");
    dec.reset();
    let got = dec.prefill_segments(&[Segment::Embeddings(&rows)]).expect("prefill rows").to_vec().expect("readback");
    assert!(max_abs_diff(&got, &want) <= 1e-5, "max |Δlogit| {}", max_abs_diff(&got, &want));
    assert_eq!(rows.to_vec_f32().expect("readback"), before, "the given rows were written");
    // Misshapen rows are an input error.
    let bad = kestrel::Tensor::from_f32(&ctx, &[2, 3], &[0.0; 6]).expect("tensor");
    dec.reset();
    assert!(dec.prefill_segments(&[Segment::Embeddings(&bad)]).is_err());
}
