//! GGUF loading: the fixture written by the Python `gguf` package (every convertible type,
//! dequantised values compared bit for bit with `gguf.quants.dequantize`), metadata of every
//! value type, and malformed files (each must be a `KestrelError::Weights`, never a panic).

#[path = "common/real_weights.rs"]
mod real_weights;

use std::path::{Path, PathBuf};

use kestrel::error::KestrelError;
use kestrel::weights::{self, WeightDType, WeightSource, gguf};
use real_weights::real_weight;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// Writes `bytes` to a fresh temporary file and returns its path.
fn temp_file(tag: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kestrel-weights-gguf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    let path = dir.join(tag);
    std::fs::write(&path, bytes).expect("write temp file");
    path
}

/// Asserts that opening `bytes` (through both `weights::open` and `gguf::open`) fails with a
/// `KestrelError::Weights`.
fn assert_rejected(tag: &str, bytes: &[u8]) {
    let path = temp_file(tag, bytes);
    match weights::open(&path) {
        Err(KestrelError::Weights { .. }) => {}
        Err(e) => panic!("{tag}: wrong error kind: {e}"),
        Ok(_) => panic!("{tag}: malformed file was accepted"),
    }
    match gguf::open(&path) {
        Err(KestrelError::Weights { detail, .. }) => eprintln!("{tag}: rejected: {detail}"),
        Err(e) => panic!("{tag}: wrong error kind: {e}"),
        Ok(_) => panic!("{tag}: malformed file was accepted"),
    }
}

#[test]
fn fixture_dequantises_exactly_like_python_gguf() {
    let src = weights::open(&fixture("gguf_types.gguf")).expect("open fixture");
    assert_eq!(src.format(), "gguf");
    let expected: Vec<f32> = std::fs::read(fixture("gguf_types.expected.bin"))
        .expect("read expected values")
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let names: Vec<&str> = src.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["f32", "f16", "bf16", "f64", "i8", "i16", "i32", "i64", "q4_0", "q4_1", "q8_0", "q4_k", "q5_k", "q6_k", "q5_0"]);
    let mut at = 0;
    for t in src.tensors() {
        assert_eq!(t.dtype.name(), t.name, "dtype of {}", t.name);
        if t.name == "q5_0" {
            continue;
        }
        let got = weights::tensor_f32(src.as_ref(), &t.name).expect("convert");
        assert_eq!(got.len(), t.numel(), "{}", t.name);
        let want = &expected[at..at + t.numel()];
        at += t.numel();
        // Exact: Kestrel performs the same f32 operations in the same order as gguf.quants.
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert_eq!(g.to_bits(), w.to_bits(), "{}[{i}]: {g} vs {w}", t.name);
        }
    }
    assert_eq!(at, expected.len(), "every reference value was compared");
}

#[test]
fn fixture_shapes_are_outermost_first() {
    let src = weights::open(&fixture("gguf_types.gguf")).expect("open fixture");
    let shape = |n: &str| src.info(n).map(|t| t.shape.clone());
    assert_eq!(shape("f32"), Some(vec![2, 3, 5]));
    assert_eq!(shape("f16"), Some(vec![3, 7]));
    assert_eq!(shape("q4_0"), Some(vec![3, 64]));
    assert_eq!(shape("q6_k"), Some(vec![3, 512]));
    assert_eq!(shape("q5_0"), Some(vec![2, 32]));
    let q8 = src.bytes("q8_0").expect("q8_0 bytes");
    assert_eq!(q8.len(), 3 * 64 / 32 * 34);
    assert_eq!(src.info("q4_k").map(|t| t.dtype), Some(WeightDType::Q4K));
}

#[test]
fn fixture_metadata_covers_every_value_type() {
    let file = gguf::open(&fixture("gguf_types.gguf")).expect("open fixture");
    assert_eq!(file.version(), 3);
    assert_eq!(file.alignment(), 32);
    assert_eq!(file.data_offset() % 32, 0);
    let m = file.metadata();
    assert_eq!(m["general.architecture"], "kestrel-test");
    assert_eq!(m["test.u8"], 200);
    assert_eq!(m["test.i8"], -100);
    assert_eq!(m["test.u16"], 60000);
    assert_eq!(m["test.i16"], -30000);
    assert_eq!(m["test.u32"], 4_000_000_000u64);
    assert_eq!(m["test.i32"], -2_000_000_000);
    assert_eq!(m["test.f32"], 0.5);
    assert_eq!(m["test.bool"], true);
    assert_eq!(m["test.string"], "héllo");
    assert_eq!(m["test.u64"], (1u64 << 63) + 5);
    assert_eq!(m["test.i64"], -(1i64 << 62));
    assert_eq!(m["test.f64"], 0.1);
    assert_eq!(m["test.ints"], serde_json::json!([1, 2, 3]));
    assert_eq!(m["test.nested"], serde_json::json!([[1, 2], [3]]));
    assert_eq!(m["test.vocab"].as_array().map(Vec::len), Some(100));
    assert_eq!(m["test.vocab"][99], "tok99");
}

#[test]
fn unsupported_type_is_listed_but_its_bytes_are_refused() {
    let src = weights::open(&fixture("gguf_types.gguf")).expect("open fixture");
    let t = src.info("q5_0").expect("q5_0 listed");
    assert!(matches!(t.dtype, WeightDType::Opaque(_)));
    assert!(matches!(src.bytes("q5_0"), Err(KestrelError::Weights { .. })));
    assert!(matches!(weights::tensor_f32(src.as_ref(), "q5_0"), Err(KestrelError::Weights { .. })));
    assert!(matches!(src.bytes("missing"), Err(KestrelError::Weights { .. })));
}

#[test]
fn every_truncation_is_rejected() {
    let full = std::fs::read(fixture("gguf_types.gguf")).expect("read fixture");
    // The file ends with < 32 bytes of padding after the last tensor; any shorter prefix cuts
    // into a header field or a tensor's data.
    for len in 0..full.len() - 32 {
        assert_rejected("truncated.gguf", &full[..len]);
    }
}

/// A little-endian GGUF writer for hand-made (mostly malformed) files.
#[derive(Default)]
struct G(Vec<u8>);

impl G {
    fn header(version: u32, tensors: u64, kvs: u64) -> G {
        G::default().raw(b"GGUF").u32(version).u64(tensors).u64(kvs)
    }
    fn raw(mut self, b: &[u8]) -> G {
        self.0.extend_from_slice(b);
        self
    }
    fn u32(self, v: u32) -> G {
        self.raw(&v.to_le_bytes())
    }
    fn u64(self, v: u64) -> G {
        self.raw(&v.to_le_bytes())
    }
    fn str(self, s: &str) -> G {
        self.u64(s.len() as u64).raw(s.as_bytes())
    }
    /// A tensor info: name, dims (innermost first), ggml type, relative offset.
    fn tensor(self, name: &str, dims: &[u64], ty: u32, offset: u64) -> G {
        let mut g = self.str(name).u32(dims.len() as u32);
        for &d in dims {
            g = g.u64(d);
        }
        g.u32(ty).u64(offset)
    }
    /// Pads to 32 bytes and appends `n` data bytes.
    fn data(mut self, n: usize) -> G {
        while !self.0.len().is_multiple_of(32) {
            self.0.push(0);
        }
        self.0.resize(self.0.len() + n, 0x3c);
        self
    }
}

#[test]
fn hand_made_minimal_file_opens() {
    let g = G::header(2, 2, 1).str("general.alignment").u32(4).u32(32).tensor("a", &[4, 2], 0, 0).tensor("b", &[32], 8, 32).data(32 + 34);
    let path = temp_file("minimal.gguf", &g.0);
    let src = weights::open(&path).expect("open minimal file");
    assert_eq!(src.tensors().len(), 2);
    assert_eq!(src.info("a").map(|t| t.shape.clone()), Some(vec![2, 4]));
    assert_eq!(src.bytes("b").map(|b| b.len()).ok(), Some(34));
}

#[test]
fn malformed_headers_are_rejected() {
    assert_rejected("empty.gguf", b"");
    assert_rejected("magic.gguf", &G::default().raw(b"GGUX").u32(3).u64(0).u64(0).0);
    assert_rejected("v1.gguf", &G::header(1, 0, 0).0);
    assert_rejected("v4.gguf", &G::header(4, 0, 0).0);
    assert_rejected("big-endian.gguf", &G::header(3u32.swap_bytes(), 0, 0).0);
    assert_rejected("absurd-tensor-count.gguf", &G::header(3, 1 << 60, 0).0);
    assert_rejected("absurd-kv-count.gguf", &G::header(3, 0, 1 << 60).0);
    assert_rejected("max-count.gguf", &G::header(3, u64::MAX, u64::MAX).0);
    // A key whose declared length runs past the end.
    assert_rejected("long-key.gguf", &G::header(3, 0, 1).u64(1 << 63).raw(b"k").0);
    // A string value whose length runs past the end.
    assert_rejected("long-string.gguf", &G::header(3, 0, 1).str("k").u32(8).u64(u64::MAX).0);
    // An array of 2^60 u64s.
    assert_rejected("absurd-array.gguf", &G::header(3, 0, 1).str("k").u32(9).u32(10).u64(1 << 60).0);
    // An array of 2^60 empty arrays (each at least 12 bytes).
    assert_rejected("absurd-nested.gguf", &G::header(3, 0, 1).str("k").u32(9).u32(9).u64(1 << 60).0);
    // Arrays nested deeper than the limit.
    let mut deep = G::header(3, 0, 1).str("k");
    for _ in 0..64 {
        deep = deep.u32(9).u32(9).u64(1);
    }
    assert_rejected("deep-array.gguf", &deep.u32(0).u64(0).0);
    assert_rejected("unknown-value-type.gguf", &G::header(3, 0, 1).str("k").u32(13).u32(0).0);
    assert_rejected("duplicate-key.gguf", &G::header(3, 0, 2).str("k").u32(4).u32(1).str("k").u32(4).u32(2).0);
    assert_rejected("zero-alignment.gguf", &G::header(3, 0, 1).str("general.alignment").u32(4).u32(0).0);
    assert_rejected("odd-alignment.gguf", &G::header(3, 0, 1).str("general.alignment").u32(4).u32(24).0);
    assert_rejected("string-alignment.gguf", &G::header(3, 0, 1).str("general.alignment").u32(8).str("32").0);
}

#[test]
fn malformed_tensor_infos_are_rejected() {
    let one = |name: &str, dims: &[u64], ty: u32, offset: u64, data: usize| G::header(3, 1, 0).tensor(name, dims, ty, offset).data(data).0;
    // Sanity: the unmodified file opens.
    let ok = temp_file("ok.gguf", &one("a", &[8], 0, 0, 32));
    assert!(weights::open(&ok).is_ok());
    assert_rejected("data-short.gguf", &one("a", &[8], 0, 0, 31));
    assert_rejected("offset-past-end.gguf", &one("a", &[8], 0, 1 << 40, 32));
    assert_rejected("offset-overflow.gguf", &one("a", &[8], 0, u64::MAX - 31, 32));
    assert_rejected("offset-unaligned.gguf", &one("a", &[8], 0, 4, 64));
    assert_rejected("dims-overflow.gguf", &one("a", &[1 << 40, 1 << 40], 0, 0, 32));
    assert_rejected("dims-huge.gguf", &one("a", &[u64::MAX], 0, 0, 32));
    assert_rejected("too-many-dims.gguf", &one("a", &[1, 1, 1, 1, 1], 0, 0, 32));
    assert_rejected("unknown-type.gguf", &one("a", &[8], 99, 0, 32));
    assert_rejected("partial-block.gguf", &one("a", &[33], 2, 0, 64));
    let dup = G::header(3, 2, 0).tensor("a", &[8], 0, 0).tensor("a", &[8], 0, 32).data(64);
    assert_rejected("duplicate-tensor.gguf", &dup.0);
    // Absurd dimension count: 2^31 dims declared with no bytes behind them.
    assert_rejected("absurd-dims.gguf", &G::header(3, 1, 0).str("a").u32(1 << 31).0);
}

#[test]
fn empty_tensor_with_huge_dimensions_opens() {
    // Found by `cargo fuzz run safetensors` (which also opens GGUF bytes): innermost dimension 0
    // and two of 2^40 — a valid, empty tensor whose outermost-first shape [2^40, 2^40, 0] made
    // `TensorInfo::numel` overflow (a panic in debug builds) multiplying left to right.
    let g = G::header(3, 1, 0).tensor("e", &[0, 1 << 40, 1 << 40], 0, 0).data(0);
    let src = weights::open(&temp_file("empty-huge.gguf", &g.0)).expect("open");
    let info = src.info("e").expect("listed");
    assert_eq!(info.shape, vec![1 << 40, 1 << 40, 0]);
    assert_eq!(info.numel(), 0);
    assert_eq!(src.bytes("e").map(|b| b.len()).ok(), Some(0));
    assert_eq!(weights::tensor_f32(src.as_ref(), "e").map(|v| v.len()).ok(), Some(0));
}

/// Inspects the real SmolLM2 file of `scripts/fetch-test-weights.sh` (see [`real_weight`] for
/// when it is skipped).
#[test]
fn real_smollm2_gguf() {
    let Some(path) = real_weight("SmolLM2-135M-Instruct.Q4_1.gguf") else { return };
    let src = weights::open(&path).expect("open SmolLM2");
    assert_eq!(src.format(), "gguf");
    let m = src.metadata();
    assert_eq!(m["general.architecture"], "llama");
    assert_eq!(m["llama.block_count"], 30);
    assert_eq!(src.tensors().len(), 272);
    let emb = src.info("token_embd.weight").expect("token embedding");
    assert_eq!(emb.shape, vec![49152, 576]);
    let vocab = m["tokenizer.ggml.tokens"].as_array().map(Vec::len);
    assert_eq!(vocab, Some(49152));
    // Every tensor converts; values are finite.
    for t in src.tensors() {
        let v = weights::tensor_f32(src.as_ref(), &t.name).expect("convert");
        assert!(v.iter().all(|x| x.is_finite()), "{} has non-finite values", t.name);
    }
}
