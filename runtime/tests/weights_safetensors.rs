//! safetensors loading: hand-written files (every plain dtype, `__metadata__`, file order),
//! format detection by `weights::open`, and malformed files (each must be a
//! `KestrelError::Weights`, never a panic).

#[path = "common/real_weights.rs"]
mod real_weights;

use std::path::PathBuf;

use half::{bf16, f16};
use kestrel::error::KestrelError;
use kestrel::weights::{self, WeightDType};
use real_weights::real_weight;

/// Writes `bytes` to a fresh temporary file and returns its path.
fn temp_file(tag: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kestrel-weights-st-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    let path = dir.join(tag);
    std::fs::write(&path, bytes).expect("write temp file");
    path
}

/// A safetensors file from a header JSON string and the data section.
fn file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn assert_rejected(tag: &str, bytes: &[u8]) {
    let path = temp_file(tag, bytes);
    match weights::open(&path) {
        Err(KestrelError::Weights { detail, .. }) => eprintln!("{tag}: rejected: {detail}"),
        Err(e) => panic!("{tag}: wrong error kind: {e}"),
        Ok(_) => panic!("{tag}: malformed file was accepted"),
    }
}

/// A file with one tensor of each plain dtype (listed out of offset order in the header, to
/// check that Kestrel reports file order), a U16 tensor (opaque) and `__metadata__`.
fn sample() -> Vec<u8> {
    let mut data = Vec::new();
    let f32s = [1.5f32, -2.25, 3.0, 0.1, 1e-30, -0.0];
    f32s.iter().for_each(|v| data.extend_from_slice(&v.to_le_bytes())); // 0..24
    [0.5f32, -1.0, 65504.0].iter().for_each(|&v| data.extend_from_slice(&f16::from_f32(v).to_le_bytes())); // 24..30
    [0.3f32, -7.0].iter().for_each(|&v| data.extend_from_slice(&bf16::from_f32(v).to_le_bytes())); // 30..34
    [-3i64, 1 << 40].iter().for_each(|v| data.extend_from_slice(&v.to_le_bytes())); // 34..50
    data.extend_from_slice(&[0, 7, 255]); // u8 50..53
    data.extend_from_slice(&[0, 1]); // bool 53..55
    data.extend_from_slice(&[(-5i8) as u8]); // i8 55..56
    data.extend_from_slice(&1000u16.to_le_bytes()); // u16 56..58
    data.extend_from_slice(&(-2.5f64).to_le_bytes()); // f64 58..66
    let header = r#"{
        "bf16": {"dtype": "BF16", "shape": [2], "data_offsets": [30, 34]},
        "__metadata__": {"format": "pt", "note": "kestrel"},
        "a.f32": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
        "f16": {"dtype": "F16", "shape": [3], "data_offsets": [24, 30]},
        "i64": {"dtype": "I64", "shape": [2, 1], "data_offsets": [34, 50]},
        "u8": {"dtype": "U8", "shape": [3], "data_offsets": [50, 53]},
        "bool": {"dtype": "BOOL", "shape": [2], "data_offsets": [53, 55]},
        "i8": {"dtype": "I8", "shape": [1], "data_offsets": [55, 56]},
        "u16": {"dtype": "U16", "shape": [1], "data_offsets": [56, 58]},
        "f64": {"dtype": "F64", "shape": [], "data_offsets": [58, 66]}
    }"#;
    file(header, &data)
}

/// `sample()` with its header padded by spaces until the header length's low byte is `0x80`:
/// the file's first byte then equals a pickle's `PROTO` opcode.
fn sample_with_header_length_0x80() -> Vec<u8> {
    let s = sample();
    let len = u64::from_le_bytes(s[..8].try_into().expect("8 bytes")) as usize;
    let mut header = String::from_utf8(s[8..8 + len].to_vec()).expect("utf-8");
    while header.len() % 256 != 0x80 {
        header.push(' ');
    }
    file(&header, &s[8 + len..])
}

#[test]
fn a_header_length_ending_in_0x80_is_still_safetensors() {
    let bytes = sample_with_header_length_0x80();
    assert_eq!(bytes[0], 0x80);
    let reference = weights::open(&temp_file("plain.safetensors", &sample())).expect("plain");
    for src in [weights::open(&temp_file("len80.safetensors", &bytes)).expect("open"), weights::open_bytes(bytes).expect("open_bytes")] {
        assert_eq!(src.format(), "safetensors");
        assert_eq!(src.tensors().len(), reference.tensors().len());
        assert_eq!(src.bytes("a.f32").expect("bytes"), reference.bytes("a.f32").expect("bytes"));
    }
}

#[test]
fn empty_and_unknown_files_say_what_they_are() {
    let message = |tag: &str, bytes: &[u8]| match weights::open(&temp_file(tag, bytes)) {
        Err(KestrelError::Weights { detail, .. }) => detail,
        other => panic!("{tag}: expected a weights error, got {:?}", other.map(|s| s.format())),
    };
    assert_eq!(message("empty.bin", b""), "empty file");
    let unknown = message("unknown.bin", b"hello world, not a model");
    assert!(unknown.contains("unrecognised") && unknown.contains("Kestrel"), "{unknown}");
    // A pickle PROTO byte alone does not make a PyTorch checkpoint.
    let proto = message("proto.bin", &[0x80, 0x02, b'N', b'.']);
    assert!(proto.contains("unrecognised"), "{proto}");
}

#[test]
fn sample_file_opens_in_file_order_with_metadata() {
    let path = temp_file("sample.safetensors", &sample());
    let src = weights::open(&path).expect("open sample");
    assert_eq!(src.format(), "safetensors");
    assert_eq!(src.metadata(), serde_json::json!({"format": "pt", "note": "kestrel"}));
    let listed: Vec<(&str, &str, Vec<usize>)> = src.tensors().iter().map(|t| (t.name.as_str(), t.dtype.name(), t.shape.clone())).collect();
    assert_eq!(
        listed,
        vec![
            ("a.f32", "f32", vec![2, 3]),
            ("f16", "f16", vec![3]),
            ("bf16", "bf16", vec![2]),
            ("i64", "i64", vec![2, 1]),
            ("u8", "u8", vec![3]),
            ("bool", "bool", vec![2]),
            ("i8", "i8", vec![1]),
            ("u16", "u16", vec![1]),
            ("f64", "f64", vec![]),
        ]
    );
    assert_eq!(src.bytes("a.f32").map(|b| b.len()).ok(), Some(24));
}

#[test]
fn sample_file_converts_to_f32() {
    let path = temp_file("convert.safetensors", &sample());
    let src = weights::open(&path).expect("open sample");
    let f = |n: &str| weights::tensor_f32(src.as_ref(), n).expect("convert");
    // Exact: every stored value is representable in f32 (bf16 0.3 is compared after the same
    // rounding to bf16).
    assert_eq!(f("a.f32"), vec![1.5, -2.25, 3.0, 0.1, 1e-30, -0.0]);
    assert_eq!(f("f16"), vec![0.5, -1.0, 65504.0]);
    assert_eq!(f("bf16"), vec![bf16::from_f32(0.3).to_f32(), -7.0]);
    assert_eq!(f("i64"), vec![-3.0, (1u64 << 40) as f32]);
    assert_eq!(f("u8"), vec![0.0, 7.0, 255.0]);
    assert_eq!(f("bool"), vec![0.0, 1.0]);
    assert_eq!(f("i8"), vec![-5.0]);
    assert_eq!(f("f64"), vec![-2.5]);
    assert!(matches!(src.info("u16").map(|t| t.dtype), Some(WeightDType::Opaque(_))));
    assert!(matches!(src.bytes("u16"), Err(KestrelError::Weights { .. })));
    assert!(matches!(weights::tensor_f32(src.as_ref(), "u16"), Err(KestrelError::Weights { .. })));
    assert!(matches!(src.bytes("nope"), Err(KestrelError::Weights { .. })));
}

#[test]
fn empty_file_has_no_tensors() {
    let path = temp_file("empty.safetensors", &file("{}", &[]));
    let src = weights::open(&path).expect("open empty safetensors");
    assert!(src.tensors().is_empty());
    assert_eq!(src.metadata(), serde_json::json!({}));
}

#[test]
fn malformed_files_are_rejected() {
    let good = sample();
    // Every truncation of a valid file.
    for len in 0..good.len() {
        assert_rejected("truncated.safetensors", &good[..len]);
    }
    // Wrong magic: neither safetensors, GGUF nor PyTorch.
    assert_rejected("magic.safetensors", b"NOTAWEIGHTFILE....");
    // Header length past the end of the file, and an absurd one.
    let mut long = good.clone();
    long[..8].copy_from_slice(&(good.len() as u64).to_le_bytes());
    assert_rejected("header-past-end.safetensors", &long);
    let mut absurd = good.clone();
    absurd[..8].copy_from_slice(&(1u64 << 60).to_le_bytes());
    assert_rejected("header-absurd.safetensors", &absurd);
    let t = |dtype: &str, shape: &str, offsets: &str, data: usize| {
        file(&format!(r#"{{"t": {{"dtype": "{dtype}", "shape": {shape}, "data_offsets": {offsets}}}}}"#), &vec![0; data])
    };
    assert!(weights::open(&temp_file("ok.safetensors", &t("F32", "[2]", "[0, 8]", 8))).is_ok());
    assert_rejected("offset-past-end.safetensors", &t("F32", "[2]", "[0, 16]", 8));
    assert_rejected("offset-huge.safetensors", &t("F32", "[2]", "[0, 18446744073709551615]", 8));
    assert_rejected("size-mismatch.safetensors", &t("F32", "[3]", "[0, 8]", 8));
    assert_rejected("shape-overflow.safetensors", &t("F32", "[4294967296, 4294967296, 4294967296]", "[0, 8]", 8));
    assert_rejected("trailing-data.safetensors", &t("F32", "[2]", "[0, 8]", 12));
    assert_rejected("unknown-dtype.safetensors", &t("X99", "[2]", "[0, 8]", 8));
    assert_rejected("bad-json.safetensors", &file("{\"t\": ", &[]));
    let dup = r#"{"t": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, "t": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}"#;
    assert_rejected("duplicate.safetensors", &file(dup, &[1]));
}

/// Inspects the real all-MiniLM-L6-v2 file of `scripts/fetch-test-weights.sh` (see
/// [`real_weight`] for when it is skipped).
#[test]
fn real_minilm_safetensors() {
    let Some(path) = real_weight("model.safetensors") else { return };
    let src = weights::open(&path).expect("open MiniLM");
    assert_eq!(src.format(), "safetensors");
    assert_eq!(src.tensors().len(), 104);
    let emb = src.info("embeddings.word_embeddings.weight").expect("word embeddings");
    assert_eq!(emb.shape, vec![30522, 384]);
    assert_eq!(emb.dtype, WeightDType::F32);
    for t in src.tensors() {
        let v = weights::tensor_f32(src.as_ref(), &t.name).expect("convert");
        assert_eq!(v.len(), t.numel());
    }
}

/// A one-tensor f32 safetensors file.
fn one_tensor(name: &str, values: &[f32]) -> Vec<u8> {
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    file(&format!(r#"{{"{name}": {{"dtype": "F32", "shape": [{}], "data_offsets": [0, {}]}}}}"#, values.len(), data.len()), &data)
}

#[test]
fn sharded_checkpoints_open_through_their_index() {
    temp_file("sharded-1.safetensors", &one_tensor("a.weight", &[1.0, 2.0]));
    temp_file("sharded-2.safetensors", &one_tensor("b.weight", &[3.0]));
    let index = temp_file(
        "sharded.index.json",
        br#"{"metadata": {"total_size": 12}, "weight_map": {"b.weight": "sharded-2.safetensors", "a.weight": "sharded-1.safetensors"}}"#,
    );
    let src = weights::open(&index).expect("open the index");
    assert_eq!(src.format(), "safetensors");
    assert_eq!(src.metadata()["total_size"], 12);
    let names: Vec<&str> = src.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["a.weight", "b.weight"]);
    assert_eq!(weights::tensor_f32(src.as_ref(), "a.weight").unwrap(), [1.0, 2.0]);
    assert_eq!(weights::tensor_f32(src.as_ref(), "b.weight").unwrap(), [3.0]);
    assert!(src.bytes("c.weight").is_err());
}

#[test]
fn bad_sharded_indexes_are_errors() {
    temp_file("bad-shard-1.safetensors", &one_tensor("a.weight", &[1.0]));
    // Shard 2 holds a.weight too (and c.weight).
    let data: Vec<u8> = [2.0f32, 3.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let two = r#"{"a.weight": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "c.weight": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}"#;
    temp_file("bad-shard-2.safetensors", &file(two, &data));
    let cases: [(&str, &[u8], &str); 7] = [
        ("not-json.index.json", b"{", "not JSON"),
        ("no-map.index.json", br#"{"metadata": {}}"#, "no `weight_map`"),
        ("empty-map.index.json", br#"{"weight_map": {}}"#, "empty"),
        ("missing-shard.index.json", br#"{"weight_map": {"a.weight": "no-such-shard.safetensors"}}"#, "cannot open"),
        ("outside.index.json", br#"{"weight_map": {"a.weight": "../bad-shard-1.safetensors"}}"#, "not a file name"),
        ("not-in-shard.index.json", br#"{"weight_map": {"z.weight": "bad-shard-1.safetensors"}}"#, "does not hold"),
        (
            "twice.index.json",
            br#"{"weight_map": {"a.weight": "bad-shard-1.safetensors", "c.weight": "bad-shard-2.safetensors"}}"#,
            "two shards",
        ),
    ];
    for (tag, bytes, why) in cases {
        let path = temp_file(tag, bytes);
        match weights::open(&path) {
            Err(KestrelError::Weights { detail, .. }) => {
                eprintln!("{tag}: rejected: {detail}");
                assert!(detail.contains(why), "{tag}: {detail:?} does not say {why:?}");
            }
            Err(e) => panic!("{tag}: wrong error kind: {e}"),
            Ok(_) => panic!("{tag}: a bad index was accepted"),
        }
    }
}
