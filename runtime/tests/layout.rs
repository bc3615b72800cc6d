//! Layout kernels (permute, slice, concat) vs the CPU reference, for f32, u32 and f16.
//!
//! Every comparison is exact: the kernels only move bits (the f16 concat fallback goes through
//! f32 casts, which are exact for finite halves).

mod common;

use std::ops::Range;
use std::sync::Arc;

use common::{all, rand_vec};
use kestrel::ops::layout;
use kestrel::reference::layout as cpu;
use kestrel::{Context, DType, Recorder, Result, Tensor};

const DTYPES: &[DType] = &[DType::F32, DType::U32, DType::F16];

/// Uploads seeded data of `dtype`; returns the tensor and its element bits.
fn upload(ctx: &Arc<Context>, shape: &[usize], dtype: DType, seed: u64) -> (Tensor, Vec<u32>) {
    let n = shape.iter().product();
    let vals = rand_vec(n, seed);
    match dtype {
        DType::F32 => (Tensor::from_f32(ctx, shape, &vals).unwrap(), vals.iter().map(|v| v.to_bits()).collect()),
        DType::U32 => {
            let ids: Vec<u32> = vals.iter().map(|v| v.to_bits().rotate_left(7)).collect();
            (Tensor::from_u32(ctx, shape, &ids).unwrap(), ids)
        }
        DType::F16 => {
            let h: Vec<half::f16> = vals.iter().map(|&v| half::f16::from_f32(v * 100.0)).collect();
            (Tensor::from_f16(ctx, shape, &h).unwrap(), h.iter().map(|v| u32::from(v.to_bits())).collect())
        }
    }
}

/// Downloads the element bits of a tensor.
fn bits(t: &Tensor) -> Vec<u32> {
    let bytes = t.to_bytes().unwrap();
    match t.dtype() {
        DType::F16 => bytes.chunks_exact(2).map(|c| u32::from(u16::from_le_bytes([c[0], c[1]]))).collect(),
        _ => bytes.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
    }
}

/// Runs `f` on a profiling recorder; returns its output and the kernel names it dispatched.
fn run(ctx: &Arc<Context>, f: impl FnOnce(&mut Recorder) -> Result<Tensor>) -> (Tensor, Vec<String>) {
    let mut rec = Recorder::with_profiling(ctx);
    let out = f(&mut rec).unwrap();
    let profile = rec.finish().unwrap().unwrap();
    (out, profile.dispatches.into_iter().map(|d| d.kernel).collect())
}

#[test]
fn permute_matches_reference() {
    let cases: &[(&[usize], &[usize])] = &[
        (&[7, 33], &[1, 0]),
        (&[33, 197], &[1, 0]),
        (&[2, 7, 33], &[0, 2, 1]),
        (&[2, 13, 33], &[0, 2, 1]),
        (&[13, 2, 33], &[2, 1, 0]),
        (&[8, 16, 2], &[1, 0, 2]),
        (&[1, 197, 64], &[0, 2, 1]),
        (&[2, 3, 5, 7], &[3, 1, 0, 2]),
        (&[577, 3], &[1, 0]),
        (&[4, 6, 8], &[1, 0, 2]),
        (&[3, 5, 7], &[1, 0, 2]),
        (&[2, 1, 3, 1, 2, 3, 1, 2], &[7, 6, 5, 4, 3, 2, 1, 0]),
        (&[2, 3, 5, 2, 3, 2, 2, 3], &[1, 3, 0, 7, 2, 6, 4, 5]),
        (&[5], &[0]),
        (&[], &[]),
    ];
    for (cfg, ctx) in all() {
        for &dtype in DTYPES {
            for (i, (shape, dims)) in cases.iter().enumerate() {
                let (x, host) = upload(&ctx, shape, dtype, i as u64);
                let (y, _) = run(&ctx, |rec| layout::permute(rec, &x, dims));
                let (want, want_shape) = cpu::permute(&host, shape, dims);
                assert_eq!(y.shape(), want_shape.as_slice());
                assert_eq!(bits(&y), want, "{cfg} {dtype:?} permute {shape:?} {dims:?}");
            }
        }
    }
}

#[test]
fn transpose_swaps_two_dims() {
    for (cfg, ctx) in all() {
        for &dtype in DTYPES {
            let shape = [3, 13, 33];
            let (x, host) = upload(&ctx, &shape, dtype, 3);
            let (y, _) = run(&ctx, |rec| layout::transpose(rec, &x, 2, 0));
            let (want, want_shape) = cpu::permute(&host, &shape, &[2, 1, 0]);
            assert_eq!(y.shape(), want_shape.as_slice());
            assert_eq!(bits(&y), want, "{cfg} {dtype:?} transpose");
        }
    }
}

#[test]
fn slice_matches_reference() {
    let cases: &[(&[usize], usize, usize, usize)] = &[
        (&[7, 33, 5], 1, 3, 20),
        (&[197, 64], 0, 1, 197),
        (&[197, 64], 1, 4, 36),
        (&[33, 7], 1, 1, 6),
        (&[1, 577, 7], 1, 0, 1),
        (&[7, 33], 0, 6, 7),
        (&[13, 13], 1, 0, 13),
        (&[5, 6], 1, 2, 2),
    ];
    for (cfg, ctx) in all() {
        for &dtype in DTYPES {
            for (i, &(shape, axis, start, end)) in cases.iter().enumerate() {
                let (x, host) = upload(&ctx, shape, dtype, 10 + i as u64);
                let (y, _) = run(&ctx, |rec| layout::slice(rec, &x, axis, start, end));
                let ranges: Vec<Range<usize>> = shape.iter().enumerate().map(|(d, &e)| if d == axis { start..end } else { 0..e }).collect();
                let (want, want_shape) = cpu::slice_ranges(&host, shape, &ranges);
                assert_eq!(y.shape(), want_shape.as_slice());
                assert_eq!(bits(&y), want, "{cfg} {dtype:?} slice {shape:?} axis {axis} {start}..{end}");
            }
        }
    }
}

#[test]
fn slice_ranges_cut_every_axis() {
    let cases: &[(&[usize], &[Range<usize>])] =
        &[(&[7, 33, 5], &[1..6, 2..33, 1..4]), (&[2, 3, 4, 5, 6], &[0..2, 1..3, 0..4, 2..5, 1..6]), (&[13, 64], &[3..10, 8..40])];
    for (cfg, ctx) in all() {
        for &dtype in DTYPES {
            for (i, (shape, ranges)) in cases.iter().enumerate() {
                let (x, host) = upload(&ctx, shape, dtype, 20 + i as u64);
                let (y, _) = run(&ctx, |rec| layout::slice_ranges(rec, &x, ranges));
                let (want, want_shape) = cpu::slice_ranges(&host, shape, ranges);
                assert_eq!(y.shape(), want_shape.as_slice());
                assert_eq!(bits(&y), want, "{cfg} {dtype:?} slice_ranges {shape:?} {ranges:?}");
            }
        }
    }
}

#[test]
fn concat_matches_reference() {
    let cases: &[(&[&[usize]], usize)] = &[
        (&[&[2, 3, 5], &[2, 4, 5], &[2, 1, 5]], 1),
        (&[&[1, 1, 64], &[1, 196, 64]], 1),
        (&[&[7, 3], &[7, 5], &[7, 1]], 1),
        (&[&[3, 7], &[4, 7]], 0),
        (&[&[33], &[7], &[1]], 0),
        (&[&[2, 0, 3], &[2, 5, 3]], 1),
        (&[&[2, 3, 4], &[2, 3, 6]], 2),
        (&[&[13, 7]], 1),
    ];
    for (cfg, ctx) in all() {
        for &dtype in DTYPES {
            for (i, (shapes, axis)) in cases.iter().enumerate() {
                let uploaded: Vec<(Tensor, Vec<u32>)> =
                    shapes.iter().enumerate().map(|(j, s)| upload(&ctx, s, dtype, 100 * i as u64 + j as u64)).collect();
                let tensors: Vec<&Tensor> = uploaded.iter().map(|(t, _)| t).collect();
                let (y, _) = run(&ctx, |rec| layout::concat(rec, &tensors, *axis));
                let host: Vec<(&[u32], &[usize])> = uploaded.iter().zip(shapes.iter()).map(|((_, h), s)| (h.as_slice(), *s)).collect();
                let (want, want_shape) = cpu::concat(&host, *axis);
                assert_eq!(y.shape(), want_shape.as_slice());
                assert_eq!(bits(&y), want, "{cfg} {dtype:?} concat {shapes:?} axis {axis}");
            }
        }
    }
}

#[test]
fn fast_paths_are_selected() {
    let ctx = common::fast();
    let kernels = |dtype: DType, f: &dyn Fn(&mut Recorder, &Tensor) -> Result<Tensor>, shape: &[usize]| -> String {
        let (x, _) = upload(&ctx, shape, dtype, 1);
        run(&ctx, |rec| f(rec, &x)).1.join(" ")
    };
    let t = |rec: &mut Recorder, x: &Tensor| layout::transpose(rec, x, 0, 1);
    assert!(kernels(DType::F32, &t, &[33, 197]).contains("transpose_tiled"));
    assert!(kernels(DType::F32, &t, &[577, 3]).contains("T=u32"));
    let batched = |rec: &mut Recorder, x: &Tensor| layout::permute(rec, x, &[2, 1, 0]);
    assert!(kernels(DType::U32, &batched, &[13, 2, 33]).contains("transpose_tiled"));
    assert!(kernels(DType::F16, &t, &[7, 33]).contains("f16_pairs"));
    let s = |rec: &mut Recorder, x: &Tensor| layout::slice(rec, x, 0, 1, 197);
    assert!(kernels(DType::F32, &s, &[197, 64]).contains("vec4"));
    assert!(kernels(DType::F16, &s, &[197, 64]).contains("vec4"));
    let s = |rec: &mut Recorder, x: &Tensor| layout::slice(rec, x, 1, 1, 6);
    assert!(kernels(DType::F32, &s, &[33, 7]).contains("T=u32"));
    assert!(kernels(DType::F16, &s, &[33, 7]).contains("f16_pairs"));
    // An f16 concat whose regions are not word-aligned goes through exact f32 casts.
    let (a, _) = upload(&ctx, &[7, 3], DType::F16, 2);
    let (b, _) = upload(&ctx, &[7, 5], DType::F16, 3);
    let names = run(&ctx, |rec| layout::concat(rec, &[&a, &b], 1)).1.join(" ");
    assert!(names.contains("cast_f16_to_f32") && names.contains("cast_f32_to_f16"), "{names}");
}

#[test]
fn bad_arguments_are_errors() {
    let ctx = common::fast();
    let x = Tensor::from_f32(&ctx, &[2, 3, 4], &[0.0; 24]).unwrap();
    let y = Tensor::from_f32(&ctx, &[2, 5, 4], &[0.0; 40]).unwrap();
    let z = Tensor::from_f32(&ctx, &[3, 3, 4], &[0.0; 36]).unwrap();
    let h = Tensor::from_f32_as_f16(&ctx, &[2, 3, 4], &[0.0; 24]).unwrap();
    let deep = Tensor::from_f32(&ctx, &[1; 9], &[0.0]).unwrap();
    let mut rec = Recorder::new(&ctx);
    assert!(layout::permute(&mut rec, &x, &[0, 1]).is_err());
    assert!(layout::permute(&mut rec, &x, &[0, 1, 1]).is_err());
    assert!(layout::permute(&mut rec, &x, &[0, 1, 3]).is_err());
    assert!(layout::permute(&mut rec, &x, &[0, 1, 2, 3]).is_err());
    assert!(layout::permute(&mut rec, &deep, &[0, 1, 2, 3, 4, 5, 6, 7, 8]).is_err());
    assert!(layout::transpose(&mut rec, &x, 0, 3).is_err());
    assert!(layout::slice(&mut rec, &x, 3, 0, 1).is_err());
    assert!(layout::slice(&mut rec, &x, 1, 2, 1).is_err());
    assert!(layout::slice(&mut rec, &x, 1, 0, 4).is_err());
    assert!(layout::slice_ranges(&mut rec, &x, &[0..1, 0..1]).is_err());
    assert!(layout::concat(&mut rec, &[], 0).is_err());
    assert!(layout::concat(&mut rec, &[&x, &y], 3).is_err());
    assert!(layout::concat(&mut rec, &[&x, &y], 0).is_err());
    assert!(layout::concat(&mut rec, &[&x, &z], 1).is_err());
    assert!(layout::concat(&mut rec, &[&x, &h], 0).is_err());
    assert!(layout::concat(&mut rec, &[&x, &deep], 0).is_err());
    assert!(rec.is_empty(), "failed ops must record nothing");
}

#[test]
fn tensors_beyond_one_binding_are_errors() {
    // Layout ops do not chunk: with a 1 MiB binding limit a 1.2 MB tensor is refused.
    let ctx = common::small_bindings();
    let big = Tensor::from_f32(&ctx, &[300, 1000], &vec![0.0; 300_000]).unwrap();
    let small = Tensor::from_f32(&ctx, &[200, 1000], &vec![0.0; 200_000]).unwrap();
    let mut rec = Recorder::new(&ctx);
    assert!(layout::permute(&mut rec, &big, &[1, 0]).is_err());
    assert!(layout::slice(&mut rec, &big, 0, 0, 10).is_err());
    assert!(layout::concat(&mut rec, &[&small, &small], 0).is_err());
    assert!(rec.is_empty());
}
