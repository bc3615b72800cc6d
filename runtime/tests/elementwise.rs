//! Elementwise kernels vs the CPU reference.

mod common;

use std::sync::Arc;

use common::{AWKWARD, all, assert_close, rand_vec};
use kestrel::ops::elementwise::{self, Binary, Unary};
use kestrel::reference;
use kestrel::{Context, DType, KestrelError, Recorder, Tensor};

const UNARY: &[Unary] = &[
    Unary::Relu,
    Unary::Sigmoid,
    Unary::Silu,
    Unary::GeluErf,
    Unary::GeluTanh,
    Unary::QuickGelu,
    Unary::Hardswish,
    Unary::Hardsigmoid,
    Unary::Scale { alpha: -1.5, beta: 0.25 },
];

// f32 tolerance: the shader uses f32 exp and a 1.5e-7 erf approximation; the reference is f64.
const ATOL: f32 = 2e-6;
const RTOL: f32 = 2e-6;

#[test]
fn unary_ops_match_reference() {
    for (cfg, ctx) in all() {
        for &n in AWKWARD {
            let x: Vec<f32> = rand_vec(n, n as u64).iter().map(|v| v * 8.0).collect();
            let t = Tensor::from_f32(&ctx, &[n], &x).unwrap();
            for &op in UNARY {
                let mut rec = Recorder::new(&ctx);
                let y = elementwise::unary(&mut rec, &t, op).unwrap();
                rec.submit().unwrap();
                assert_close(&y.to_vec_f32().unwrap(), &reference::elementwise::unary(&x, op), ATOL, RTOL, &format!("{cfg} {op:?} n={n}"));
            }
        }
    }
}

#[test]
fn binary_ops_broadcast_like_numpy() {
    let cases: &[(&[usize], &[usize])] = &[
        (&[7], &[7]),
        (&[33, 197], &[197]),
        (&[197, 33], &[197, 1]),
        (&[2, 1, 7], &[1, 5, 1]),
        (&[1], &[3, 577]),
        (&[2, 3, 1, 5, 1, 2, 1, 3], &[4, 5, 1, 1, 1, 3]),
    ];
    for (cfg, ctx) in all() {
        for (i, (sa, sb)) in cases.iter().enumerate() {
            let a = rand_vec(sa.iter().product(), 10 + i as u64);
            let b: Vec<f32> = rand_vec(sb.iter().product(), 20 + i as u64).iter().map(|v| v + 2.0).collect();
            let ta = Tensor::from_f32(&ctx, sa, &a).unwrap();
            let tb = Tensor::from_f32(&ctx, sb, &b).unwrap();
            for op in [Binary::Add, Binary::Sub, Binary::Mul, Binary::Div, Binary::SiluMul] {
                let mut rec = Recorder::new(&ctx);
                let y = elementwise::binary(&mut rec, &ta, &tb, op).unwrap();
                rec.submit().unwrap();
                let (want, shape) = reference::elementwise::binary(&a, sa, &b, sb, op).unwrap();
                assert_eq!(y.shape(), shape.as_slice());
                // One f32 rounding; silu·b: silu's tolerance (f32 exp, ATOL above) times |b| < 3.
                let (atol, rtol) = if op == Binary::SiluMul { (3.0 * ATOL, RTOL) } else { (1e-6, 1e-6) };
                assert_close(&y.to_vec_f32().unwrap(), &want, atol, rtol, &format!("{cfg} {op:?} {sa:?} {sb:?}"));
            }
        }
    }
}

#[test]
fn incompatible_broadcast_is_an_error() {
    let ctx = common::fast();
    let a = Tensor::from_f32(&ctx, &[3, 4], &[0.0; 12]).unwrap();
    let b = Tensor::from_f32(&ctx, &[5], &[0.0; 5]).unwrap();
    let mut rec = Recorder::new(&ctx);
    assert!(elementwise::add(&mut rec, &a, &b).is_err());
}

#[test]
fn casts_round_trip_through_f16() {
    for (cfg, ctx) in all() {
        for &n in AWKWARD {
            let x: Vec<f32> = rand_vec(n, 99 + n as u64).iter().map(|v| v * 100.0).collect();
            let t = Tensor::from_f32(&ctx, &[n], &x).unwrap();
            let mut rec = Recorder::new(&ctx);
            let h = elementwise::cast(&mut rec, &t, DType::F16).unwrap();
            let back = elementwise::cast(&mut rec, &h, DType::F32).unwrap();
            rec.submit().unwrap();
            let want = common::f16_round(&x);
            // Exact: both directions are IEEE conversions with round-to-nearest-even.
            assert_close(&h.to_vec_f32().unwrap(), &want, 0.0, 0.0, &format!("{cfg} to f16 n={n}"));
            assert_close(&back.to_vec_f32().unwrap(), &want, 0.0, 0.0, &format!("{cfg} to f32 n={n}"));
        }
    }
}

#[test]
fn silu_mul_halves_matches_silu_mul_of_the_two_halves() {
    // A fused gate|up output [rows, 2F] against the reference silu_mul of its halves; the last
    // case (140 × 2·1000 f32 = 1.1 MB) exceeds small_bindings' 1 MiB: two windowed dispatches.
    let cases: &[(&str, Arc<Context>, &[usize])] = &[
        ("fast", common::fast(), &[1, 2]),
        ("fast", common::fast(), &[7, 2 * 197]),
        ("fallback", common::fallback(), &[33, 2 * 7]),
        ("gpu-kernels", common::gpu_kernels(), &[3, 5, 2 * 33]),
        ("small-bindings", common::small_bindings(), &[140, 2 * 1000]),
    ];
    for (cfg, ctx, shape) in cases {
        let x = rand_vec(shape.iter().product(), 41);
        let (&width, lead) = shape.split_last().unwrap();
        let half = width / 2;
        let rows = x.len() / width;
        let gate: Vec<f32> = (0..rows).flat_map(|r| x[r * width..r * width + half].to_vec()).collect();
        let up: Vec<f32> = (0..rows).flat_map(|r| x[r * width + half..(r + 1) * width].to_vec()).collect();
        let (want, _) = reference::elementwise::binary(&gate, &[rows, half], &up, &[rows, half], Binary::SiluMul).unwrap();
        let mut rec = Recorder::new(ctx);
        let y = elementwise::silu_mul_halves(&mut rec, &Tensor::from_f32(ctx, shape, &x).unwrap()).unwrap();
        assert_eq!(rec.len(), if *cfg == "small-bindings" { 2 } else { 1 }, "{cfg} {shape:?} dispatches");
        rec.submit().unwrap();
        assert_eq!(y.shape(), [lead, &[half]].concat().as_slice());
        // silu's tolerance (f32 exp) times |up| < 1.
        assert_close(&y.to_vec_f32().unwrap(), &want, ATOL, RTOL, &format!("{cfg} silu_mul_halves {shape:?}"));
    }
    let ctx = common::fast();
    let mut rec = Recorder::new(&ctx);
    let odd = Tensor::from_f32(&ctx, &[2, 3], &[0.0; 6]).unwrap();
    assert!(matches!(elementwise::silu_mul_halves(&mut rec, &odd), Err(KestrelError::Shape { .. })));
}

#[test]
fn chunked_windows_cover_large_tensors() {
    // With a 1 MiB binding limit, 600k elements (2.3 MiB) take three windows with unaligned starts.
    let ctx = common::small_bindings();
    let n = 600_001;
    let a = rand_vec(n, 5);
    let b = rand_vec(n, 6);
    let bias = rand_vec(7, 7);
    let ta = Tensor::from_f32(&ctx, &[n], &a).unwrap();
    let tb = Tensor::from_f32(&ctx, &[n], &b).unwrap();
    let tc = Tensor::from_f32(&ctx, &[n / 7 + 1, 7], &[a.clone(), vec![0.0; 6]].concat()[..(n / 7 + 1) * 7]).unwrap();
    let tbias = Tensor::from_f32(&ctx, &[7], &bias).unwrap();
    let mut rec = Recorder::new(&ctx);
    let sum = elementwise::add(&mut rec, &ta, &tb).unwrap();
    let act = elementwise::unary(&mut rec, &ta, Unary::Silu).unwrap();
    let bc = elementwise::add(&mut rec, &tc, &tbias).unwrap();
    assert!(rec.len() >= 9, "expected chunked dispatches, got {}", rec.len());
    rec.submit().unwrap();
    let want: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
    assert_close(&sum.to_vec_f32().unwrap(), &want, 1e-6, 0.0, "chunked add");
    assert_close(&act.to_vec_f32().unwrap(), &reference::elementwise::unary(&a, Unary::Silu), ATOL, RTOL, "chunked silu");
    let c_host = tc.to_vec_f32().unwrap();
    let (want, _) = reference::elementwise::binary(&c_host, tc.shape(), &bias, &[7], Binary::Add).unwrap();
    assert_close(&bc.to_vec_f32().unwrap(), &want, 1e-6, 0.0, "chunked broadcast add");
}
