//! Dense weights read from textures ([`DenseTexture`], the `TEX` variants of the GEMV and
//! matmul kernels) vs the CPU reference: f32 and f16, awkward shapes (texture rows spanning
//! several 4096-texel lines, an odd number of f16 elements), every GEMV variant, products with
//! a bias and accumulated into a residual, and a [`Linear`] that moves its weight into a
//! texture.

mod common;

use std::sync::Arc;

use common::{AWKWARD, all, all_with_cpu_plain, assert_close, f16_round, rand_vec};
use kestrel::nn::{Linear, LinearWeight};
use kestrel::ops::gemv::{self, GemvVariant};
use kestrel::ops::matmul::{MatmulOptions, matmul, matmul_accumulate};
use kestrel::texture::DenseTexture;
use kestrel::{Context, ContextOptions, DType, Recorder, Tensor, reference};

// As for the buffer kernels (gemv.rs, matmul.rs): K ≤ 577 products of values in [-1, 1)
// summed in f32 vs f64; the texture only changes where the same bits are read from.
const ATOL: f32 = 4e-4;
const RTOL: f32 = 1e-5;

/// (N, K): a single row, odd sizes, and weights of several texture lines.
const SHAPES: &[(usize, usize)] = &[(1, 7), (7, 33), (33, 197), (197, 577), (577, 64)];

fn weight(ctx: &Arc<Context>, n: usize, k: usize, dt: DType) -> (Vec<f32>, DenseTexture) {
    let mut w = rand_vec(n * k, (n * 13 + k) as u64);
    if dt == DType::F16 {
        w = f16_round(&w);
    }
    let t = Tensor::from_f32_as(ctx, &[n, k], &w, dt).unwrap();
    (w, DenseTexture::from_tensor(&t).expect("texture"))
}

#[test]
fn texture_round_trips() {
    let ctx = common::fast();
    for dt in [DType::F32, DType::F16] {
        for &(n, k) in SHAPES {
            let (w, tex) = weight(&ctx, n, k, dt);
            assert_eq!(tex.to_vec_f32().unwrap(), w, "{dt:?} n{n} k{k}");
        }
    }
}

#[test]
fn gemv_reads_texture_weights() {
    for (cfg, ctx) in all_with_cpu_plain() {
        let mut variants = vec![GemvVariant::Workgroup, GemvVariant::Rows];
        if gemv::subgroup_ok(ctx.caps()) {
            variants.push(GemvVariant::Subgroup);
        }
        for dt in [DType::F32, DType::F16] {
            for &(n, k) in SHAPES {
                let (w, tex) = weight(&ctx, n, k, dt);
                let x = rand_vec(k, k as u64);
                let b = rand_vec(n, 3);
                let want = reference::matmul::gemv(&x, &w, n, k, Some(&b));
                let tx = Tensor::from_f32(&ctx, &[1, k], &x).unwrap();
                let tb = Tensor::from_f32(&ctx, &[n], &b).unwrap();
                for &v in &variants {
                    let mut rec = Recorder::new(&ctx);
                    let y = gemv::gemv(&mut rec, &tx, &tex, Some(&tb), v).unwrap();
                    rec.submit().unwrap();
                    assert_close(&y.to_vec_f32().unwrap(), &want, ATOL, RTOL, &format!("{cfg} {v:?} {dt:?} n{n} k{k}"));
                }
            }
        }
    }
}

#[test]
fn matmul_reads_texture_weights() {
    for (cfg, ctx) in all() {
        for dt in [DType::F32, DType::F16] {
            for &(n, k) in SHAPES {
                let (w, tex) = weight(&ctx, n, k, dt);
                // M = 1 takes the GEMV (accumulating in place too).
                for &m in &AWKWARD[..3] {
                    let a = rand_vec(m * k, (m + k) as u64);
                    let b = rand_vec(n, 4);
                    let r = rand_vec(m * n, 5);
                    let product = reference::matmul::matmul(&a, &[m, k], &w, &[n, k], true, Some(&b));
                    let ta = Tensor::from_f32(&ctx, &[m, k], &a).unwrap();
                    let tb = Tensor::from_f32(&ctx, &[n], &b).unwrap();
                    let tr = Tensor::from_f32(&ctx, &[m, n], &r).unwrap();
                    let opts = MatmulOptions { bias: Some(&tb), transpose_b: true };
                    let mut rec = Recorder::new(&ctx);
                    let c = matmul(&mut rec, &ta, &tex, &opts).unwrap();
                    matmul_accumulate(&mut rec, &ta, &tex, &opts, &tr).unwrap();
                    rec.submit().unwrap();
                    let what = format!("{cfg} {dt:?} m{m} n{n} k{k}");
                    assert_close(&c.to_vec_f32().unwrap(), &product, ATOL, RTOL, &what);
                    let summed: Vec<f32> = product.iter().zip(&r).map(|(p, r)| p + r).collect();
                    assert_close(&tr.to_vec_f32().unwrap(), &summed, ATOL, RTOL, &format!("{what} accumulate"));
                }
            }
        }
    }
}

#[test]
fn linear_weights_follow_the_storage_policy() {
    for textures in [false, true] {
        let ctx = Context::new(&ContextOptions { weight_textures: Some(textures), ..ContextOptions::from_env() }).unwrap();
        let (n, k) = (33, 197);
        let w = rand_vec(n * k, 8);
        let lin = Linear::from_f32(&ctx, &w, None, n, k, kestrel::Quant::F32).unwrap();
        assert_eq!(matches!(lin.weight(), LinearWeight::Texture(_)), textures);
        let x = rand_vec(2 * k, 9);
        let tx = Tensor::from_f32(&ctx, &[2, k], &x).unwrap();
        let mut rec = Recorder::new(&ctx);
        let y = lin.forward(&mut rec, &tx).unwrap();
        rec.submit().unwrap();
        let want = reference::matmul::matmul(&x, &[2, k], &w, &[n, k], true, None);
        assert_close(&y.to_vec_f32().unwrap(), &want, ATOL, RTOL, &format!("textures {textures}"));
    }
}
