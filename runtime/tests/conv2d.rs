//! 2-D convolution vs the CPU reference: depthwise, direct (grouped / few channels), the
//! implicit-GEMM kernels (general, 1×1, patch embedding) and, on CPU adapters, im2col +
//! matmul, f32 and f16 weights, with and without bias, NCHW ([`conv2d`]) and token-row
//! ([`conv2d_tokens`]) outputs, on every configuration.

mod common;

use std::sync::Arc;

use common::{all_with_cpu_plain, assert_close, f16_round, rand_vec};
use kestrel::ops::conv2d::{Conv2dOptions, conv2d, conv2d_tokens};
use kestrel::reference;
use kestrel::{Context, DType, Recorder, Tensor};

/// One conv: input `[B, Cin, H, W]`, `Cout`, kernel, stride, padding, groups.
#[derive(Clone, Copy, Debug)]
struct Case {
    x: [usize; 4],
    cout: usize,
    k: (usize, usize),
    stride: (usize, usize),
    pad: (usize, usize),
    groups: usize,
}

const fn case(x: [usize; 4], cout: usize, k: usize, s: usize, p: usize, groups: usize) -> Case {
    Case { x, cout, k: (k, k), stride: (s, s), pad: (p, p), groups }
}

const CASES: &[Case] = &[
    // Direct: few output channels, any stride.
    case([1, 3, 7, 7], 7, 3, 1, 1, 1),
    case([2, 7, 7, 13], 1, 1, 1, 0, 1),
    case([1, 7, 33, 33], 3, 5, 4, 2, 1),
    Case { x: [1, 3, 1, 33], cout: 7, k: (1, 3), stride: (1, 1), pad: (0, 1), groups: 1 },
    // Direct: grouped (partial 4-channel tiles, wide groups).
    case([1, 4, 13, 7], 6, 3, 1, 1, 2),
    case([1, 64, 7, 7], 64, 3, 2, 1, 2),
    // Depthwise: 3×3 and 5×5 positional convs, stride 2, a single channel.
    case([1, 64, 13, 13], 64, 3, 1, 1, 64),
    case([2, 33, 7, 33], 33, 5, 1, 2, 33),
    case([1, 7, 13, 13], 7, 3, 2, 1, 7),
    case([1, 1, 1, 1], 1, 1, 1, 0, 1),
    // GEMM, general: padding, strides, a 1×1 input, a non-square kernel.
    case([2, 3, 13, 13], 33, 3, 2, 1, 1),
    case([1, 33, 7, 7], 64, 3, 2, 0, 1),
    case([1, 3, 1, 1], 33, 3, 1, 1, 1),
    Case { x: [1, 3, 13, 7], cout: 16, k: (3, 1), stride: (2, 1), pad: (1, 0), groups: 1 },
    // GEMM, 1×1 stride 1.
    case([1, 33, 13, 7], 64, 1, 1, 0, 1),
    case([2, 64, 1, 1], 33, 1, 1, 0, 1),
    // GEMM, patch embedding (kernel == stride), leftover rows/columns dropped.
    case([2, 3, 33, 33], 64, 4, 4, 0, 1),
    case([1, 3, 224, 224], 64, 16, 16, 0, 1),
];

fn run_case(ctx: &Arc<Context>, cfg: &str, i: usize, c: &Case, wdtype: DType, with_bias: bool, tokens: bool) {
    let [b, cin, h, wd] = c.x;
    let w_shape = [c.cout, cin / c.groups, c.k.0, c.k.1];
    let x = rand_vec(b * cin * h * wd, 1 + i as u64);
    let w = rand_vec(w_shape.iter().product(), 100 + i as u64);
    let bias = rand_vec(c.cout, 200 + i as u64);
    let tx = Tensor::from_f32(ctx, &c.x, &x).unwrap();
    let tw = Tensor::from_f32_as(ctx, &w_shape, &w, wdtype).unwrap();
    let tb = Tensor::from_f32_as(ctx, &[c.cout], &bias, wdtype).unwrap();
    let opts = Conv2dOptions { stride: c.stride, padding: c.pad, groups: c.groups };
    let mut rec = Recorder::new(ctx);
    let y = if tokens { conv2d_tokens } else { conv2d }(&mut rec, &tx, &tw, with_bias.then_some(&tb), &opts).unwrap();
    rec.submit().unwrap();
    // f16 weights: the reference uses the same f16-rounded values, so only f32 arithmetic differs.
    let (w, bias) = if wdtype == DType::F16 { (f16_round(&w), f16_round(&bias)) } else { (w, bias) };
    let (mut want, shape) = reference::conv2d::conv2d(&x, c.x, &w, w_shape, with_bias.then_some(&bias[..]), &opts);
    let mut shape = shape.to_vec();
    if tokens {
        // NCHW → rows (b, y, x) of channels.
        let (cout, pix) = (shape[1], shape[2] * shape[3]);
        want = (0..want.len()).map(|i| want[((i / (pix * cout)) * cout + i % cout) * pix + (i / cout) % pix]).collect();
        shape = vec![shape[0] * pix, cout];
    }
    assert_eq!(y.shape(), shape.as_slice(), "{cfg} {c:?}");
    // f32 dot products of K = Cin/groups·kh·kw terms with |x|, |w|, |bias| <= 1: the error bound
    // 2·K·ε_f32 is >10× the random-walk error of such sums, yet far below any indexing mistake.
    let k = (w_shape[1] * w_shape[2] * w_shape[3] + 1) as f32;
    let atol = 2.0 * k * f32::EPSILON;
    assert_close(&y.to_vec_f32().unwrap(), &want, atol, 0.0, &format!("{cfg} {wdtype:?} bias={with_bias} tokens={tokens} {c:?}"));
}

#[test]
fn conv2d_matches_reference() {
    for (cfg, ctx) in all_with_cpu_plain() {
        for (i, c) in CASES.iter().enumerate() {
            run_case(&ctx, cfg, i, c, DType::F32, i % 2 == 0, false);
            run_case(&ctx, cfg, i, c, DType::F16, i % 2 == 1, false);
        }
    }
}

#[test]
fn conv2d_tokens_matches_reference() {
    for (cfg, ctx) in all_with_cpu_plain() {
        for (i, c) in CASES.iter().enumerate() {
            run_case(&ctx, cfg, i, c, if i % 2 == 0 { DType::F16 } else { DType::F32 }, i % 3 != 0, true);
        }
    }
}

#[test]
fn kernels_are_chosen_by_shape() {
    let kernel = |ctx: &Arc<Context>, c: &Case, wdtype: DType| -> String {
        let ctx = ctx.clone();
        let [_, cin, ..] = c.x;
        let w_shape = [c.cout, cin / c.groups, c.k.0, c.k.1];
        let tx = Tensor::from_f32(&ctx, &c.x, &rand_vec(c.x.iter().product(), 1)).unwrap();
        let tw = Tensor::from_f32_as(&ctx, &w_shape, &rand_vec(w_shape.iter().product(), 2), wdtype).unwrap();
        let opts = Conv2dOptions { stride: c.stride, padding: c.pad, groups: c.groups };
        let mut rec = Recorder::with_profiling(&ctx);
        conv2d(&mut rec, &tx, &tw, None, &opts).unwrap();
        rec.finish().unwrap().unwrap().dispatches[0].kernel.clone()
    };
    // CPU adapters: groups == 1 with enough channels is im2col + matmul, the rest as on GPUs.
    let cpu = common::fast();
    if cpu.caps().cpu {
        assert!(kernel(&cpu, &case([1, 3, 32, 32], 64, 16, 16, 0, 1), DType::F32).contains("conv_im2col"));
        assert!(kernel(&cpu, &case([2, 3, 13, 13], 33, 3, 2, 1, 1), DType::F16).contains("conv_im2col"));
        assert!(kernel(&cpu, &case([1, 3, 7, 7], 7, 3, 1, 1, 1), DType::F32).contains("conv_direct"));
        assert!(kernel(&cpu, &case([1, 64, 13, 13], 64, 3, 1, 1, 64), DType::F32).contains("conv_depthwise"));
    }
    let ctx = common::gpu_kernels();
    let kernel = |c: &Case, wdtype: DType| kernel(&ctx, c, wdtype);
    assert!(kernel(&case([1, 64, 13, 13], 64, 3, 1, 1, 64), DType::F32).contains("conv_depthwise"));
    assert!(kernel(&case([1, 4, 13, 7], 6, 3, 1, 1, 2), DType::F32).contains("conv_direct"));
    assert!(kernel(&case([1, 3, 7, 7], 7, 3, 1, 1, 1), DType::F32).contains("conv_direct"));
    assert!(kernel(&case([1, 33, 13, 7], 64, 1, 1, 0, 1), DType::F32).contains("POINTWISE=1"));
    let patch = kernel(&case([1, 3, 32, 32], 64, 16, 16, 0, 1), DType::F32);
    assert!(patch.contains("PATCH=1") && !patch.contains("POINTWISE"), "{patch}");
    let general = kernel(&case([2, 3, 13, 13], 33, 3, 2, 1, 1), DType::F16);
    assert!(general.contains("conv_gemm") && !general.contains("PATCH") && !general.contains("POINTWISE"), "{general}");
    assert_eq!(general.contains("[F16=1,"), ctx.caps().read_f16_natively(), "{general}");
}

#[test]
fn bad_arguments_are_errors() {
    let ctx = common::fast();
    let t = |shape: &[usize], dtype: DType| Tensor::from_f32_as(&ctx, shape, &vec![0.0; shape.iter().product()], dtype).unwrap();
    let x = t(&[1, 4, 5, 5], DType::F32);
    let w = t(&[6, 4, 3, 3], DType::F32);
    let w_g2 = t(&[6, 2, 3, 3], DType::F32);
    let ok = Conv2dOptions::default();
    let g = |groups| Conv2dOptions { groups, ..ok };
    let mut rec = Recorder::new(&ctx);
    assert!(conv2d(&mut rec, &t(&[4, 5, 5], DType::F32), &w, None, &ok).is_err());
    assert!(conv2d(&mut rec, &x, &t(&[6, 4, 3], DType::F32), None, &ok).is_err());
    assert!(conv2d(&mut rec, &x, &t(&[6, 3, 3, 3], DType::F32), None, &ok).is_err());
    assert!(conv2d(&mut rec, &x, &w_g2, None, &ok).is_err());
    assert!(conv2d(&mut rec, &x, &w_g2, None, &g(3)).is_err());
    assert!(conv2d(&mut rec, &x, &w, None, &g(0)).is_err());
    assert!(conv2d(&mut rec, &x, &w, None, &Conv2dOptions { stride: (0, 1), ..ok }).is_err());
    assert!(conv2d(&mut rec, &x, &t(&[6, 4, 7, 3], DType::F32), None, &ok).is_err());
    assert!(conv2d(&mut rec, &x, &w, Some(&t(&[5], DType::F32)), &ok).is_err());
    assert!(conv2d(&mut rec, &x, &w, Some(&t(&[6], DType::F16)), &ok).is_err());
    assert!(conv2d(&mut rec, &t(&[1, 4, 5, 5], DType::F16), &w, None, &ok).is_err());
    let wu = Tensor::from_u32(&ctx, &[6, 4, 3, 3], &[0; 216]).unwrap();
    assert!(conv2d(&mut rec, &x, &wu, None, &ok).is_err());
    assert!(rec.is_empty());
    // No chunking: with a 1 MiB binding limit a 1.2 MB input is refused.
    let small = common::small_bindings();
    let big = Tensor::from_f32(&small, &[1, 3, 320, 320], &vec![0.0; 307_200]).unwrap();
    let w_small = Tensor::from_f32(&small, &[6, 3, 3, 3], &[0.0; 162]).unwrap();
    assert!(conv2d(&mut Recorder::new(&small), &big, &w_small, None, &ok).is_err());
    // The kernel fits once padded.
    assert!(conv2d(&mut rec, &x, &t(&[6, 4, 7, 3], DType::F32), None, &Conv2dOptions { padding: (1, 0), ..ok }).is_ok());
}
