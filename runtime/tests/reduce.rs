//! Reduction and pooling kernels (token mean, max_pool1d, adaptive_avg_pool2d, argmax, top-k)
//! vs the CPU reference.

mod common;

use std::sync::Arc;

use common::{all, assert_close, rand_vec};
use kestrel::ops::reduce;
use kestrel::reference;
use kestrel::{Context, KestrelError, Recorder, Tensor};

fn upload(ctx: &Arc<Context>, shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::from_f32(ctx, shape, data).unwrap()
}

/// Values in {-2, -1, 0, 1, 2}: many ties, to check that the lower index wins.
fn quantised(n: usize, seed: u64) -> Vec<f32> {
    rand_vec(n, seed).iter().map(|v| (v * 2.49).round()).collect()
}

#[test]
fn mean_tokens_matches_reference() {
    // f32 tolerance: a sequential f32 sum over ≤ 4099 tokens of values in [-1, 1); its rounding
    // errors random-walk to ~√N·2⁻²⁴·|partial sums|, far below 2e-6 after dividing by N.
    let shapes: &[[usize; 3]] = &[[1, 1, 1], [2, 197, 33], [3, 7, 577], [1, 577, 7], [2, 33, 1000], [1, 4099, 3]];
    for (cfg, ctx) in all() {
        for (i, &[b, n, c]) in shapes.iter().enumerate() {
            let x = rand_vec(b * n * c, 10 + i as u64);
            let mut rec = Recorder::new(&ctx);
            let y = reduce::mean_tokens(&mut rec, &upload(&ctx, &[b, n, c], &x)).unwrap();
            rec.submit().unwrap();
            assert_eq!(y.shape(), [b, c]);
            let want = reference::reduce::mean_tokens(&x, b, n, c);
            assert_close(&y.to_vec_f32().unwrap(), &want, 2e-6, 1e-6, &format!("{cfg} mean_tokens {:?}", [b, n, c]));
        }
    }
}

#[test]
fn max_pool1d_matches_pytorch_semantics() {
    // (B, C, L, kernel, stride, padding); exact: a max involves no rounding.
    let cases: &[[usize; 6]] = &[
        [1, 1, 1, 1, 1, 0],
        [2, 7, 33, 3, 2, 1],
        [1, 3, 197, 5, 3, 2],
        [2, 2, 577, 2, 2, 0],
        [1, 1, 1000, 7, 1, 3],
        [1, 2, 4099, 4, 4, 2],
        [1, 2, 7, 7, 3, 3],
    ];
    for (cfg, ctx) in all() {
        for (i, &[b, c, l, k, s, p]) in cases.iter().enumerate() {
            let x = rand_vec(b * c * l, 20 + i as u64);
            let mut rec = Recorder::new(&ctx);
            let y = reduce::max_pool1d(&mut rec, &upload(&ctx, &[b, c, l], &x), k, s, p).unwrap();
            rec.submit().unwrap();
            let out_len = (l + 2 * p - k) / s + 1;
            assert_eq!(y.shape(), [b, c, out_len]);
            let want = reference::reduce::max_pool1d(&x, l, k, s, p);
            assert_close(&y.to_vec_f32().unwrap(), &want, 0.0, 0.0, &format!("{cfg} max_pool1d {:?}", cases[i]));
        }
    }
}

#[test]
fn adaptive_avg_pool2d_uses_pytorch_bins() {
    // (B, C, H, W, OH, OW): identity, uneven bins, divisible bins, more outputs than inputs
    // (overlapping bins), global pooling. f32 tolerance: sums of ≤ 6501 values in [-1, 1)
    // divided by the bin size.
    let cases: &[[usize; 6]] = &[
        [1, 1, 1, 1, 1, 1],
        [2, 3, 7, 7, 3, 3],
        [1, 2, 33, 17, 5, 7],
        [1, 1, 14, 14, 7, 7],
        [1, 2, 7, 5, 10, 8],
        [1, 1, 197, 33, 1, 1],
        [2, 1, 577, 7, 7, 7],
    ];
    for (cfg, ctx) in all() {
        for (i, &[b, c, h, w, oh, ow]) in cases.iter().enumerate() {
            let x = rand_vec(b * c * h * w, 30 + i as u64);
            let mut rec = Recorder::new(&ctx);
            let y = reduce::adaptive_avg_pool2d(&mut rec, &upload(&ctx, &[b, c, h, w], &x), oh, ow).unwrap();
            rec.submit().unwrap();
            assert_eq!(y.shape(), [b, c, oh, ow]);
            let want = reference::reduce::adaptive_avg_pool2d(&x, h, w, oh, ow);
            assert_close(&y.to_vec_f32().unwrap(), &want, 1e-6, 1e-6, &format!("{cfg} adaptive_avg_pool2d {:?}", cases[i]));
        }
    }
}

/// `[.., n]` shapes for argmax and top-k: awkward sizes, long rows, and an LLM vocabulary.
const ROWS: &[&[usize]] = &[&[1, 1], &[7, 7], &[33, 197], &[197, 33], &[3, 577], &[2, 1000], &[2, 4099], &[2, 50257], &[577]];

#[test]
fn argmax_returns_the_first_maximum() {
    // Exact: indices must match.
    for (cfg, ctx) in common::all_with_subgroup_layouts() {
        for (i, shape) in ROWS.iter().enumerate() {
            let n = *shape.last().unwrap();
            let numel: usize = shape.iter().product();
            for x in [rand_vec(numel, 40 + i as u64), quantised(numel, 50 + i as u64)] {
                let mut rec = Recorder::new(&ctx);
                let y = reduce::argmax(&mut rec, &upload(&ctx, shape, &x)).unwrap();
                rec.submit().unwrap();
                assert_eq!(y.shape(), &shape[..shape.len() - 1]);
                assert_eq!(y.to_vec_u32().unwrap(), reference::reduce::argmax(&x, n), "{cfg} argmax {shape:?}");
            }
        }
    }
}

#[test]
fn top_k_is_sorted_with_ties_by_index() {
    // Exact: values are copied, indices must match.
    let ks = [1, 7, 5, 33, 64, 100, 33, 64, 1];
    for (cfg, ctx) in common::all_with_subgroup_layouts() {
        for (i, (shape, &k)) in ROWS.iter().zip(&ks).enumerate() {
            let n = *shape.last().unwrap();
            let numel: usize = shape.iter().product();
            for x in [rand_vec(numel, 60 + i as u64), quantised(numel, 70 + i as u64)] {
                let mut rec = Recorder::new(&ctx);
                let (v, idx) = reduce::top_k(&mut rec, &upload(&ctx, shape, &x), k).unwrap();
                rec.submit().unwrap();
                let mut out_shape = shape.to_vec();
                *out_shape.last_mut().unwrap() = k;
                assert_eq!(v.shape(), out_shape.as_slice());
                assert_eq!(idx.shape(), out_shape.as_slice());
                let (want_v, want_i) = reference::reduce::top_k(&x, n, k);
                assert_eq!(idx.to_vec_u32().unwrap(), want_i, "{cfg} top_k indices {shape:?} k={k}");
                assert_close(&v.to_vec_f32().unwrap(), &want_v, 0.0, 0.0, &format!("{cfg} top_k values {shape:?} k={k}"));
            }
        }
    }
}

#[test]
fn infinities_and_signed_zeros_are_ordered() {
    // −0 ties with +0 (lower index first); ±inf and f32::MIN/MAX rank by value.
    let x = [0.0, -0.0, f32::NEG_INFINITY, 1.0, f32::INFINITY, -0.0, f32::MIN, f32::MAX, -1.0, 0.0, f32::NEG_INFINITY];
    let n = x.len();
    for (cfg, ctx) in all() {
        let t = upload(&ctx, &[1, n], &x);
        let mut rec = Recorder::new(&ctx);
        let (v, idx) = reduce::top_k(&mut rec, &t, n).unwrap();
        let neg = upload(&ctx, &[2, 3], &[-0.0, 0.0, -1.0, f32::NEG_INFINITY, f32::MIN, f32::NEG_INFINITY]);
        let am = reduce::argmax(&mut rec, &neg).unwrap();
        rec.submit().unwrap();
        assert_eq!(idx.to_vec_u32().unwrap(), vec![4, 7, 3, 0, 1, 5, 9, 8, 6, 2, 10], "{cfg} special top_k");
        let got: Vec<u32> = v.to_vec_f32().unwrap().iter().map(|f| f.to_bits()).collect();
        let want: Vec<u32> = [4, 7, 3, 0, 1, 5, 9, 8, 6, 2, 10].iter().map(|&j: &usize| x[j].to_bits()).collect();
        assert_eq!(got, want, "{cfg} special top_k values keep their bits");
        assert_eq!(am.to_vec_u32().unwrap(), vec![0, 1], "{cfg} special argmax");
    }
}

#[test]
fn chunks_cover_tensors_larger_than_a_binding() {
    // 1 MiB bindings: every op below reads 1.2–2.4 MiB and so runs in several dispatches.
    let ctx = common::small_bindings();
    let rows = rand_vec(300 * 2049, 1);
    let t_rows = upload(&ctx, &[300, 2049], &rows);
    let tokens = rand_vec(5 * 100 * 1000, 2);
    let t_tokens = upload(&ctx, &[5, 100, 1000], &tokens);
    let planes = rand_vec(3 * 100 * 33 * 33, 3);
    let t_planes = upload(&ctx, &[3, 100, 33, 33], &planes);
    let mut rec = Recorder::new(&ctx);
    let am = reduce::argmax(&mut rec, &t_rows).unwrap();
    let (tv, ti) = reduce::top_k(&mut rec, &t_rows, 3).unwrap();
    let pooled = reduce::max_pool1d(&mut rec, &t_rows.reshape(&[3, 100, 2049]).unwrap(), 3, 2, 1).unwrap();
    let mean = reduce::mean_tokens(&mut rec, &t_tokens).unwrap();
    let adaptive = reduce::adaptive_avg_pool2d(&mut rec, &t_planes, 5, 3).unwrap();
    assert!(rec.len() >= 10, "expected chunked dispatches, got {}", rec.len());
    rec.submit().unwrap();
    assert_eq!(am.to_vec_u32().unwrap(), reference::reduce::argmax(&rows, 2049), "chunked argmax");
    let (want_v, want_i) = reference::reduce::top_k(&rows, 2049, 3);
    assert_eq!(ti.to_vec_u32().unwrap(), want_i, "chunked top_k");
    assert_close(&tv.to_vec_f32().unwrap(), &want_v, 0.0, 0.0, "chunked top_k values");
    assert_close(&pooled.to_vec_f32().unwrap(), &reference::reduce::max_pool1d(&rows, 2049, 3, 2, 1), 0.0, 0.0, "chunked max_pool1d");
    let want = reference::reduce::mean_tokens(&tokens, 5, 100, 1000);
    assert_close(&mean.to_vec_f32().unwrap(), &want, 2e-6, 1e-6, "chunked mean_tokens");
    let want = reference::reduce::adaptive_avg_pool2d(&planes, 33, 33, 5, 3);
    assert_close(&adaptive.to_vec_f32().unwrap(), &want, 1e-6, 1e-6, "chunked adaptive_avg_pool2d");
}

#[test]
fn bad_arguments_are_errors() {
    let ctx = common::fast();
    let x3 = upload(&ctx, &[2, 3, 8], &[0.0; 48]);
    let x4 = upload(&ctx, &[1, 2, 3, 8], &[0.0; 48]);
    let zero = upload(&ctx, &[2, 0, 8], &[]);
    let empty_row = upload(&ctx, &[3, 0], &[]);
    let h = Tensor::from_f32_as_f16(&ctx, &[2, 3, 8], &[0.0; 48]).unwrap();
    let mut rec = Recorder::new(&ctx);
    let shape = |r: kestrel::Result<Tensor>| matches!(r, Err(KestrelError::Shape { .. }));
    let invalid = |r: kestrel::Result<Tensor>| matches!(r, Err(KestrelError::InvalidArgument { .. }));
    let dtype = |r: kestrel::Result<Tensor>| matches!(r, Err(KestrelError::UnsupportedDtype { .. }));
    assert!(shape(reduce::mean_tokens(&mut rec, &x4)));
    assert!(shape(reduce::mean_tokens(&mut rec, &zero)));
    assert!(shape(reduce::max_pool1d(&mut rec, &x4, 2, 2, 0)));
    assert!(shape(reduce::adaptive_avg_pool2d(&mut rec, &x3, 2, 2)));
    assert!(shape(reduce::argmax(&mut rec, &empty_row)));
    assert!(shape(reduce::top_k(&mut rec, &empty_row, 1).map(|r| r.0)));
    assert!(invalid(reduce::max_pool1d(&mut rec, &x3, 0, 1, 0)));
    assert!(invalid(reduce::max_pool1d(&mut rec, &x3, 2, 0, 0)));
    assert!(invalid(reduce::max_pool1d(&mut rec, &x3, 3, 1, 2)));
    assert!(invalid(reduce::max_pool1d(&mut rec, &x3, 9, 1, 0)));
    assert!(invalid(reduce::max_pool1d(&mut rec, &x3, usize::MAX, 1, usize::MAX / 2)));
    assert!(invalid(reduce::adaptive_avg_pool2d(&mut rec, &x4, 0, 2)));
    assert!(invalid(reduce::adaptive_avg_pool2d(&mut rec, &x4, usize::MAX, usize::MAX)));
    assert!(invalid(reduce::top_k(&mut rec, &x3, 0).map(|r| r.0)));
    assert!(invalid(reduce::top_k(&mut rec, &x3, 9).map(|r| r.0)));
    let wide = upload(&ctx, &[2000], &vec![0.0; 2000]);
    assert!(invalid(reduce::top_k(&mut rec, &wide, reduce::MAX_TOP_K + 1).map(|r| r.0)));
    assert!(dtype(reduce::mean_tokens(&mut rec, &h)));
    assert!(dtype(reduce::max_pool1d(&mut rec, &h, 2, 2, 0)));
    assert!(dtype(reduce::argmax(&mut rec, &h)));
    assert!(dtype(reduce::top_k(&mut rec, &h, 1).map(|r| r.0)));
    assert!(rec.is_empty(), "failed ops must not record dispatches");
}
