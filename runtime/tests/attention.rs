//! Attention kernels (RoPE, KV-cache writes, causal GQA attention: flash prefill, split-key
//! decode) vs the CPU reference, on every configuration (fast paths; no f16 / no subgroups; GPU
//! kernel set).

mod common;

use std::sync::Arc;

use common::{all, assert_close, f16_round, rand_vec};
use kestrel::ops::attention::{
    KvCache, RopeLayout, RopeOptions, RopeScaling, attention, kv_write, rope, rope_kv_write, rope_kv_write_fused,
};
use kestrel::reference::attention as reference;
use kestrel::{Context, DType, KestrelError, Recorder, Tensor};

// RoPE tolerance. The GPU angle is an f32 product of the f32 position and the f32 frequency, as
// in Hugging Face (the frequency from f32 `powf` and a division: ≤ 3 roundings, 2⁻²² relative;
// the product one more), while the reference computes the angle in f64. So the angle may be off
// by pos · 2.5e-7 (frequencies ≤ 1), which moves an output of a pair of |x| ≤ 1 by at most
// √2 · that; sin/cos and the two products add ~1e-6.
fn rope_atol(max_pos: usize) -> f32 {
    1e-6 + 4e-7 * max_pos as f32
}

// Attention tolerance (f32 K/V, or f16 K/V given values f16 holds exactly): q, k, v are in
// [−1, 1], so each output is a convex combination of values in [−1, 1]. The f32 dot products
// (≤ 256 terms), exp, the rescaling and the f32 sums over ≤ 1101 keys each stay within a few
// ulp relative; the largest error measured on lavapipe is 2e-7. 2e-6 leaves 10× headroom and
// still catches a wrong key, mask or weight (those move outputs by ≥ 1e-3).
const ATOL: f32 = 2e-6;

/// `assert_close` with an absolute tolerance only.
#[track_caller]
fn close(got: &[f32], want: &[f32], atol: f32, what: &str) {
    assert_close(got, want, atol, 0.0, what);
}

fn upload(ctx: &Arc<Context>, shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::from_f32(ctx, shape, data).unwrap()
}

fn rope_case(ctx: &Arc<Context>, cfg: &str, shape: [usize; 3], start: usize, opts: &RopeOptions, seed: u64) {
    let [t, h, d] = shape;
    let x = rand_vec(t * h * d, seed);
    let tx = upload(ctx, &shape, &x);
    let mut rec = Recorder::new(ctx);
    let y = rope(&mut rec, &tx, start, opts).unwrap();
    rec.submit().unwrap();
    assert_eq!(y.shape(), shape);
    let want = reference::rope(&x, t, h, d, start, opts);
    close(&y.to_vec_f32().unwrap(), &want, rope_atol(start + t), &format!("{cfg} rope {shape:?} from {start} {opts:?}"));
}

#[test]
fn rope_matches_reference() {
    let scalings = [
        RopeScaling::None,
        RopeScaling::Linear { factor: 4.0 },
        // Original context 64: inactive for start 0 (seq ≤ 33), active for start 100.
        RopeScaling::DynamicNtk { factor: 2.0, original_max_positions: 64 },
    ];
    let mut seed = 0;
    for (cfg, ctx) in all() {
        for layout in [RopeLayout::RotateHalf, RopeLayout::Interleaved] {
            for t in [1, 7, 33] {
                for h in [1, 3] {
                    for (d, rotary_dim) in [(64, 64), (48, 32)] {
                        for start in [0, 100] {
                            for scaling in scalings {
                                seed += 1;
                                let opts = RopeOptions { theta: 10000.0, rotary_dim, layout, scaling };
                                rope_case(&ctx, cfg, [t, h, d], start, &opts, seed);
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn rope_at_large_positions_reduces_the_angle() {
    // Positions near 300 000: angles up to 3e5 rad, far outside the [−π, π] where WGSL promises
    // sin/cos accuracy. The reference here takes the same f32 angle the kernel forms (f32
    // position × f32 frequency, HF's arithmetic) and evaluates sin/cos in f64, so what remains
    // is the kernel's range reduction: k = round(a/2π) < 2¹⁶ makes k·6.28125 exact, and the
    // tail k·(2π − 6.28125) rounds to ≤ 4e-6, plus ≤ 5e-6 from the f32 tail constant: 2e-5.
    let (t, h, d, start) = (3, 2, 64, 300_000);
    let theta = 10000.0f32;
    for (cfg, ctx) in all() {
        for layout in [RopeLayout::RotateHalf, RopeLayout::Interleaved] {
            let opts = RopeOptions { theta, rotary_dim: d, layout, scaling: RopeScaling::None };
            let x = rand_vec(t * h * d, 77);
            let mut rec = Recorder::new(&ctx);
            let y = rope(&mut rec, &upload(&ctx, &[t, h, d], &x), start, &opts).unwrap();
            rec.submit().unwrap();
            let mut want = x.clone();
            for ti in 0..t {
                for hi in 0..h {
                    let row = (ti * h + hi) * d;
                    for j in 0..d / 2 {
                        let f = 1.0f32 / theta.powf((2 * j) as f32 / d as f32);
                        let (s, c) = f64::from((start + ti) as f32 * f).sin_cos();
                        let (a, b) = if layout == RopeLayout::RotateHalf { (j, j + d / 2) } else { (2 * j, 2 * j + 1) };
                        let (xa, xb) = (f64::from(x[row + a]), f64::from(x[row + b]));
                        want[row + a] = (xa * c - xb * s) as f32;
                        want[row + b] = (xb * c + xa * s) as f32;
                    }
                }
            }
            close(&y.to_vec_f32().unwrap(), &want, 2e-5, &format!("{cfg} rope at {start} {layout:?}"));
        }
    }
}

/// One attention problem: `n_heads` query heads over `n_kv` KV heads, `start` cached positions
/// and `t` new tokens, K/V of all `start + t` positions token-major.
struct Case {
    n_heads: usize,
    n_kv: usize,
    hd: usize,
    start: usize,
    t: usize,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
}

impl Case {
    fn new(n_heads: usize, n_kv: usize, hd: usize, start: usize, t: usize, seed: u64) -> Case {
        let len = start + t;
        Case {
            n_heads,
            n_kv,
            hd,
            start,
            t,
            q: rand_vec(t * n_heads * hd, seed),
            k: rand_vec(len * n_kv * hd, seed + 1000),
            v: rand_vec(len * n_kv * hd, seed + 2000),
        }
    }

    fn scale(&self) -> f32 {
        1.0 / (self.hd as f32).sqrt()
    }

    /// Runs on the GPU: the cached positions in one kv_write, the new ones in a second, then
    /// attention, all on one recorder.
    fn gpu(&self, ctx: &Arc<Context>, dtype: DType) -> Vec<f32> {
        let (nkv, hd, start, t) = (self.n_kv, self.hd, self.start, self.t);
        let cache = KvCache::new(ctx, nkv, hd, start + t + 5, dtype).unwrap();
        let row = nkv * hd;
        let mut rec = Recorder::new(ctx);
        if start > 0 {
            let k0 = upload(ctx, &[start, nkv, hd], &self.k[..start * row]);
            let v0 = upload(ctx, &[start, nkv, hd], &self.v[..start * row]);
            kv_write(&mut rec, &cache, &k0, &v0, 0).unwrap();
        }
        let k1 = upload(ctx, &[t, nkv, hd], &self.k[start * row..]);
        let v1 = upload(ctx, &[t, nkv, hd], &self.v[start * row..]);
        kv_write(&mut rec, &cache, &k1, &v1, start).unwrap();
        let q = upload(ctx, &[t, self.n_heads, hd], &self.q);
        let o = attention(&mut rec, &q, &cache, start, self.scale()).unwrap();
        rec.submit().unwrap();
        assert_eq!(o.shape(), [t, self.n_heads, hd]);
        o.to_vec_f32().unwrap()
    }

    /// The reference on K/V as given (`round`: rounded through f16 first).
    fn reference(&self, round: bool) -> Vec<f32> {
        let (k, v) = if round { (f16_round(&self.k), f16_round(&self.v)) } else { (self.k.clone(), self.v.clone()) };
        reference::attention(&self.q, self.t, self.n_heads, &k, &v, self.n_kv, self.hd, self.start, self.scale())
    }

    /// The same problem with K/V made exactly representable in f16.
    fn f16_exact(mut self) -> Case {
        self.k = f16_round(&self.k);
        self.v = f16_round(&self.v);
        self
    }

    fn label(&self, cfg: &str, dtype: DType) -> String {
        format!("{cfg} heads {}/{} hd {} start {} T {} {}", self.n_heads, self.n_kv, self.hd, self.start, self.t, dtype.name())
    }
}

/// Head layouts: GQA 3:1 (SmolLM2-like), plain multi-head.
const HEADS: [(usize, usize); 2] = [(6, 2), (3, 3)];

#[test]
fn prefill_matches_reference() {
    // T 1 (decode kernel), 7, 33 (block tails, several 16-row blocks) at every head layout and
    // head_dim, from an empty cache and from 45 cached positions; T 197 (13 blocks, many key
    // tiles) at two of them to keep lavapipe fast.
    let mut shapes = Vec::new();
    for t in [1, 7, 33] {
        for start in [0, 45] {
            for (n_heads, n_kv) in HEADS {
                for hd in [64, 32] {
                    shapes.push((t, start, n_heads, n_kv, hd));
                }
            }
        }
    }
    shapes.extend([(197, 45, 6, 2, 64), (197, 0, 3, 3, 32)]);
    for (cfg, ctx) in all() {
        for (i, &(t, start, n_heads, n_kv, hd)) in shapes.iter().enumerate() {
            let case = Case::new(n_heads, n_kv, hd, start, t, i as u64 + 1);
            close(&case.gpu(&ctx, DType::F32), &case.reference(false), ATOL, &case.label(cfg, DType::F32));
            // f16 cache on values f16 holds exactly: only the kernel's arithmetic differs from
            // the reference, so the f32 tolerance applies.
            let case = case.f16_exact();
            close(&case.gpu(&ctx, DType::F16), &case.reference(false), ATOL, &case.label(cfg, DType::F16));
        }
    }
}

#[test]
fn decode_matches_reference() {
    // past 577 covers 3 chunks of 256 (GPU kernel set: split + combine pass), 1100 covers 2
    // chunks of 1024 (CPU kernel set).
    for (cfg, ctx) in common::all_with_subgroup_layouts() {
        let mut seed = 500;
        for past in [0, 1, 200, 577, 1100] {
            for (n_heads, n_kv) in HEADS {
                for hd in [64, 32] {
                    seed += 1;
                    let case = Case::new(n_heads, n_kv, hd, past, 1, seed);
                    close(&case.gpu(&ctx, DType::F32), &case.reference(false), ATOL, &case.label(cfg, DType::F32));
                    let case = case.f16_exact();
                    close(&case.gpu(&ctx, DType::F16), &case.reference(false), ATOL, &case.label(cfg, DType::F16));
                }
            }
        }
    }
}

#[test]
fn larger_head_dims_use_the_wider_variants() {
    // head_dim 128 and 256 select the prefill variants with 128/256-wide tiles; 80 is a
    // non-power-of-two inside the 128 variant; decode with head_dim 256 gives each invocation two
    // pairs. Tolerance ATOL (dot products of up to 256 terms are within it).
    for (cfg, ctx) in all() {
        for (hd, t, start) in [(128, 33, 5), (80, 7, 0), (256, 19, 3), (256, 1, 40), (128, 1, 300)] {
            let case = Case::new(4, 2, hd, start, t, hd as u64 + t as u64);
            close(&case.gpu(&ctx, DType::F32), &case.reference(false), ATOL, &case.label(cfg, DType::F32));
        }
    }
}

#[test]
fn f16_cache_is_within_f16_rounding_of_the_f32_reference() {
    // K/V not representable in f16: the cache rounds each element by at most one f16 ulp
    // (WGSL lets a conversion pick either neighbour): |Δk|, |Δv| ≤ 2⁻¹¹ for |x| < 1. A score moves
    // by ≤ scale · Σ|q| · 2⁻¹¹ ≤ √hd · 2⁻¹¹ (|q| ≤ 1), which changes the softmax-weighted average
    // of |v| ≤ 1 by ≤ 2·max|Δs|, and Δv adds 2⁻¹¹. The bound is computed per case from hd; the
    // outputs are compared with it against the f32 reference. (Against the reference on f16-rounded
    // K/V the f32 tolerance holds, checked in the tests above.)
    for (cfg, ctx) in all() {
        for (hd, t, start) in [(64, 33, 0), (64, 1, 577), (32, 7, 45)] {
            let case = Case::new(6, 2, hd, start, t, 900 + hd as u64 + t as u64);
            let ulp = 2f32.powi(-11);
            let tol = 2.0 * (hd as f32).sqrt() * ulp + ulp;
            close(&case.gpu(&ctx, DType::F16), &case.reference(false), tol, &case.label(cfg, DType::F16));
        }
    }
}

#[test]
fn kv_write_stores_rounded_values_in_place() {
    // f32 caches hold the values exactly; f16 caches within one f16 ulp (2⁻¹¹ for |x| < 1, either
    // neighbour allowed). Positions outside the written range keep their old contents.
    for (cfg, ctx) in all() {
        for dtype in [DType::F32, DType::F16] {
            let (nkv, hd, cap) = (3, 8, 10);
            let cache = KvCache::new(&ctx, nkv, hd, cap, dtype).unwrap();
            let first = rand_vec(cap * nkv * hd, 1);
            let second = rand_vec(4 * nkv * hd, 2);
            let mut rec = Recorder::new(&ctx);
            let all_k = upload(&ctx, &[cap, nkv, hd], &first);
            kv_write(&mut rec, &cache, &all_k, &all_k, 0).unwrap();
            let k = upload(&ctx, &[4, nkv, hd], &second);
            let v: Vec<f32> = second.iter().map(|x| -x).collect();
            kv_write(&mut rec, &cache, &k, &upload(&ctx, &[4, nkv, hd], &v), 3).unwrap();
            rec.submit().unwrap();
            let mut want_k = vec![0.0; nkv * cap * hd];
            let mut want_v = vec![0.0; nkv * cap * hd];
            for pos in 0..cap {
                for g in 0..nkv {
                    for d in 0..hd {
                        let dst = (g * cap + pos) * hd + d;
                        let (kk, vv) = if (3..7).contains(&pos) {
                            let s = second[((pos - 3) * nkv + g) * hd + d];
                            (s, -s)
                        } else {
                            let f = first[(pos * nkv + g) * hd + d];
                            (f, f)
                        };
                        want_k[dst] = kk;
                        want_v[dst] = vv;
                    }
                }
            }
            let tol = if dtype == DType::F16 { 2f32.powi(-11) } else { 0.0 };
            close(&cache.k().to_vec_f32().unwrap(), &want_k, tol, &format!("{cfg} {} k", dtype.name()));
            close(&cache.v().to_vec_f32().unwrap(), &want_v, tol, &format!("{cfg} {} v", dtype.name()));
        }
    }
}

#[test]
fn prefill_then_decode_equals_longer_prefill() {
    // Prefill of N tokens then decode of token N must give the last row of a prefill of N + 1
    // (different kernels, the same arithmetic up to f32 summation order: the reference tolerance).
    for (cfg, ctx) in all() {
        for dtype in [DType::F32, DType::F16] {
            for (n_heads, n_kv, hd, n) in [(6, 2, 64, 40), (3, 3, 32, 300)] {
                let full = Case::new(n_heads, n_kv, hd, 0, n + 1, 4242 + n as u64);
                let whole = full.gpu(&ctx, dtype);
                let cache = KvCache::new(&ctx, n_kv, hd, n + 1, dtype).unwrap();
                let row = n_kv * hd;
                let qrow = n_heads * hd;
                let mut rec = Recorder::new(&ctx);
                let k = upload(&ctx, &[n, n_kv, hd], &full.k[..n * row]);
                let v = upload(&ctx, &[n, n_kv, hd], &full.v[..n * row]);
                kv_write(&mut rec, &cache, &k, &v, 0).unwrap();
                let q = upload(&ctx, &[n, n_heads, hd], &full.q[..n * qrow]);
                let head = attention(&mut rec, &q, &cache, 0, full.scale()).unwrap();
                let k = upload(&ctx, &[1, n_kv, hd], &full.k[n * row..]);
                let v = upload(&ctx, &[1, n_kv, hd], &full.v[n * row..]);
                kv_write(&mut rec, &cache, &k, &v, n).unwrap();
                let q = upload(&ctx, &[1, n_heads, hd], &full.q[n * qrow..]);
                let last = attention(&mut rec, &q, &cache, n, full.scale()).unwrap();
                rec.submit().unwrap();
                let what = format!("{cfg} {} heads {n_heads}/{n_kv} hd {hd} N {n}", dtype.name());
                close(&head.to_vec_f32().unwrap(), &whole[..n * qrow], ATOL, &format!("{what}: first N rows"));
                close(&last.to_vec_f32().unwrap(), &whole[n * qrow..], ATOL, &format!("{what}: decoded row"));
            }
        }
    }
}

fn is_err<T: std::fmt::Debug>(r: kestrel::Result<T>, what: &str) -> KestrelError {
    match r {
        Ok(v) => panic!("{what}: expected an error, got {v:?}"),
        Err(e) => e,
    }
}

#[test]
fn bad_arguments_are_errors() {
    let ctx = common::fast();
    // Cache construction.
    is_err(KvCache::new(&ctx, 2, 63, 8, DType::F16), "odd head_dim, f16");
    is_err(KvCache::new(&ctx, 2, 63, 8, DType::F32), "odd head_dim, f32");
    is_err(KvCache::new(&ctx, 2, 258, 8, DType::F32), "head_dim > 256");
    is_err(KvCache::new(&ctx, 2, 64, 8, DType::U32), "u32 cache");
    is_err(KvCache::new(&ctx, 0, 64, 8, DType::F32), "no heads");
    is_err(KvCache::new(&ctx, 2, 64, 0, DType::F32), "no capacity");
    is_err(KvCache::new(&ctx, 1 << 20, 256, 1 << 20, DType::F32), "larger than a binding");

    let cache = KvCache::new(&ctx, 2, 16, 8, DType::F16).unwrap();
    assert_eq!((cache.n_kv_heads(), cache.head_dim(), cache.capacity(), cache.dtype()), (2, 16, 8, DType::F16));
    let kv = |t: usize, h: usize, d: usize| upload(&ctx, &[t, h, d], &vec![0.5; t * h * d]);
    let mut rec = Recorder::new(&ctx);
    // kv_write: shapes, dtype, capacity.
    is_err(kv_write(&mut rec, &cache, &kv(3, 2, 8), &kv(3, 2, 8), 0), "kv_write head_dim");
    is_err(kv_write(&mut rec, &cache, &kv(3, 1, 16), &kv(3, 1, 16), 0), "kv_write heads");
    is_err(kv_write(&mut rec, &cache, &kv(3, 2, 16), &kv(2, 2, 16), 0), "kv_write k/v differ");
    is_err(kv_write(&mut rec, &cache, &kv(3, 2, 16), &kv(3, 2, 16), 6), "kv_write past capacity");
    is_err(kv_write(&mut rec, &cache, &kv(3, 2, 16), &kv(3, 2, 16), usize::MAX), "kv_write overflowing start");
    let h16 = Tensor::from_f32_as_f16(&ctx, &[3, 2, 16], &[0.5; 96]).unwrap();
    is_err(kv_write(&mut rec, &cache, &h16, &h16, 0), "kv_write f16 input");
    // attention: shapes, capacity, scale.
    let q = |t: usize, h: usize, d: usize| upload(&ctx, &[t, h, d], &vec![0.5; t * h * d]);
    is_err(attention(&mut rec, &q(2, 4, 8), &cache, 0, 1.0), "attention head_dim");
    is_err(attention(&mut rec, &q(2, 3, 16), &cache, 0, 1.0), "attention heads not a multiple");
    is_err(attention(&mut rec, &q(0, 4, 16), &cache, 0, 1.0), "attention no tokens");
    is_err(attention(&mut rec, &q(4, 4, 16), &cache, 5, 1.0), "attention past capacity");
    is_err(attention(&mut rec, &q(1, 4, 16), &cache, 0, f32::NAN), "attention NaN scale");
    is_err(attention(&mut rec, &upload(&ctx, &[4, 64], &[0.5; 256]), &cache, 0, 1.0), "attention rank 2");
    // rope: shapes and options.
    let opts = RopeOptions { theta: 10000.0, rotary_dim: 16, layout: RopeLayout::RotateHalf, scaling: RopeScaling::None };
    is_err(rope(&mut rec, &upload(&ctx, &[4, 16], &[0.5; 64]), 0, &opts), "rope rank 2");
    for bad in [
        RopeOptions { rotary_dim: 15, ..opts },
        RopeOptions { rotary_dim: 0, ..opts },
        RopeOptions { rotary_dim: 32, ..opts },
        RopeOptions { theta: 0.0, ..opts },
        RopeOptions { scaling: RopeScaling::Linear { factor: 0.0 }, ..opts },
        RopeOptions { scaling: RopeScaling::DynamicNtk { factor: 2.0, original_max_positions: 0 }, ..opts },
        RopeOptions { rotary_dim: 2, scaling: RopeScaling::DynamicNtk { factor: 2.0, original_max_positions: 4 }, ..opts },
    ] {
        is_err(rope(&mut rec, &q(2, 1, 16), 0, &bad), &format!("rope {bad:?}"));
    }
    assert!(rec.is_empty(), "failed calls must record nothing");
}

#[test]
fn rope_kv_write_matches_rope_and_kv_write() {
    // The fused op against the reference RoPE of q and k and the cache contents kv_write leaves:
    // GQA heads, partial and full rotary dims, both pair layouts, f32 and f16 caches, a start
    // past 0 and positions outside the written range untouched; q, k and v as three tensors and
    // as one stacked projection output (`rope_kv_write_fused`). Same RoPE tolerance as above;
    // f16 caches add one f16 ulp (2⁻¹¹ for |x| < 1, rotated values stay below √2 → 2⁻¹⁰).
    for (cfg, ctx) in all() {
        for dtype in [DType::F32, DType::F16] {
            for (t, heads, nkv, hd, rotary_dim, layout) in [
                (1, 9, 3, 64, 64, RopeLayout::RotateHalf),
                (7, 4, 2, 8, 4, RopeLayout::Interleaved),
                (3, 2, 2, 6, 6, RopeLayout::RotateHalf),
            ] {
                for stacked in [false, true] {
                    let (start, cap) = (5, 16);
                    let opts = RopeOptions { theta: 10000.0, rotary_dim, layout, scaling: RopeScaling::None };
                    let q = rand_vec(t * heads * hd, 11);
                    let k = rand_vec(t * nkv * hd, 12);
                    let v = rand_vec(t * nkv * hd, 13);
                    let cache = KvCache::new(&ctx, nkv, hd, cap, dtype).unwrap();
                    let old = rand_vec(nkv * cap * hd, 14);
                    let old_t = upload(&ctx, &[cap, nkv, hd], &old);
                    let mut rec = Recorder::new(&ctx);
                    kv_write(&mut rec, &cache, &old_t, &old_t, 0).unwrap();
                    let y = if stacked {
                        let (qr, kr) = (heads * hd, nkv * hd);
                        let qkv: Vec<f32> = (0..t)
                            .flat_map(|i| [&q[i * qr..(i + 1) * qr], &k[i * kr..(i + 1) * kr], &v[i * kr..(i + 1) * kr]].concat())
                            .collect();
                        let tqkv = upload(&ctx, &[t, heads + 2 * nkv, hd], &qkv);
                        rope_kv_write_fused(&mut rec, &tqkv, heads, &cache, start, &opts).unwrap()
                    } else {
                        let tq = upload(&ctx, &[t, heads, hd], &q);
                        let (tk, tv) = (upload(&ctx, &[t, nkv, hd], &k), upload(&ctx, &[t, nkv, hd], &v));
                        rope_kv_write(&mut rec, &tq, &tk, &tv, &cache, start, &opts).unwrap()
                    };
                    rec.submit().unwrap();
                    let what = format!("{cfg} {} t{t} h{heads}/{nkv} d{hd} rot {rotary_dim} {layout:?} stacked {stacked}", dtype.name());
                    let atol = rope_atol(start + t);
                    assert_eq!(y.shape(), [t, heads, hd]);
                    close(&y.to_vec_f32().unwrap(), &reference::rope(&q, t, heads, hd, start, &opts), atol, &format!("{what} q"));
                    let k_rot = reference::rope(&k, t, nkv, hd, start, &opts);
                    let (mut want_k, mut want_v) = (vec![0.0; nkv * cap * hd], vec![0.0; nkv * cap * hd]);
                    for pos in 0..cap {
                        for g in 0..nkv {
                            for d in 0..hd {
                                let dst = (g * cap + pos) * hd + d;
                                (want_k[dst], want_v[dst]) = if (start..start + t).contains(&pos) {
                                    let src = ((pos - start) * nkv + g) * hd + d;
                                    (k_rot[src], v[src])
                                } else {
                                    let src = (pos * nkv + g) * hd + d;
                                    (old[src], old[src])
                                };
                            }
                        }
                    }
                    let tol = atol + if dtype == DType::F16 { 2f32.powi(-10) } else { 0.0 };
                    close(&cache.k().to_vec_f32().unwrap(), &want_k, tol, &format!("{what} k cache"));
                    close(&cache.v().to_vec_f32().unwrap(), &want_v, tol, &format!("{what} v cache"));
                }
            }
        }
    }
}

#[test]
fn rope_kv_write_windows_inputs_larger_than_a_binding() {
    // 130 tokens × 32 rows × 64 dims of f32 = 1.06 MB > the 1 MiB bindings of this context: the
    // stack is taken in two runs of tokens. Separate q, k, v (one dispatch) and the stack run the
    // same arithmetic, so both leave bit-identical outputs and caches.
    let ctx = common::small_bindings();
    let (t, heads, nkv, hd, cap) = (130, 16, 8, 64, 136);
    let opts = RopeOptions { theta: 10000.0, rotary_dim: hd, layout: RopeLayout::RotateHalf, scaling: RopeScaling::None };
    let (q, k, v) = (rand_vec(t * heads * hd, 21), rand_vec(t * nkv * hd, 22), rand_vec(t * nkv * hd, 23));
    let (qr, kr) = (heads * hd, nkv * hd);
    let qkv: Vec<f32> =
        (0..t).flat_map(|i| [&q[i * qr..(i + 1) * qr], &k[i * kr..(i + 1) * kr], &v[i * kr..(i + 1) * kr]].concat()).collect();
    assert!(qkv.len() * 4 > 1 << 20);
    let run = |stacked: bool| {
        let cache = KvCache::new(&ctx, nkv, hd, cap, DType::F32).unwrap();
        let mut rec = Recorder::new(&ctx);
        let y = if stacked {
            rope_kv_write_fused(&mut rec, &upload(&ctx, &[t, heads + 2 * nkv, hd], &qkv), heads, &cache, 3, &opts).unwrap()
        } else {
            let (tq, tk, tv) = (upload(&ctx, &[t, heads, hd], &q), upload(&ctx, &[t, nkv, hd], &k), upload(&ctx, &[t, nkv, hd], &v));
            rope_kv_write(&mut rec, &tq, &tk, &tv, &cache, 3, &opts).unwrap()
        };
        assert_eq!(rec.len(), if stacked { 2 } else { 1 }, "ROPE_KV dispatches");
        rec.submit().unwrap();
        (y.to_vec_f32().unwrap(), cache.k().to_vec_f32().unwrap(), cache.v().to_vec_f32().unwrap())
    };
    let (stacked, separate) = (run(true), run(false));
    // (Unwritten cache positions hold the zeros wgpu initialises buffers with, in both runs.)
    assert!(stacked == separate, "stacked and separate rope_kv_write differ");
    close(&stacked.0, &reference::rope(&q, t, heads, hd, 3, &opts), rope_atol(3 + t), "stacked q");
}

#[test]
fn rope_kv_write_fused_checks_its_shape() {
    let ctx = common::fast();
    let cache = KvCache::new(&ctx, 2, 8, 4, DType::F32).unwrap();
    let opts = RopeOptions { theta: 10000.0, rotary_dim: 8, layout: RopeLayout::RotateHalf, scaling: RopeScaling::None };
    // 4 query heads + 2·2 KV heads = 8 rows per token; 7 is one short.
    let bad = upload(&ctx, &[1, 7, 8], &rand_vec(56, 1));
    let mut rec = Recorder::new(&ctx);
    let err = rope_kv_write_fused(&mut rec, &bad, 4, &cache, 0, &opts).unwrap_err();
    assert!(matches!(err, KestrelError::Shape { .. }), "{err}");
}
