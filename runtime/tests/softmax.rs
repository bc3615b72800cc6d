//! Softmax kernels (scale, broadcast bias, causal mask) vs the CPU reference.

mod common;

use std::sync::Arc;

use common::{all, assert_close, rand_vec};
use kestrel::ops::softmax::{SoftmaxOptions, softmax, softmax_top1};
use kestrel::reference;
use kestrel::{Context, KestrelError, Recorder, Tensor};

/// `[.., rows, cols]` shapes: awkward row and column counts, rows longer than the 256-invocation
/// workgroup (1000, 4099: looped), more rows than columns and the reverse, rank 1 and rank 4.
const SHAPES: &[&[usize]] =
    &[&[1, 1], &[7, 7], &[33, 197], &[197, 33], &[3, 577], &[577, 7], &[2, 1000], &[2, 4099], &[2, 3, 7, 33], &[197]];

// f32 tolerance: logits here are O(1), so exp (Vulkan: 3 + 2|x| ulp) and the f32 row sum (a
// tree over ≤ 4099 terms) are each within a few 1e-7 relative; outputs lie in [0, 1].
const ATOL: f32 = 1e-6;
const RTOL: f32 = 1e-5;

fn upload(ctx: &Arc<Context>, shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::from_f32(ctx, shape, data).unwrap()
}

/// Runs the GPU softmax and the reference on `x` and compares them.
#[allow(clippy::too_many_arguments)]
fn check(ctx: &Arc<Context>, cfg: &str, shape: &[usize], x: &[f32], causal: bool, bias: Option<(&[f32], &[usize])>, scale: f32, rtol: f32) {
    let tx = upload(ctx, shape, x);
    let tb = bias.map(|(b, s)| upload(ctx, s, b));
    let mut rec = Recorder::new(ctx);
    let y = softmax(&mut rec, &tx, &SoftmaxOptions { causal, bias: tb.as_ref(), scale }).unwrap();
    rec.submit().unwrap();
    assert_eq!(y.shape(), shape);
    let got = y.to_vec_f32().unwrap();
    assert!(got.iter().all(|v| v.is_finite()), "{cfg} {shape:?}: non-finite output");
    let want = reference::softmax::softmax(x, shape, causal, bias, scale);
    let what = format!("{cfg} {shape:?} causal={causal} bias={:?} scale={scale}", bias.map(|b| b.1));
    assert_close(&got, &want, ATOL, rtol, &what);
}

#[test]
fn plain_and_scaled_softmax_match_reference() {
    for (cfg, ctx) in common::all_with_subgroup_layouts() {
        for (i, shape) in SHAPES.iter().enumerate() {
            let x: Vec<f32> = rand_vec(shape.iter().product(), 10 + i as u64).iter().map(|v| v * 4.0).collect();
            check(&ctx, cfg, shape, &x, false, None, 1.0, RTOL);
            check(&ctx, cfg, shape, &x, false, None, 0.125, RTOL);
        }
    }
}

#[test]
fn top1_keeps_the_first_maximum_only() {
    // Gate logits of a mixture of experts: 2 experts (Eve's EVF) and wider rows; ties (rows of
    // equal logits, a repeated maximum) keep the first column, as torch.argmax.
    for (cfg, ctx) in common::all_with_subgroup_layouts() {
        for (i, shape) in [&[1usize, 2][..], &[33, 2], &[577, 2], &[7, 8], &[3, 1000], &[2, 3, 5]].iter().enumerate() {
            let mut x: Vec<f32> = rand_vec(shape.iter().product(), 90 + i as u64).iter().map(|v| v * 4.0).collect();
            let cols = shape[shape.len() - 1];
            // Row 0: all equal. Row 1: its maximum in its second and last columns.
            x[..cols].fill(0.5);
            if x.len() >= 2 * cols {
                let row = &mut x[cols..2 * cols];
                let m = row.iter().fold(f32::MIN, |a, &b| a.max(b)) + 1.0;
                row[cols - 1] = m;
                row[1] = m;
            }
            let tx = upload(&ctx, shape, &x);
            let mut rec = Recorder::new(&ctx);
            let y = softmax_top1(&mut rec, &tx).unwrap();
            rec.submit().unwrap();
            let got = y.to_vec_f32().unwrap();
            let want = reference::softmax::softmax_top1(&x, shape);
            assert_close(&got, &want, ATOL, RTOL, &format!("{cfg} top1 {shape:?}"));
            for (g, w) in got.chunks(cols).zip(want.chunks(cols)) {
                let nonzero = |r: &[f32]| r.iter().position(|&v| v != 0.0);
                assert_eq!(nonzero(g), nonzero(w), "{cfg} top1 {shape:?}: another expert chosen");
            }
        }
    }
}

#[test]
fn large_logits_are_max_subtracted() {
    // Logits up to ±100: without the max subtraction exp overflows. Tolerance: Vulkan's exp is
    // good to 3 + 2|x| ulp, ≈ 200 ulp = 1.2e-5 relative for |x| ≤ 100, plus the f32 rounding of
    // scale·x (≤ 100·2⁻²⁴ absolute, i.e. relative in the output): 3e-5.
    for (cfg, ctx) in all() {
        for (i, shape) in [&[7usize, 577][..], &[3, 4099]].iter().enumerate() {
            let x: Vec<f32> = rand_vec(shape.iter().product(), 30 + i as u64).iter().map(|v| v * 50.0).collect();
            check(&ctx, cfg, shape, &x, false, None, 2.0, 3e-5);
        }
    }
}

#[test]
fn causal_mask_follows_the_kv_cache_convention() {
    // rows == cols (square attention), rows < cols (queries at the end of a KV cache), and
    // rows > cols (the first rows − cols rows see nothing and must be all zeros, not NaN).
    let shapes: &[&[usize]] = &[&[33, 33], &[2, 7, 197], &[1, 1000], &[4, 4099], &[197, 33], &[3, 2, 7, 1]];
    for (cfg, ctx) in all() {
        for (i, shape) in shapes.iter().enumerate() {
            let x = rand_vec(shape.iter().product(), 50 + i as u64);
            check(&ctx, cfg, shape, &x, true, None, 0.5, RTOL);
        }
    }
}

#[test]
fn bias_broadcasts_like_numpy() {
    // (x shape, bias shape): per-column, per-(row, col), per-head, key padding, full, per-row,
    // scalar.
    let cases: &[(&[usize], &[usize])] = &[
        (&[33, 197], &[197]),
        (&[7, 33], &[7, 33]),
        (&[2, 3, 7, 33], &[3, 7, 33]),
        (&[2, 3, 7, 33], &[2, 1, 1, 33]),
        (&[2, 3, 7, 33], &[2, 3, 7, 33]),
        (&[197, 577], &[197, 1]),
        (&[3, 1000], &[1]),
        (&[2, 4099], &[4099]),
        // Rank 7: leading dimensions beyond the first vec4 of the uniform's shape arrays.
        (&[2, 2, 1, 3, 2, 7, 5], &[2, 1, 1, 3, 1, 7, 5]),
    ];
    for (cfg, ctx) in all() {
        for (i, (xs, bs)) in cases.iter().enumerate() {
            let x = rand_vec(xs.iter().product(), 70 + i as u64);
            let b: Vec<f32> = rand_vec(bs.iter().product(), 90 + i as u64).iter().map(|v| v * 3.0).collect();
            for causal in [false, true] {
                check(&ctx, cfg, xs, &x, causal, Some((&b, bs)), 0.7, RTOL);
            }
        }
    }
}

#[test]
fn minus_infinity_bias_masks_and_fully_masked_rows_are_zero() {
    // Key padding: batch 0 masks its last 5 keys; batch 1 masks every key (all-zero output).
    // f32::MIN (HuggingFace's mask value) is an ordinary logit: a row of only f32::MIN is uniform.
    let (b, h, r, c) = (2, 3, 7, 33);
    let mut bias = vec![0.0f32; b * c];
    // Entries from c − 5 on: batch 0's last five keys, then all of batch 1's.
    for v in &mut bias[c - 5..] {
        *v = f32::NEG_INFINITY;
    }
    for (cfg, ctx) in all() {
        let x = rand_vec(b * h * r * c, 123);
        check(&ctx, cfg, &[b, h, r, c], &x, false, Some((&bias, &[b, 1, 1, c])), 1.0, RTOL);
        check(&ctx, cfg, &[b, h, r, c], &x, true, Some((&bias, &[b, 1, 1, c])), 1.0, RTOL);
        let min_rows = vec![f32::MIN; 2 * 577];
        check(&ctx, cfg, &[2, 577], &vec![0.0; 2 * 577], false, Some((&min_rows, &[2, 577])), 1.0, RTOL);
    }
}

#[test]
fn row_chunks_cover_tensors_larger_than_a_binding() {
    // 1 MiB bindings: [2, 150, 1025] f32 (1.2 MiB) takes two dispatches; the causal row index and
    // the bias row offset must use global row numbers across the chunk boundary.
    let ctx = common::small_bindings();
    let shape = [2, 150, 1025];
    let x = rand_vec(shape.iter().product(), 7);
    let bias = rand_vec(150 * 1025, 8);
    let tx = upload(&ctx, &shape, &x);
    let tb = upload(&ctx, &[150, 1025], &bias);
    let mut rec = Recorder::new(&ctx);
    let y = softmax(&mut rec, &tx, &SoftmaxOptions { causal: true, bias: Some(&tb), scale: 1.0 }).unwrap();
    assert!(rec.len() >= 2, "expected chunked dispatches, got {}", rec.len());
    rec.submit().unwrap();
    let want = reference::softmax::softmax(&x, &shape, true, Some((&bias, &[150, 1025])), 1.0);
    assert_close(&y.to_vec_f32().unwrap(), &want, ATOL, RTOL, "chunked softmax");
}

#[test]
fn bad_arguments_are_errors() {
    let ctx = common::fast();
    let x = upload(&ctx, &[2, 3, 4], &[0.0; 24]);
    let b = |s: &[usize]| upload(&ctx, s, &vec![0.0; s.iter().product()]);
    let mut rec = Recorder::new(&ctx);
    for bad in [&[5][..], &[3, 1, 4], &[2, 2, 3, 4], &[1, 2, 3, 4], &[4, 1]] {
        let tb = b(bad);
        let r = softmax(&mut rec, &x, &SoftmaxOptions { bias: Some(&tb), ..Default::default() });
        assert!(matches!(r, Err(KestrelError::Shape { .. })), "bias {bad:?} must not broadcast to [2, 3, 4]");
    }
    let empty = upload(&ctx, &[3, 0], &[]);
    assert!(matches!(softmax(&mut rec, &empty, &SoftmaxOptions::default()), Err(KestrelError::Shape { .. })));
    let scalar = upload(&ctx, &[], &[1.0]);
    assert!(matches!(softmax(&mut rec, &scalar, &SoftmaxOptions::default()), Err(KestrelError::Shape { .. })));
    for scale in [f32::NAN, f32::INFINITY] {
        let r = softmax(&mut rec, &x, &SoftmaxOptions { scale, ..Default::default() });
        assert!(matches!(r, Err(KestrelError::InvalidArgument { .. })));
    }
    let deep = upload(&ctx, &[1; 9], &[0.0]);
    assert!(matches!(softmax(&mut rec, &deep, &SoftmaxOptions::default()), Err(KestrelError::InvalidArgument { .. })));
    let h = Tensor::from_f32_as_f16(&ctx, &[2, 3, 4], &[0.0; 24]).unwrap();
    assert!(matches!(softmax(&mut rec, &h, &SoftmaxOptions::default()), Err(KestrelError::UnsupportedDtype { .. })));
    let r = softmax(&mut rec, &x, &SoftmaxOptions { bias: Some(&h), ..Default::default() });
    assert!(matches!(r, Err(KestrelError::UnsupportedDtype { .. })));
    assert!(rec.is_empty(), "failed ops must not record dispatches");
}
