//! Selection scores (cosine of rows with one vector) vs the CPU reference at awkward shapes.
//!
//! Tolerance (f32 only): 2e-6 absolute on values in [-1, 1] — two f32 sums of D ≤ 1031
//! products against the f64 reference (measured 1.2e-7 on lavapipe).

mod common;

use common::{all, assert_close, rand_vec};
use kestrel::ops::select::cosine_rows;
use kestrel::reference;
use kestrel::{DType, Recorder, Tensor};

#[test]
fn cosine_rows_matches_reference() {
    let mut worst = 0.0f32;
    for (cfg, ctx) in all() {
        for &(lead, d) in &[(&[1usize][..], 1usize), (&[7], 3), (&[3, 33], 16), (&[197], 64), (&[2, 577], 33), (&[5], 1031), (&[50], 768)] {
            let rows: usize = lead.iter().product();
            let seed = (rows * 31 + d) as u64;
            let mut x = rand_vec(rows * d, seed);
            // A zero row: the eps clamp gives 0, not NaN.
            x[..d].fill(0.0);
            let y = rand_vec(d, seed + 7);
            let mut shape = lead.to_vec();
            shape.push(d);
            let tx = Tensor::from_f32(&ctx, &shape, &x).unwrap();
            let ty = Tensor::from_f32(&ctx, &[1, d], &y).unwrap();
            let mut rec = Recorder::new(&ctx);
            let out = cosine_rows(&mut rec, &tx, &ty).unwrap();
            rec.submit().unwrap();
            assert_eq!(out.shape(), lead);
            let got = out.to_vec_f32().unwrap();
            assert_eq!(got[0], 0.0);
            let want = reference::select::cosine_rows(&x, &y, d);
            worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(worst, f32::max);
            assert_close(&got, &want, 2e-6, 0.0, &format!("{cfg} {shape:?}"));
        }
    }
    eprintln!("cosine_rows: max |error| {worst:e}");
}

#[test]
fn cosine_rows_rejects_bad_inputs() {
    let ctx = common::fast();
    let x = Tensor::from_f32(&ctx, &[2, 3], &[0.0; 6]).unwrap();
    let y4 = Tensor::from_f32(&ctx, &[4], &[0.0; 4]).unwrap();
    let u = Tensor::from_u32(&ctx, &[3], &[0; 3]).unwrap();
    let empty = Tensor::empty(&ctx, &[0, 3], DType::F32).unwrap();
    let y3 = Tensor::from_f32(&ctx, &[3], &[1.0; 3]).unwrap();
    let mut rec = Recorder::new(&ctx);
    assert!(cosine_rows(&mut rec, &x, &y4).is_err());
    assert!(cosine_rows(&mut rec, &x, &u).is_err());
    assert!(cosine_rows(&mut rec, &empty, &y3).is_err());
}
