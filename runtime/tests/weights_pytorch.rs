//! PyTorch checkpoint loading: the torch-written fixtures (zip with pickle protocols 2 and 5, legacy
//! format; a skipped config object, non-contiguous and offset views, f16, bf16 and i64 tensors),
//! hand-built archives, hostile pickles, and malformed files (each must be a
//! `KestrelError::Weights` naming the file, never a panic).

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use half::f16;
use kestrel::error::KestrelError;
use kestrel::weights::{self, WeightDType, pytorch};

/// A fixture under runtime/tests/fixtures.
fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// Writes `bytes` to a fresh temporary file and returns its path.
fn temp_file(tag: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kestrel-weights-pt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    let path = dir.join(tag);
    std::fs::write(&path, bytes).expect("write temp file");
    path
}

/// f32 values of a little-endian byte buffer.
fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// Checks the torch-written fixture's tensors (shared by the zip and legacy formats).
fn check_fixture(src: &dyn weights::WeightSource) {
    assert_eq!(src.format(), "pytorch");
    let info = |n: &str| src.info(n).unwrap_or_else(|| panic!("tensor {n} missing")).clone();
    assert_eq!(info("conv1.weight").shape, vec![8, 3, 3, 3]);
    assert_eq!(info("conv1.weight").dtype, WeightDType::F32);
    assert_eq!(info("fc2.weight").shape, vec![5, 10]);
    assert_eq!(info("rep.alpha").shape, vec![1]);
    assert!((f32s(&src.bytes("rep.alpha").unwrap())[0] - 0.37).abs() < 1e-7);
    // num_batches_tracked: a 0-d LongStorage tensor.
    let nbt = info("bn1.num_batches_tracked");
    assert_eq!((nbt.dtype, nbt.shape.len()), (WeightDType::I64, 0));
    assert_eq!(&*src.bytes("bn1.num_batches_tracked").unwrap(), &123i64.to_le_bytes());
    // Contiguous tensors are borrowed from the map.
    assert!(matches!(src.bytes("conv1.weight").unwrap(), Cow::Borrowed(_)));
    // arange(12).reshape(3, 4).t(): shape [4, 3], element [i][j] = 4j + i, materialised.
    assert_eq!(info("extra.transposed").shape, vec![4, 3]);
    let t = src.bytes("extra.transposed").unwrap();
    assert!(matches!(t, Cow::Owned(_)));
    let want: Vec<f32> = (0..4).flat_map(|i| (0..3).map(move |j| (4 * j + i) as f32)).collect();
    assert_eq!(f32s(&t), want);
    // arange(20).reshape(4, 5)[1:, 2:]: storage offset 7, strides (5, 1).
    assert_eq!(info("extra.sliced").shape, vec![3, 3]);
    let want: Vec<f32> = (0..3).flat_map(|r| (0..3).map(move |c| ((r + 1) * 5 + c + 2) as f32)).collect();
    assert_eq!(f32s(&src.bytes("extra.sliced").unwrap()), want);
    // f16 and i64.
    assert_eq!(info("extra.half").dtype, WeightDType::F16);
    let h: Vec<f32> = src.bytes("extra.half").unwrap().chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect();
    assert_eq!(h, vec![0.0, 0.25, 0.5, 0.75, 1.0, 1.25]);
    assert_eq!(info("extra.long").dtype, WeightDType::I64);
    let l: Vec<i64> = src.bytes("extra.long").unwrap().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(l, (0..5).map(|k| k * 1_000_000_007).collect::<Vec<i64>>());
    assert_eq!(info("extra.bf16").dtype, WeightDType::BF16);
    assert_eq!(weights::tensor_f32(src, "extra.bf16").unwrap(), vec![0.0, 0.5, 1.0, 1.5]);
    // The config object and the epoch are skipped, and listed.
    let meta = src.metadata();
    assert_eq!(meta["state_dict"], "model");
    assert!(meta["skipped"]["args"].as_str().unwrap().contains("__main__.Config"), "{meta}");
    assert!(meta["skipped"]["epoch"].is_string(), "{meta}");
    // Every tensor converts.
    for t in src.tensors() {
        let v = weights::tensor_f32(src, &t.name).unwrap();
        assert_eq!(v.len(), t.numel(), "{}", t.name);
    }
    assert!(matches!(src.bytes("nope"), Err(KestrelError::Weights { .. })));
}

#[test]
fn loads_torch_zip_fixture() {
    let src = pytorch::open(&fixture("pytorch_bn.pth")).unwrap();
    assert_eq!(src.metadata()["format"], "zip");
    check_fixture(&*src);
    // weights::open detects the format.
    let again = weights::open(&fixture("pytorch_bn.pth")).unwrap();
    assert_eq!(again.format(), "pytorch");
}

#[test]
fn loads_legacy_and_protocol5_fixtures_identically() {
    let zip = pytorch::open(&fixture("pytorch_bn.pth")).unwrap();
    for (name, format) in [("pytorch_bn_legacy.pth", "legacy"), ("pytorch_bn_proto5.pth", "zip")] {
        let other = pytorch::open(&fixture(name)).unwrap();
        assert_eq!(other.metadata()["format"], format);
        check_fixture(&*other);
        let names = |s: &dyn weights::WeightSource| s.tensors().iter().map(|t| t.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&*other), names(&*zip), "{name}");
        for t in zip.tensors() {
            assert_eq!(&*other.bytes(&t.name).unwrap(), &*zip.bytes(&t.name).unwrap(), "{name}: {}", t.name);
        }
    }
}

/// A zip archive of stored entries, as `torch.save` writes it (without zip64 records).
fn zip(entries: &[(&str, &[u8])], method: u16) -> Vec<u8> {
    let mut out = Vec::new();
    let mut cd = Vec::new();
    for (name, data) in entries {
        let off = out.len() as u32;
        let common = |v: &mut Vec<u8>| {
            v.extend_from_slice(&method.to_le_bytes());
            v.extend_from_slice(&[0; 8]); // time, date, crc
            v.extend_from_slice(&(data.len() as u32).to_le_bytes());
            v.extend_from_slice(&(data.len() as u32).to_le_bytes());
            v.extend_from_slice(&(name.len() as u16).to_le_bytes());
            v.extend_from_slice(&0u16.to_le_bytes());
        };
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        out.extend_from_slice(&[20, 0, 0, 0]); // version, flags
        common(&mut out);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        cd.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        cd.extend_from_slice(&[20, 0, 20, 0, 0, 0]); // made by, needed, flags
        common(&mut cd);
        cd.extend_from_slice(&[0; 10]); // comment len, disk, internal and external attributes
        cd.extend_from_slice(&off.to_le_bytes());
        cd.extend_from_slice(name.as_bytes());
    }
    let cd_off = out.len() as u32;
    out.extend_from_slice(&cd);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(cd.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_off.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out
}

/// Pickle opcode helpers.
fn s(out: &mut Vec<u8>, v: &str) {
    out.push(b'X');
    out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    out.extend_from_slice(v.as_bytes());
}

/// A pickled int (LONG1 with 8 bytes, so any u64 bit pattern fits).
fn int(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&[0x8a, 9]);
    out.extend_from_slice(&v.to_le_bytes());
    out.push(0);
}

/// A pickled tuple of ints.
fn ints(out: &mut Vec<u8>, v: &[u64]) {
    out.push(b'(');
    for &x in v {
        int(out, x);
    }
    out.push(b't');
}

/// `data.pkl` of `{'w': tensor, <extra>}`: a FloatStorage `key` of `numel` elements viewed at
/// `offset` with `shape` / `stride`; `extra` is spliced in as more dict items.
fn pkl(key: &str, numel: u64, offset: u64, shape: &[u64], stride: &[u64], extra: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, 2, b'}', b'('];
    s(&mut p, "w");
    p.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n((");
    s(&mut p, "storage");
    p.extend_from_slice(b"ctorch\nFloatStorage\n");
    s(&mut p, key);
    s(&mut p, "cpu");
    int(&mut p, numel);
    p.extend_from_slice(b"tQ");
    int(&mut p, offset);
    ints(&mut p, shape);
    ints(&mut p, stride);
    p.extend_from_slice(&[0x89, b'}', b't', b'R']);
    p.extend_from_slice(extra);
    p.extend_from_slice(b"u.");
    p
}

/// Six f32 values 0..6 as a storage.
fn six() -> Vec<u8> {
    (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect()
}

/// A checkpoint archive with `data.pkl` and one storage `archive/data/0`.
fn archive(pkl: &[u8], storage: &[u8]) -> Vec<u8> {
    zip(&[("archive/data.pkl", pkl), ("archive/byteorder", b"little"), ("archive/data/0", storage)], 0)
}

/// Opening must fail with a Weights error naming the file (and `tensor`, when given) whose
/// detail contains `needle`.
fn assert_rejected(tag: &str, bytes: &[u8], tensor: Option<&str>, needle: &str) {
    let path = temp_file(tag, bytes);
    match pytorch::open(&path) {
        Err(KestrelError::Weights { file, tensor: t, detail }) => {
            assert!(file.contains(tag), "{tag}: error names {file}");
            assert_eq!(t.as_deref(), tensor, "{tag}: {detail}");
            assert!(detail.contains(needle), "{tag}: `{detail}` lacks `{needle}`");
        }
        Err(e) => panic!("{tag}: wrong error kind {e}"),
        Ok(_) => panic!("{tag}: accepted"),
    }
}

#[test]
fn hand_built_archive_loads_and_skips_unknown_globals() {
    // An unknown global called with arguments (`os.system('…')`) must be skipped, not run.
    let mut extra = Vec::new();
    s(&mut extra, "cfg");
    extra.extend_from_slice(b"cos\nsystem\n");
    s(&mut extra, "echo pwned");
    extra.extend_from_slice(&[0x85, b'R']);
    let bytes = archive(&pkl("0", 6, 1, &[2, 2], &[1, 2], &extra), &six());
    let src = pytorch::open(&temp_file("ok.pt", &bytes)).unwrap();
    assert_eq!(src.tensors().len(), 1);
    // offset 1, strides (1, 2): [[1, 3], [2, 4]].
    assert_eq!(f32s(&src.bytes("w").unwrap()), vec![1.0, 3.0, 2.0, 4.0]);
    assert!(src.metadata()["skipped"]["cfg"].as_str().unwrap().contains("os.system"));
    assert_eq!(src.metadata()["skipped_calls"], serde_json::json!(["os.system"]));
}

#[test]
fn malformed_archives_are_typed_errors() {
    let good = archive(&pkl("0", 6, 0, &[2, 3], &[3, 1], &[]), &six());
    assert!(pytorch::open(&temp_file("good.pt", &good)).is_ok());
    assert_rejected("empty.pt", &[], None, "not a PyTorch checkpoint");
    assert_rejected("random.pt", b"hello world, not a checkpoint", None, "not a PyTorch checkpoint");
    assert_rejected("truncated.pt", &good[..good.len() - 30], None, "truncated");
    assert_rejected("bad_pickle.pt", &archive(&pkl("0", 6, 0, &[2, 3], &[3, 1], &[])[..40], &six()), None, "pickle truncated");
    assert_rejected("opcode.pt", &archive(&[0x80, 2, 0xff, b'.'], &six()), None, "opcode 0xff");
    assert_rejected("no_dict.pt", &archive(&[0x80, 2, b'N', b'.'], &six()), None, "no state dict");
    assert_rejected("huge_str.pt", &archive(&[0x80, 2, b'X', 0xff, 0xff, 0xff, 0xff, b'a'], &six()), None, "pickle truncated");
    assert_rejected("missing.pt", &archive(&pkl("7", 6, 0, &[2, 3], &[3, 1], &[]), &six()), Some("w"), "missing");
    assert_rejected("shape.pt", &archive(&pkl("0", 6, 0, &[2, 4], &[4, 1], &[]), &six()), Some("w"), "past the end");
    assert_rejected("stride.pt", &archive(&pkl("0", 6, 0, &[2, 2], &[1, 5], &[]), &six()), Some("w"), "past the end");
    assert_rejected("offset.pt", &archive(&pkl("0", 6, 6, &[1], &[1], &[]), &six()), Some("w"), "past the end");
    assert_rejected("storage.pt", &archive(&pkl("0", 7, 0, &[2, 3], &[3, 1], &[]), &six()), Some("w"), "declares");
    assert_rejected("huge_storage.pt", &archive(&pkl("0", 1 << 62, 0, &[2, 3], &[3, 1], &[]), &six()), Some("w"), "overflows");
    assert_rejected("huge_shape.pt", &archive(&pkl("0", 6, 0, &[1 << 62, 1 << 62], &[0, 0], &[]), &six()), Some("w"), "overflows");
    // A stride-0 broadcast may not expand past the file's size.
    assert_rejected("broadcast.pt", &archive(&pkl("0", 6, 0, &[1 << 40], &[0], &[]), &six()), Some("w"), "expands");
    let negative = pkl("0", 6, 0, &[2, 3], &[3, u64::MAX], &[]);
    assert_rejected("negative.pt", &archive(&negative, &six()), None, "non-integer or negative");
    assert_rejected(
        "compressed.pt",
        &zip(&[("archive/data.pkl", &pkl("0", 6, 0, &[6], &[1], &[])), ("archive/data/0", &six())], 8),
        None,
        "compressed",
    );
    assert_rejected("big_endian.pt", &zip(&[("archive/data.pkl", b"\x80\x02N."), ("archive/byteorder", b"big")], 0), None, "big-endian");
    assert_rejected("no_pkl.pt", &zip(&[("archive/other", b"x")], 0), None, "data.pkl");
    // An end-of-central-directory record that claims more entries than its directory can hold.
    let mut lying = good.clone();
    let n = lying.len();
    lying[n - 12..n - 10].copy_from_slice(&0xfffeu16.to_le_bytes());
    lying[n - 14..n - 12].copy_from_slice(&0xfffeu16.to_le_bytes());
    assert_rejected("lying_count.pt", &lying, None, "entries");
}

#[test]
fn hostile_pickles_do_not_overflow_or_explode() {
    // One million nested tuples: dropping them must not recurse.
    let mut deep = vec![0x80, 2, b'N'];
    deep.extend(std::iter::repeat_n(0x85u8, 1_000_000));
    deep.push(b'.');
    assert_rejected("deep.pt", &archive(&deep, &six()), None, "no state dict");
    // A chain of lists appended into each other after construction (memo-shared).
    let mut chain = vec![0x80, 2];
    for i in 0..200_000u32 {
        chain.push(b']');
        chain.push(b'r');
        chain.extend_from_slice(&i.to_le_bytes());
        if i > 0 {
            chain.push(b'j');
            chain.extend_from_slice(&(i - 1).to_le_bytes());
            chain.push(b'j');
            chain.extend_from_slice(&i.to_le_bytes());
            chain.extend_from_slice(b"a0");
        }
        chain.push(b'0');
    }
    chain.extend_from_slice(b"N.");
    assert_rejected("chain.pt", &archive(&chain, &six()), None, "no state dict");
    // "Billion laughs" through the memo: 64 levels of (x, x) stay shared, not copied.
    let mut laughs = vec![0x80, 2, b']', b'q', 0];
    for _ in 0..64 {
        laughs.extend_from_slice(&[b'0', b'h', 0, b'h', 0, 0x86, b'q', 0]);
    }
    laughs.push(b'.');
    assert_rejected("laughs.pt", &archive(&laughs, &six()), None, "no state dict");
}

#[test]
fn self_referential_and_inflating_pickles_are_bounded() {
    // Found by `cargo fuzz run pickle` / `pytorch_zip` (LeakSanitizer): a dict set as its own
    // value (`d[d] = d` via SETITEMS) or a list appended to itself was a leaked Rc cycle. Now
    // every container is emptied when the unpickled value is dropped (checked in pickle.rs's
    // unit test); here: such pickles are typed errors.
    assert_rejected("self_dict.pt", &archive(b"\x80\x02}q\x00h\x00(h\x00h\x00u.", &six()), None, "no state dict");
    assert_rejected("self_list.pt", &archive(b"\x80\x02]q\x00h\x00a.", &six()), None, "no state dict");
    // The fuzzer's own reproducer (a mutated pytorch_bn_proto5.pth).
    let leak = b"\x80\x02}q'}}22}}}}}}sssssssssssssssssssssssssssss}}}}}}}}}}Rq\x1dtq\x1eR1\x1fX\x08\x00\x00\x00bn0.t\x01\x002qG";
    assert_rejected("fuzz_leak.pt", &archive(leak, &six()), None, "pickle");

    // Review finding while fuzzing: an OrderedDict REDUCE copies its list of pairs, and the memo
    // can name the same list thousands of times (60 KB of pickle → gigabytes). Copies now draw on
    // a budget proportional to the pickle's length.
    let mut od = b"\x80\x02ccollections\nOrderedDict\nq\x00]q\x01(".to_vec();
    od.extend(std::iter::repeat_n(&b"NN\x86"[..], 10_000).flatten());
    od.push(b'e');
    od.extend(std::iter::repeat_n(&b"h\x00h\x01\x85R"[..], 5_000).flatten());
    od.push(b'.');
    assert_rejected("ordered_dict_inflation.pt", &archive(&od, &six()), None, "copies more values");
    // The same through a tensor's size and stride tuples (copied into every tensor rebuilt).
    let mut ranks = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\nq\x00((".to_vec();
    s(&mut ranks, "storage");
    ranks.extend_from_slice(b"ctorch\nFloatStorage\n");
    s(&mut ranks, "0");
    s(&mut ranks, "cpu");
    ranks.extend_from_slice(b"K\x06tQK\x00(");
    ranks.extend(std::iter::repeat_n(&b"K\x01"[..], 15_000).flatten());
    ranks.extend_from_slice(b"tq\x012\x89}tq\x02");
    ranks.extend(std::iter::repeat_n(&b"h\x00h\x02R"[..], 5_000).flatten());
    ranks.push(b'.');
    assert_rejected("rank_inflation.pt", &archive(&ranks, &six()), None, "copies more values");
}

#[test]
fn corrupting_any_byte_never_panics() {
    // Every third byte of each fixture replaced by 0xff or 0x00: open either succeeds or returns
    // a Weights error; reading every tensor of a successful open also never panics.
    for name in ["pytorch_bn.pth", "pytorch_bn_legacy.pth", "pytorch_bn_proto5.pth"] {
        let good = std::fs::read(fixture(name)).unwrap();
        let path = temp_file(&format!("corrupt-{name}"), &good);
        for at in (0..good.len()).step_by(3) {
            let mut bad = good.clone();
            bad[at] = if at % 2 == 0 { 0xff } else { 0x00 };
            std::fs::write(&path, &bad).unwrap();
            match pytorch::open(&path) {
                Ok(src) => {
                    for t in src.tensors() {
                        let _ = src.bytes(&t.name);
                    }
                }
                Err(KestrelError::Weights { .. }) => {}
                Err(e) => panic!("{name} byte {at}: wrong error kind {e}"),
            }
        }
        for len in (0..good.len()).step_by(61) {
            std::fs::write(&path, &good[..len]).unwrap();
            assert!(matches!(pytorch::open(&path), Err(KestrelError::Weights { .. })), "{name} truncated to {len}");
        }
    }
}
