//! BatchNorm / RepBN / norm-affine folding: exactness against the unfolded computation on random
//! data, typed errors, and the acceptance test on the torch-written fixture (conv → BN, BN before
//! a pooled head, RepBN before a linear), compared with PyTorch's own eval-mode output.
//!
//! Tolerance (all comparisons): max |folded − reference| ≤ 1e-5 · max |reference|. Both sides are
//! evaluated in f64 from the same f32 parameters, so the only difference is the rounding of the
//! folded parameters to f32 (relative 2⁻²⁴ ≈ 6e-8 per weight); with at most a few hundred terms per
//! output that stays below ~1e-6 of the output scale. Against PyTorch's f32 output the error of
//! PyTorch's own f32 accumulation (K ≤ 72 terms per conv output) adds a few 1e-7.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use kestrel::error::KestrelError;
use kestrel::weights::fold::{BatchNorm, ChannelAffine, fold_into_following_linear, fold_into_pooled_head, fold_into_preceding};
use kestrel::weights::{self, WeightSource, pytorch};

/// Deterministic values in [-1, 1).
fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            let r = s.wrapping_mul(0x2545_F491_4F6C_DD1D);
            ((r >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// A random BatchNorm with positive variances.
fn rand_bn(c: usize, seed: u64) -> BatchNorm {
    BatchNorm {
        gamma: rand_vec(c, seed).iter().map(|v| 1.0 + v * 0.7).collect(),
        beta: rand_vec(c, seed + 1),
        mean: rand_vec(c, seed + 2),
        var: rand_vec(c, seed + 3).iter().map(|v| 1.0 + v * 0.9).collect(),
        eps: 1e-5,
    }
}

/// Asserts max |got − want| ≤ 1e-5 · max |want| (see the module comment).
fn assert_rel(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let err = got.iter().zip(want).fold(0.0f64, |m, (g, w)| m.max((g - w).abs()));
    assert!(scale > 0.0 && err <= 1e-5 * scale, "{what}: max error {err} vs scale {scale}");
}

/// f32 → f64.
fn wide(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

/// NCHW conv2d (groups 1) in f64: x [n, ci, h, w], weight [co, ci, k, k], `geom` =
/// `[co, k, stride, pad]`.
fn conv2d(x: &[f64], dims: [usize; 4], w: &[f64], b: Option<&[f64]>, geom: [usize; 4]) -> (Vec<f64>, [usize; 4]) {
    let [co, k, stride, pad] = geom;
    let [n, ci, h, wd] = dims;
    let (oh, ow) = ((h + 2 * pad - k) / stride + 1, (wd + 2 * pad - k) / stride + 1);
    let mut out = vec![0.0; n * co * oh * ow];
    for bi in 0..n {
        for o in 0..co {
            for y in 0..oh {
                for xo in 0..ow {
                    let mut acc = b.map_or(0.0, |b| b[o]);
                    for c in 0..ci {
                        for ky in 0..k {
                            for kx in 0..k {
                                let (iy, ix) = ((y * stride + ky) as isize - pad as isize, (xo * stride + kx) as isize - pad as isize);
                                if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd {
                                    acc += w[((o * ci + c) * k + ky) * k + kx] * x[((bi * ci + c) * h + iy as usize) * wd + ix as usize];
                                }
                            }
                        }
                    }
                    out[((bi * co + o) * oh + y) * ow + xo] = acc;
                }
            }
        }
    }
    (out, [n, co, oh, ow])
}

/// Inference BatchNorm computed the textbook way (not through `ChannelAffine`), plus α·x.
fn batch_norm(x: &mut [f64], bn: &BatchNorm, alpha: f64, inner: usize) {
    let c = bn.gamma.len();
    for (i, v) in x.iter_mut().enumerate() {
        let ch = (i / inner) % c;
        let norm = (*v - f64::from(bn.mean[ch])) / (f64::from(bn.var[ch]) + bn.eps).sqrt();
        *v = f64::from(bn.gamma[ch]) * norm + f64::from(bn.beta[ch]) + alpha * *v;
    }
}

/// y = x Wᵀ + b for x [n, in], W [out, in].
fn linear(x: &[f64], w: &[f64], b: &[f64], out: usize) -> Vec<f64> {
    let inf = w.len() / out;
    x.chunks_exact(inf)
        .flat_map(|row| (0..out).map(move |o| b[o] + row.iter().zip(&w[o * inf..(o + 1) * inf]).map(|(x, w)| x * w).sum::<f64>()))
        .collect()
}

/// Mean over the last axis of `[rows, inner]`.
fn mean_rows(x: &[f64], inner: usize) -> Vec<f64> {
    x.chunks_exact(inner).map(|r| r.iter().sum::<f64>() / inner as f64).collect()
}

/// ReLU in place.
fn relu(x: &mut [f64]) {
    x.iter_mut().for_each(|v| *v = v.max(0.0));
}

#[test]
fn bn_into_preceding_conv_is_exact() {
    let (ci, co, k) = (5, 4, 3);
    let x = wide(&rand_vec(2 * ci * 7 * 7, 1));
    let w = rand_vec(co * ci * k * k, 2);
    let b = rand_vec(co, 3);
    let bn = rand_bn(co, 4);
    for bias in [Some(&b[..]), None] {
        let (mut want, d) = conv2d(&x, [2, ci, 7, 7], &wide(&w), bias.map(wide).as_deref(), [co, k, 2, 1]);
        batch_norm(&mut want, &bn, 0.0, d[2] * d[3]);
        let f = fold_into_preceding(&bn.affine().unwrap(), &w, bias).unwrap();
        let (got, _) = conv2d(&x, [2, ci, 7, 7], &wide(&f.weight), Some(&wide(&f.bias)), [co, k, 2, 1]);
        assert_rel(&got, &want, "conv + BN");
    }
}

#[test]
fn bn_and_repbn_into_following_linear_are_exact() {
    // inner = 1 (feature vector) and inner = 5 (linear after flattening a [4, 5] map).
    for (ch, inner, alpha) in [(12, 1, 0.0), (4, 5, 0.0), (12, 1, 0.37), (4, 5, -1.25)] {
        let (n, inf, out) = (3, ch * inner, 7);
        let x = wide(&rand_vec(n * inf, 10));
        let w = rand_vec(out * inf, 11);
        let b = rand_vec(out, 12);
        let bn = rand_bn(ch, 13);
        let mut normed = x.clone();
        batch_norm(&mut normed, &bn, alpha, inner);
        let want = linear(&normed, &wide(&w), &wide(&b), out);
        let f = fold_into_following_linear(&bn.rep_affine(alpha).unwrap(), &w, Some(&b), out).unwrap();
        assert_rel(&linear(&x, &wide(&f.weight), &wide(&f.bias), out), &want, &format!("BN(α={alpha}) → linear, inner {inner}"));
    }
}

#[test]
fn bn_before_mean_pool_into_head_is_exact() {
    let (n, ch, positions, out) = (2, 6, 9, 7);
    let x = wide(&rand_vec(n * ch * positions, 20));
    let w = rand_vec(out * ch, 21);
    let bn = rand_bn(ch, 22);
    let mut normed = x.clone();
    batch_norm(&mut normed, &bn, 0.0, positions);
    let want = linear(&mean_rows(&normed, positions), &wide(&w), &vec![0.0; out], out);
    let f = fold_into_pooled_head(&bn.affine().unwrap(), &w, None, out).unwrap();
    assert_rel(&linear(&mean_rows(&x, positions), &wide(&f.weight), &wide(&f.bias), out), &want, "BN → mean → head");
}

#[test]
fn norm_affine_into_following_linear_is_exact() {
    let (n, d, out) = (3, 16, 5);
    let x = wide(&rand_vec(n * d, 30)); // stands for the normalised (pre-affine) activations
    let (g, beta) = (rand_vec(d, 31), rand_vec(d, 32));
    let (w, b) = (rand_vec(out * d, 33), rand_vec(out, 34));
    for with_beta in [true, false] {
        let beta = with_beta.then_some(&beta[..]);
        let affine = ChannelAffine::from_norm(&g, beta).unwrap();
        let mut y = x.clone();
        for (i, v) in y.iter_mut().enumerate() {
            *v = *v * f64::from(g[i % d]) + beta.map_or(0.0, |b| f64::from(b[i % d]));
        }
        let want = linear(&y, &wide(&w), &wide(&b), out);
        let f = fold_into_following_linear(&affine, &w, Some(&b), out).unwrap();
        assert_rel(&linear(&x, &wide(&f.weight), &wide(&f.bias), out), &want, "norm affine → linear");
    }
}

/// Whether `r` is a shape error.
fn shape<T>(r: kestrel::Result<T>) -> bool {
    matches!(r, Err(KestrelError::Shape { .. }))
}

#[test]
fn bad_shapes_are_typed_errors() {
    let bn = rand_bn(4, 40);
    let a = bn.affine().unwrap();
    assert!(shape(fold_into_preceding(&a, &[0.0; 10], None)));
    assert!(shape(fold_into_preceding(&a, &[0.0; 8], Some(&[0.0; 3]))));
    assert!(shape(fold_into_following_linear(&a, &[0.0; 12], None, 2)));
    assert!(shape(fold_into_following_linear(&a, &[0.0; 8], None, 0)));
    assert!(shape(fold_into_following_linear(&a, &[0.0; 8], Some(&[0.0; 1]), 2)));
    assert!(shape(fold_into_pooled_head(&a, &[0.0; 16], None, 2)));
    assert!(shape(fold_into_pooled_head(&a, &[0.0; 8], None, usize::MAX)));
    assert!(shape(ChannelAffine::from_norm(&[1.0; 4], Some(&[0.0; 3]))));
    let mut short = bn.clone();
    short.var.pop();
    assert!(shape(short.affine()));
    let mut negative = bn.clone();
    negative.var[2] = -1.0;
    assert!(matches!(negative.affine(), Err(KestrelError::InvalidArgument { .. })));
    // A prefix without running statistics names the file and the tensor.
    let src = pytorch::open(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pytorch_bn.pth")).unwrap();
    match BatchNorm::from_source(&*src, "conv1", 1e-5) {
        Err(KestrelError::Weights { tensor, .. }) => assert_eq!(tensor.as_deref(), Some("conv1.running_mean")),
        other => panic!("expected a Weights error, got {other:?}"),
    }
}

/// Parameters by name, recording every name the forward pass reads.
struct Params {
    /// Values.
    map: HashMap<String, Vec<f64>>,
    /// Names read so far.
    used: RefCell<BTreeSet<String>>,
}

impl Params {
    fn get(&self, name: &str) -> &[f64] {
        self.used.borrow_mut().insert(name.to_string());
        self.map.get(name).unwrap_or_else(|| panic!("parameter {name} missing"))
    }
}

/// The fixture network's forward pass in f64. `folded` skips every BN (their affines are in the
/// neighbouring layers' parameters).
fn forward(p: &Params, x: &[f64], folded: bool) -> Vec<f64> {
    let bn = |prefix: &str, eps: f64| BatchNorm {
        gamma: p.get(&format!("{prefix}.weight")).iter().map(|&v| v as f32).collect(),
        beta: p.get(&format!("{prefix}.bias")).iter().map(|&v| v as f32).collect(),
        mean: p.get(&format!("{prefix}.running_mean")).iter().map(|&v| v as f32).collect(),
        var: p.get(&format!("{prefix}.running_var")).iter().map(|&v| v as f32).collect(),
        eps,
    };
    let (mut h, d) = conv2d(x, [2, 3, 8, 8], p.get("conv1.weight"), Some(p.get("conv1.bias")), [8, 3, 1, 1]);
    if !folded {
        batch_norm(&mut h, &bn("bn1", 1e-5), 0.0, d[2] * d[3]);
    }
    relu(&mut h);
    let (mut h, d) = conv2d(&h, d, p.get("conv2.weight"), Some(p.get("conv2.bias")), [6, 3, 2, 1]);
    if !folded {
        batch_norm(&mut h, &bn("bn2", 1e-3), 0.0, d[2] * d[3]);
    }
    let pooled = mean_rows(&h, d[2] * d[3]);
    let mut h = linear(&pooled, p.get("fc1.weight"), p.get("fc1.bias"), 10);
    relu(&mut h);
    if !folded {
        batch_norm(&mut h, &bn("rep.bn", 1e-5), p.get("rep.alpha")[0], 1);
    }
    linear(&h, p.get("fc2.weight"), p.get("fc2.bias"), 5)
}

/// A raw little-endian f32 fixture file.
fn read_f32(name: &str) -> Vec<f64> {
    let b = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)).unwrap();
    b.chunks_exact(4).map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect()
}

/// A tensor of the checkpoint as f32.
fn t32(src: &dyn WeightSource, name: &str) -> Vec<f32> {
    weights::tensor_f32(src, name).unwrap()
}

#[test]
fn folded_fixture_network_matches_pytorch() {
    let src = pytorch::open(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pytorch_bn.pth")).unwrap();
    let x = read_f32("pytorch_bn_input.bin");
    let want = read_f32("pytorch_bn_output.bin");
    assert_eq!((x.len(), want.len()), (2 * 3 * 8 * 8, 2 * 5));

    // Unfolded, every parameter of the file.
    let all =
        Params { map: src.tensors().iter().map(|t| (t.name.clone(), wide(&t32(&*src, &t.name)))).collect(), used: RefCell::default() };
    assert_rel(&forward(&all, &x, false), &want, "unfolded f64 forward vs PyTorch");

    // Folded: conv1 absorbs bn1 (preceding), fc1 absorbs bn2 (BN → mean pool → head), fc2 absorbs
    // the RepBN (following linear).
    let conv1 = fold_into_preceding(
        &BatchNorm::from_source(&*src, "bn1", 1e-5).unwrap().affine().unwrap(),
        &t32(&*src, "conv1.weight"),
        Some(&t32(&*src, "conv1.bias")),
    )
    .unwrap();
    let fc1 = fold_into_pooled_head(
        &BatchNorm::from_source(&*src, "bn2", 1e-3).unwrap().affine().unwrap(),
        &t32(&*src, "fc1.weight"),
        Some(&t32(&*src, "fc1.bias")),
        10,
    )
    .unwrap();
    let alpha = f64::from(t32(&*src, "rep.alpha")[0]);
    let fc2 = fold_into_following_linear(
        &BatchNorm::from_source(&*src, "rep.bn", 1e-5).unwrap().rep_affine(alpha).unwrap(),
        &t32(&*src, "fc2.weight"),
        Some(&t32(&*src, "fc2.bias")),
        5,
    )
    .unwrap();
    let mut map = HashMap::new();
    for (name, layer) in [("conv1", &conv1), ("fc1", &fc1), ("fc2", &fc2)] {
        map.insert(format!("{name}.weight"), wide(&layer.weight));
        map.insert(format!("{name}.bias"), wide(&layer.bias));
    }
    map.insert("conv2.weight".into(), wide(&t32(&*src, "conv2.weight")));
    map.insert("conv2.bias".into(), wide(&t32(&*src, "conv2.bias")));
    let folded = Params { map, used: RefCell::default() };
    assert_rel(&forward(&folded, &x, true), &want, "folded f64 forward vs PyTorch");

    // The folded forward read exactly the four folded/plain layers, and no BN parameter.
    let used = folded.used.borrow();
    let expect: BTreeSet<String> =
        ["conv1", "conv2", "fc1", "fc2"].iter().flat_map(|l| [format!("{l}.weight"), format!("{l}.bias")]).collect();
    assert_eq!(*used, expect);
    assert!(used.iter().all(|n| !n.starts_with("bn") && !n.starts_with("rep.")));
}
