//! The Kestrel model file: `convert` round trips of a small hand-written safetensors source for
//! every quant choice (metadata, stored dtypes and shapes, packed words equal to quantising the
//! source directly, float tensors exact or f16-rounded), the GPU upload of a converted file,
//! and malformed files (each a `KestrelError::Weights`, never a panic).
//!
//! Every comparison here is exact: conversion runs the same quantiser on the same f32 values,
//! and f16 storage is compared with the f16 rounding of the source.

mod common;
#[path = "common/real_weights.rs"]
mod real_weights;

use std::path::{Path, PathBuf};

use half::f16;
use kestrel::Quant;
use kestrel::error::KestrelError;
use kestrel::quant::{PackedWeights, QuantScheme};
use kestrel::weights::convert::{ConvertOptions, convert, sha256_file};
use kestrel::weights::kestrel_file::KestrelFile;
use kestrel::weights::{self, WeightDType, WeightSource, tensor_f32};
use real_weights::real_weight;
use serde_json::{Map, Value, json};

/// A fresh temporary directory for one test.
fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kestrel-kfile-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// A safetensors file from a header JSON string and the data section.
fn st_bytes(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// Deterministic values in about [-1, 1].
fn values(n: usize, seed: u64) -> Vec<f32> {
    common::rand_vec(n, seed)
}

/// The synthetic source: (name, dtype, shape) and its data, covering every conversion rule.
/// `proj.weight` (K = 70, not whole blocks) and `emb.weight` (f16) are quantised under w8/w4;
/// `small.weight` (K < 32), the 1-D, 4-D, bias and integer tensors are not.
fn write_source(dir: &Path) -> PathBuf {
    let tensors: [(&str, &str, Vec<usize>); 7] = [
        ("layer.0.proj.weight", "F32", vec![5, 70]),
        ("layer.0.proj.bias", "F32", vec![5]),
        ("emb.weight", "F16", vec![7, 40]),
        ("small.weight", "F32", vec![3, 8]),
        ("norm.weight", "F32", vec![70]),
        ("conv.weight", "F32", vec![4, 2, 3, 3]),
        ("position_ids", "I64", vec![1, 3]),
    ];
    let mut header = Map::new();
    let mut data = Vec::new();
    for (i, (name, dtype, shape)) in tensors.iter().enumerate() {
        let n: usize = shape.iter().product();
        let start = data.len();
        let v = values(n, 100 + i as u64);
        match *dtype {
            "F32" => v.iter().for_each(|x| data.extend_from_slice(&x.to_le_bytes())),
            "F16" => v.iter().for_each(|&x| data.extend_from_slice(&f16::from_f32(x).to_le_bytes())),
            _ => (0..n as i64).for_each(|x| data.extend_from_slice(&(x * 3).to_le_bytes())),
        }
        header.insert(name.to_string(), json!({"dtype": dtype, "shape": shape, "data_offsets": [start, data.len()]}));
    }
    header.insert("__metadata__".into(), json!({"format": "pt"}));
    let path = dir.join("source.safetensors");
    std::fs::write(&path, st_bytes(&Value::Object(header).to_string(), &data)).expect("write source");
    path
}

/// Converts the source with `quant`; returns the output path and the progress calls.
fn convert_source(src_path: &Path, dir: &Path, quant: Quant) -> (PathBuf, Vec<(usize, usize)>) {
    let src = weights::open(src_path).expect("open source");
    let out = dir.join(format!("model.{}.kestrel", quant.name()));
    let opts = ConvertOptions { quant, architecture: Some("testarch".into()), config: Some(json!({"hidden": 70})) };
    let mut calls = Vec::new();
    convert(src.as_ref(), &out, &opts, |d, t| calls.push((d, t))).expect("convert");
    (out, calls)
}

#[test]
fn round_trip_every_quant() {
    let dir = temp_dir("roundtrip");
    let src_path = write_source(&dir);
    let src = weights::open(&src_path).expect("open source");
    for quant in Quant::STORAGE {
        let (out, calls) = convert_source(&src_path, &dir, quant);
        let total = src.tensors().len();
        assert_eq!(calls.first(), Some(&(0, total)), "{quant:?} progress start");
        assert_eq!(calls.last(), Some(&(total, total)), "{quant:?} progress end");
        assert_eq!(calls.len(), total + 1);

        let kf = KestrelFile::open(&out).expect("open converted");
        let generic = weights::open(&out).expect("weights::open converted");
        assert_eq!(generic.format(), "kestrel");
        let h = kf.header();
        assert_eq!((h.version, h.architecture.as_str(), h.quant.as_str()), (1, "testarch", quant.name()));
        assert_eq!(h.config, json!({"hidden": 70}));
        assert_eq!(h.source.file, "source.safetensors");
        assert_eq!(h.source.format, "safetensors");
        assert_eq!(h.source.sha256, sha256_file(&src_path).expect("sha256"));
        assert_eq!(generic.metadata()["kestrel"]["quant"], json!(quant.name()));

        let want_q: Vec<&str> = match quant.scheme() {
            Some(_) => vec!["emb.weight", "layer.0.proj.weight"],
            None => vec![],
        };
        assert_eq!(kf.quantised_names().collect::<Vec<_>>(), want_q, "{quant:?}");

        for t in src.tensors() {
            let want = tensor_f32(src.as_ref(), &t.name).expect("source f32");
            match quant.scheme().filter(|_| want_q.contains(&t.name.as_str())) {
                Some(scheme) => {
                    let direct = PackedWeights::quantize(scheme, &want, &t.shape).expect("quantize");
                    let got = kf.packed(&t.name).expect("packed").expect("is packed");
                    assert_eq!(got, direct, "{quant:?} {}", t.name);
                    assert_eq!(got.dequantize(), direct.dequantize());
                    for suffix in [".qvalues", ".qscales"] {
                        let stored = format!("{}{suffix}", t.name);
                        let info = kf.info(&stored).expect("packed buffer listed");
                        assert_eq!(info.dtype.name(), "u32");
                        assert!(matches!(kf.bytes(&stored), Err(KestrelError::Weights { .. })));
                    }
                }
                None => {
                    let info = kf.info(&t.name).expect("plain tensor present");
                    assert_eq!(info.shape, t.shape, "{quant:?} {}", t.name);
                    assert_eq!(info.dtype, quant.float_dtype(), "{quant:?} {}", t.name);
                    assert_eq!(kf.packed(&t.name).expect("plain"), None);
                    let got = tensor_f32(&kf, &t.name).expect("converted f32");
                    // f16 storage: exactly the f16 rounding of the source values.
                    let want = if quant == Quant::F16 { common::f16_round(&want) } else { want };
                    assert_eq!(got, want, "{quant:?} {}", t.name);
                }
            }
        }
        assert!(matches!(kf.packed("no.such.weight"), Err(KestrelError::Weights { .. })));
    }
}

#[test]
fn upload_matches_the_file() {
    let dir = temp_dir("upload");
    let src_path = write_source(&dir);
    let ctx = common::fast();
    for quant in [Quant::W4, Quant::F16] {
        let (out, _) = convert_source(&src_path, &dir, quant);
        let kf = KestrelFile::open(&out).expect("open converted");
        let up = kf.upload_all(&ctx).expect("upload");
        assert_eq!(up.quantised.len(), kf.quantised_names().count());
        for (name, q) in &up.quantised {
            assert_eq!(q.scheme(), QuantScheme::W4);
            let want = kf.packed(name).expect("packed").expect("is packed");
            assert_eq!(q.download().expect("download"), want, "{name}");
        }
        assert_eq!(up.tensors.len(), kf.plain_names().count());
        for (name, t) in &up.tensors {
            assert_eq!(t.to_vec_f32().expect("download"), tensor_f32(&kf, name).expect("f32"), "{quant:?} {name}");
        }
    }
}

#[test]
fn convert_refuses_to_overwrite_its_source() {
    let dir = temp_dir("overwrite");
    let src_path = write_source(&dir);
    let src = weights::open(&src_path).expect("open source");
    let opts = ConvertOptions { quant: Quant::W8, architecture: None, config: None };
    let r = convert(src.as_ref(), &src_path, &opts, |_, _| {});
    assert!(matches!(r, Err(KestrelError::Weights { .. })), "{r:?}");
}

/// `native` keeps weights as a source stores them when loading; it is no storage for a file.
#[test]
fn convert_refuses_native() {
    let dir = temp_dir("native");
    let src_path = write_source(&dir);
    let src = weights::open(&src_path).expect("open source");
    let opts = ConvertOptions { quant: Quant::Native, architecture: None, config: None };
    let r = convert(src.as_ref(), &dir.join("native.kestrel"), &opts, |_, _| {});
    assert!(matches!(r, Err(KestrelError::InvalidArgument { op: "convert", .. })), "{r:?}");
    assert!(!dir.join("native.kestrel").exists());
}

#[test]
fn unconvertible_source_dtype_is_an_error() {
    // The GGUF fixture holds a Q5_0 tensor, which Kestrel lists but cannot convert.
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf_types.gguf");
    let src = weights::open(&fixture).expect("open gguf fixture");
    let out = temp_dir("opaque").join("x.kestrel");
    let opts = ConvertOptions { quant: Quant::W8, architecture: None, config: None };
    let r = convert(src.as_ref(), &out, &opts, |_, _| {});
    assert!(matches!(r, Err(KestrelError::Weights { .. })), "{r:?}");
    assert!(!out.exists());
}

#[test]
fn non_finite_weights_are_errors_naming_the_tensor() {
    let dir = temp_dir("nonfinite");
    for (tag, bad_value) in [("nan", f32::NAN), ("inf", f32::INFINITY)] {
        // A 2 x 32 weight (quantised under w4/w8) and a 3-element bias (stored as is).
        let w = values(64, 5);
        let b = values(3, 6);
        let header = r#"{"fc.weight":{"dtype":"F32","shape":[2,32],"data_offsets":[0,256]},"fc.bias":{"dtype":"F32","shape":[3],"data_offsets":[256,268]}}"#;
        for (target, quant) in [("fc.weight", Quant::W4), ("fc.bias", Quant::F32), ("fc.bias", Quant::F16)] {
            let (mut w2, mut b2) = (w.clone(), b.clone());
            if target == "fc.weight" {
                w2[17] = bad_value;
            } else {
                b2[1] = bad_value;
            }
            let data: Vec<u8> = w2.iter().chain(&b2).flat_map(|x| x.to_le_bytes()).collect();
            let src_path = dir.join(format!("{tag}-{target}.safetensors"));
            std::fs::write(&src_path, st_bytes(header, &data)).expect("write source");
            let src = weights::open(&src_path).expect("open source");
            let out = dir.join(format!("{tag}-{target}.kestrel"));
            let opts = ConvertOptions { quant, architecture: None, config: None };
            match convert(src.as_ref(), &out, &opts, |_, _| {}) {
                Err(KestrelError::Weights { tensor, detail, .. }) => {
                    assert_eq!(tensor.as_deref(), Some(target), "{detail}");
                    assert!(detail.contains("non-finite"), "{detail}");
                }
                other => panic!("{tag} in {target} ({quant:?}): expected a Weights error, got {other:?}"),
            }
            assert!(!out.exists());
        }
    }
}

/// Converts the real SmolLM2 Q4_1 GGUF of `scripts/fetch-test-weights.sh` to w4 (see
/// [`real_weight`] for when it is skipped): every 2-D `weight` is re-quantised from the exact
/// dequantised Q4_1 values.
#[test]
fn real_smollm2_gguf_to_w4() {
    let Some(path) = real_weight("SmolLM2-135M-Instruct.Q4_1.gguf") else { return };
    let src = weights::open(&path).expect("open gguf");
    let out = temp_dir("smollm2").join("smollm2.w4.kestrel");
    let opts = ConvertOptions { quant: Quant::W4, architecture: None, config: None };
    let s = convert(src.as_ref(), &out, &opts, |_, _| {}).expect("convert");
    let kf = KestrelFile::open(&out).expect("open converted");
    assert_eq!(kf.header().architecture, "llama");
    assert_eq!(s.tensors, src.tensors().len());
    assert!(s.quantised > 0 && s.quantised == kf.quantised_names().count());
    let name = "blk.0.attn_q.weight";
    let info = src.info(name).expect("source tensor");
    let direct = PackedWeights::quantize(QuantScheme::W4, &tensor_f32(src.as_ref(), name).expect("f32"), &info.shape).expect("q");
    assert_eq!(kf.packed(name).expect("packed"), Some(direct));
    std::fs::remove_file(&out).expect("remove");
}

/// Splits a file into its header JSON (as a map, keys in any order) and data section.
fn split(bytes: &[u8]) -> (Map<String, Value>, Vec<u8>) {
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).expect("header JSON");
    (header.as_object().expect("object").clone(), bytes[8 + n..].to_vec())
}

/// The `kestrel` metadata value of a header, parsed.
fn kestrel_meta(h: &Map<String, Value>) -> Value {
    serde_json::from_str(h["__metadata__"]["kestrel"].as_str().expect("string")).expect("kestrel JSON")
}

/// `h` with its `kestrel` metadata replaced by `meta` (serialised to a string).
fn with_meta(mut h: Map<String, Value>, meta: &Value) -> Map<String, Value> {
    h.insert("__metadata__".into(), json!({"kestrel": meta.to_string()}));
    h
}

/// Writes a file and asserts that both `KestrelFile::open` and `weights::open` reject it with
/// `KestrelError::Weights`.
fn assert_rejected(dir: &Path, tag: &str, bytes: &[u8]) {
    let path = dir.join(tag);
    std::fs::write(&path, bytes).expect("write");
    match KestrelFile::open(&path) {
        Err(KestrelError::Weights { detail, .. }) => eprintln!("{tag}: rejected: {detail}"),
        Err(e) => panic!("{tag}: wrong error kind: {e}"),
        Ok(_) => panic!("{tag}: malformed file was accepted"),
    }
    assert!(matches!(weights::open(&path), Err(KestrelError::Weights { .. })), "{tag}: weights::open");
}

#[test]
fn malformed_files_are_rejected() {
    let dir = temp_dir("bad");
    let src_path = write_source(&dir);
    let (out, _) = convert_source(&src_path, &dir, Quant::W4);
    let good = std::fs::read(&out).expect("read converted");
    let (h, data) = split(&good);
    let meta = kestrel_meta(&h);
    let build = |h: &Map<String, Value>| st_bytes(&Value::Object(h.clone()).to_string(), &data);
    let edit = |f: &dyn Fn(&mut Value)| {
        let mut m = meta.clone();
        f(&mut m);
        build(&with_meta(h.clone(), &m))
    };
    // The untouched rebuild is accepted (so each rejection below is due to its one change).
    std::fs::write(dir.join("rebuilt"), build(&h)).expect("write");
    KestrelFile::open(&dir.join("rebuilt")).expect("rebuilt file opens");

    assert_rejected(&dir, "truncated", &good[..good.len() - 3]);
    assert_rejected(&dir, "truncated-header", &good[..40]);
    assert_rejected(&dir, "empty", &[]);
    assert_rejected(&dir, "wrong-version", &edit(&|m| m["version"] = json!(2)));
    assert_rejected(
        &dir,
        "no-version",
        &edit(&|m| {
            m.as_object_mut().expect("object").remove("version");
        }),
    );
    assert_rejected(&dir, "unknown-quant", &edit(&|m| m["quant"] = json!("w3")));
    assert_rejected(&dir, "config-not-object", &edit(&|m| m["config"] = json!([1, 2])));
    assert_rejected(
        &dir,
        "missing-tensor",
        &edit(&|m| {
            m["tensors"]["ghost.weight"] = json!({"scheme": "w4", "shape": [4, 64]});
        }),
    );
    assert_rejected(&dir, "shape-mismatch", &edit(&|m| m["tensors"]["layer.0.proj.weight"]["shape"] = json!([5, 200])));
    assert_rejected(&dir, "not-2d", &edit(&|m| m["tensors"]["layer.0.proj.weight"]["shape"] = json!([350])));
    assert_rejected(&dir, "wrong-scheme", &edit(&|m| m["tensors"]["layer.0.proj.weight"]["scheme"] = json!("w8")));
    assert_rejected(&dir, "unknown-scheme", &edit(&|m| m["tensors"]["layer.0.proj.weight"]["scheme"] = json!("w2")));
    assert_rejected(
        &dir,
        "orphan-buffer",
        &edit(&|m| {
            m["tensors"].as_object_mut().expect("object").remove("emb.weight");
        }),
    );
    assert_rejected(
        &dir,
        "plain-and-packed",
        &edit(&|m| {
            m["tensors"]["layer.0.proj.bias"] = json!({"scheme": "w4", "shape": [5, 1]});
        }),
    );
    assert_rejected(&dir, "f32-file-with-packed", &edit(&|m| m["quant"] = json!("f32")));
    // A plain tensor stored as f16 in a w4 file (same byte range, dtype and shape changed).
    let mut h16 = h.clone();
    let bias = h16["layer.0.proj.bias"].clone();
    h16.insert("layer.0.proj.bias".into(), json!({"dtype": "F16", "shape": [10], "data_offsets": bias["data_offsets"]}));
    assert_rejected(&dir, "plain-dtype", &build(&h16));
    // Metadata that is not JSON, and a safetensors file without the kestrel key is no Kestrel file.
    let mut hj = h.clone();
    hj.insert("__metadata__".into(), json!({"kestrel": "{not json"}));
    assert_rejected(&dir, "metadata-not-json", &build(&hj));
    let mut plain = h.clone();
    plain.insert("__metadata__".into(), json!({"format": "pt"}));
    let path = dir.join("no-key");
    std::fs::write(&path, build(&plain)).expect("write");
    assert!(matches!(KestrelFile::open(&path), Err(KestrelError::Weights { .. })));
    assert_eq!(weights::open(&path).expect("plain safetensors").format(), "safetensors");
    // A duplicate tensor name in the header text.
    let text = Value::Object(h.clone()).to_string();
    let bias_entry = format!("\"layer.0.proj.bias\":{}", h["layer.0.proj.bias"]);
    assert!(text.contains(&bias_entry));
    let dup = text.replacen('{', &format!("{{{bias_entry},"), 1);
    assert_rejected(&dir, "duplicate-name", &st_bytes(&dup, &data));
    // Packed buffers are listed with an opaque u32 dtype (WeightDType has no u32).
    assert!(matches!(KestrelFile::open(&out).expect("open").info("emb.weight.qvalues").map(|t| t.dtype), Some(WeightDType::Opaque(_))));
}
