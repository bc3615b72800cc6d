//! Elementwise kernels vs the CPU reference.

mod common;

use common::{AWKWARD, all, assert_close, rand_vec};
use kestrel::ops::elementwise::{self, Binary, Unary};
use kestrel::reference;
use kestrel::{DType, Recorder, Tensor};

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
