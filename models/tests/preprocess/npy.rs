//! `.npy` reader / writer: round trips, other float types, malformed files.

use kestrel_models::ModelError;
use kestrel_models::npy::{MAX_HEADER_LEN, encode_npy_f32, parse_npy_f32, read_npy_f32, write_npy_f32};

/// A version 1.0 file with header `dict` (padded to 64 bytes) and `data`.
fn raw(dict: &str, data: &[u8]) -> Vec<u8> {
    let mut header = dict.to_string();
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn expect_npy_error(bytes: &[u8], what: &str) {
    match parse_npy_f32(bytes) {
        Err(ModelError::Npy { detail, .. }) => println!("{what}: {detail}"),
        other => panic!("{what}: expected Npy error, got {other:?}"),
    }
}

#[test]
fn npy_round_trips() {
    let cases: Vec<(Vec<usize>, Vec<f32>)> = vec![
        (vec![], vec![3.5]),
        (vec![4], vec![1.0, -2.0, f32::MAX, f32::MIN_POSITIVE]),
        (vec![2, 0, 3], vec![]),
        (vec![1, 3, 2, 2], (0..12).map(|i| i as f32 * 0.25 - 1.0).collect()),
    ];
    for (shape, data) in cases {
        let bytes = encode_npy_f32(&shape, &data).expect("encode");
        assert_eq!(bytes.len() % 64, (data.len() * 4) % 64, "data starts 64-byte aligned");
        let (s, d) = parse_npy_f32(&bytes).expect("parse");
        assert_eq!((s, d), (shape, data));
    }
    let nan = parse_npy_f32(&encode_npy_f32(&[1], &[f32::NAN]).expect("nan")).expect("nan").1;
    assert!(nan[0].is_nan());

    let path = std::env::temp_dir().join(format!("kestrel_npy_test_{}.npy", std::process::id()));
    let data: Vec<f32> = (0..30).map(|i| i as f32).collect();
    write_npy_f32(&path, &[5, 6], &data).expect("write");
    let back = read_npy_f32(&path);
    let _ = std::fs::remove_file(&path);
    assert_eq!(back.expect("read"), (vec![5, 6], data));

    assert!(matches!(encode_npy_f32(&[2, 2], &[1.0]), Err(ModelError::Npy { .. })));
    assert!(matches!(encode_npy_f32(&[usize::MAX, 2], &[]), Err(ModelError::Npy { .. })));
}

#[test]
fn npy_reads_other_float_types() {
    let f64s: Vec<u8> = [1.5f64, -2.25].iter().flat_map(|v| v.to_le_bytes()).collect();
    let got = parse_npy_f32(&raw("{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }", &f64s));
    assert_eq!(got.expect("f8"), (vec![2], vec![1.5, -2.25]));

    let f16s: Vec<u8> = [0x3C00u16, 0xC000].iter().flat_map(|v| v.to_le_bytes()).collect();
    let got = parse_npy_f32(&raw("{'descr': '<f2', 'fortran_order': False, 'shape': (1, 2), }", &f16s));
    assert_eq!(got.expect("f2"), (vec![1, 2], vec![1.0, -2.0]));

    let be: Vec<u8> = [0.5f32, 8.0].iter().flat_map(|v| v.to_be_bytes()).collect();
    let got = parse_npy_f32(&raw("{\"shape\": (2,), \"descr\": \">f4\", \"fortran_order\": False}", &be));
    assert_eq!(got.expect("big-endian"), (vec![2], vec![0.5, 8.0]));

    // Version 2.0 preamble (4-byte header length).
    let v1 = encode_npy_f32(&[2], &[1.0, 2.0]).expect("encode");
    let mut v2 = b"\x93NUMPY\x02\x00".to_vec();
    v2.extend_from_slice(&u32::from(u16::from_le_bytes([v1[8], v1[9]])).to_le_bytes());
    v2.extend_from_slice(&v1[10..]);
    assert_eq!(parse_npy_f32(&v2).expect("v2"), (vec![2], vec![1.0, 2.0]));
}

#[test]
fn malformed_npy_files_are_typed_errors() {
    let good = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
    let data = [0u8; 8];
    assert!(parse_npy_f32(&raw(good, &data)).is_ok());

    expect_npy_error(b"", "empty");
    expect_npy_error(b"\x93NUMPX\x01\x00\x10\x00", "bad magic");
    expect_npy_error(b"\x93NUMPY\x09\x00\x10\x00", "unknown version");
    expect_npy_error(b"\x93NUMPY\x02\x00\x10\x00", "v2 preamble cut");
    expect_npy_error(&raw(good, &data)[..40], "cut inside header");
    let mut long = b"\x93NUMPY\x02\x00".to_vec();
    long.extend_from_slice(&u32::MAX.to_le_bytes());
    expect_npy_error(&long, "4 GiB header");
    let mut over = b"\x93NUMPY\x02\x00".to_vec();
    over.extend_from_slice(&((MAX_HEADER_LEN + 1) as u32).to_le_bytes());
    over.extend(std::iter::repeat_n(b' ', MAX_HEADER_LEN + 1));
    expect_npy_error(&over, "header over the limit");
    expect_npy_error(&raw(good, &data[..7]), "data short");
    expect_npy_error(&raw(good, &[0u8; 12]), "data long");
    expect_npy_error(
        &raw("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4294967296), }", &[]),
        "shape overflow",
    );
    expect_npy_error(&raw("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }", &[]), "negative dim");
    expect_npy_error(&raw("{'descr': '<f4', 'fortran_order': False, 'shape': (2), }", &data), "shape not a tuple");
    expect_npy_error(&raw("{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }", &data), "fortran order");
    expect_npy_error(&raw("{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }", &data), "int dtype");
    expect_npy_error(&raw("{'descr': '<f4', 'shape': (2,), }", &data), "missing key");
    expect_npy_error(&raw("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", &data), "repeated key");
    expect_npy_error(&raw("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}", &data), "extra key");
    expect_npy_error(&raw("{'descr': '<f4, 'fortran_order': False, 'shape': (2,), }", &data), "broken quote");
    expect_npy_error(&raw("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), } junk", &data), "trailing junk");
    expect_npy_error(&raw("{'descr': '<f4', 'fortran_order': False, 'shape': (2,", &data), "unterminated");
    let deep = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({}), }}", "1, ".repeat(65));
    expect_npy_error(&raw(&deep, &[0u8; 4]), "too many dims");
    let mut bad_utf8 = raw(good, &data);
    bad_utf8[12] = 0xFF;
    expect_npy_error(&bad_utf8, "non-UTF-8 header");
    assert!(matches!(read_npy_f32(std::path::Path::new("/nonexistent/kestrel.npy")), Err(ModelError::Io { .. })));
}
