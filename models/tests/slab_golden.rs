//! SLAB golden tests: every family against the PyTorch reference written from the formulas
//! (tools/slab_reference), on seeded random weights with non-trivial BN statistics and α,
//! saved in the official checkpoint formats and key names.
//!
//! Tolerances (acceptance of issue #4): f32 max |Δlogit| ≤ 1e-3 (the reference is computed in
//! f64; f32 accumulation over ≤ 12 blocks stays far below it); f16 and w8: same top-1 and
//! cosine ≥ 0.999; w4: cosine ≥ 0.99; folded vs unfolded (RepBN as a separate op) ≤ 1e-4
//! relative — both run in f32, so they differ only by rounding order.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use kestrel::Quant;
use kestrel::{Context, ContextOptions, Recorder, Tensor};
use kestrel_models::npy::read_npy_f32;
use kestrel_models::params::HostParams;
use kestrel_models::slab::config::{Family, Mixer, SlabConfig};
use kestrel_models::slab::fold::FoldMode;
use kestrel_models::slab::synthetic::{SynthRule, input_image, rule, uniform_values, weight_seed};
use kestrel_models::slab::{SlabModel, fold_checkpoint};
use serde_json::Value;

fn ctx() -> Arc<Context> {
    static C: OnceLock<Arc<Context>> = OnceLock::new();
    C.get_or_init(|| Context::new(&ContextOptions::from_env()).expect("GPU context (is lavapipe installed?)")).clone()
}

/// Runs the model checks one at a time: wgpu's GL backend holds its adapter context while a
/// submission executes and panics when another thread waits for it longer than its 6 s timeout,
/// which a full-size model's pass on llvmpipe can exceed.
fn serial() -> MutexGuard<'static, ()> {
    static M: Mutex<()> = Mutex::new(());
    M.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/slab")
}

fn json(name: &str) -> Value {
    let text = std::fs::read_to_string(fixtures().join(format!("{name}.json"))).expect("fixture json");
    serde_json::from_str(&text).expect("valid json")
}

/// The model configuration described by a fixture's `config` object (and, for PVT's
/// spatial-reduction ratios, its `architecture`: `config.sr_ratios` shows the constructor
/// default, which SLA stages do not use).
fn config_of(v: &Value) -> SlabConfig {
    let c = &v["config"];
    let u = |k: &str| c[k].as_u64().map(|x| x as usize);
    let list = |k: &str| c[k].as_array().map(|a| a.iter().filter_map(Value::as_u64).map(|x| x as usize).collect::<Vec<_>>());
    let family = match c["family"].as_str() {
        Some("deit") => Family::Deit,
        Some("swin") => Family::Swin,
        Some("pvt") => Family::Pvt,
        Some("cswin") => Family::Cswin,
        other => panic!("family {other:?}"),
    };
    let leading_l = || c["attn_type"].as_str().unwrap().chars().take_while(|&ch| ch == 'L').count();
    let mixer_of = |global: usize| if global > 0 { Mixer::Sla } else { Mixer::Softmax };
    let mut cfg = SlabConfig {
        arch: c["name"].as_str().unwrap().to_string(),
        family,
        mixer: Mixer::Sla,
        img_size: u("img_size").unwrap(),
        in_chans: u("in_chans").unwrap(),
        num_classes: u("num_classes").unwrap(),
        patch_size: u("patch_size").unwrap_or(4),
        embed_dims: Vec::new(),
        depths: Vec::new(),
        heads: Vec::new(),
        mlp_ratios: Vec::new(),
        window: 0,
        global_stages: 0,
        sr_ratios: Vec::new(),
        split_sizes: Vec::new(),
    };
    match family {
        Family::Deit => {
            cfg.mixer = if c["attn"] == "sla" { Mixer::Sla } else { Mixer::Softmax };
            cfg.embed_dims = vec![u("dim").unwrap()];
            cfg.depths = vec![u("depth").unwrap()];
            cfg.heads = vec![u("heads").unwrap()];
        }
        Family::Swin | Family::Cswin => {
            cfg.global_stages = leading_l();
            cfg.mixer = mixer_of(cfg.global_stages);
            let e = u("embed_dim").unwrap();
            cfg.embed_dims = vec![e, 2 * e, 4 * e, 8 * e];
            cfg.depths = list("depths").unwrap();
            cfg.heads = list("heads").unwrap();
            if family == Family::Swin {
                cfg.window = u("sa_window").unwrap();
            } else {
                cfg.split_sizes = list("split_size").unwrap();
                // 'L' stages are one SLA window over the whole map.
                let res = cfg.img_size / cfg.patch_size;
                let la = list("la_split").unwrap();
                assert!((0..cfg.global_stages).all(|s| la[s] == res >> s), "la_split {la:?} is not the map");
            }
        }
        Family::Pvt => {
            cfg.mixer = mixer_of(leading_l());
            cfg.embed_dims = list("embed_dims").unwrap();
            cfg.depths = list("depths").unwrap();
            cfg.heads = list("heads").unwrap();
            cfg.mlp_ratios = list("mlp_ratios").unwrap();
            cfg.sr_ratios =
                v["architecture"]["stages"].as_array().unwrap().iter().map(|st| st["sr_ratio"].as_u64().unwrap() as usize).collect();
        }
    }
    if cfg.mlp_ratios.is_empty() {
        cfg.mlp_ratios = vec![c["mlp_ratio"].as_f64().expect("mlp_ratio") as usize; cfg.embed_dims.len()];
    }
    cfg
}

fn run(model: &SlabModel, input: &[f32]) -> Vec<f32> {
    let c = model.config();
    let x = Tensor::from_f32(&ctx(), &[1, c.in_chans, c.img_size, c.img_size], input).unwrap();
    let mut rec = Recorder::new(&ctx());
    let logits = model.forward(&mut rec, &x).unwrap();
    rec.submit().unwrap();
    logits.to_vec_f32().unwrap()
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i).unwrap()
}

/// Checks one small fixture model: f32 against the reference, folded against unfolded, and the
/// quantised storages against f32.
fn check_small(name: &str) {
    let _serial = serial();
    let meta = json(name);
    let cfg = config_of(&meta);
    let src = kestrel::weights::open(&fixtures().join(format!("{name}.pth"))).unwrap();
    let (_, input) = read_npy_f32(&fixtures().join(format!("{name}.input.npy"))).unwrap();
    let (_, want) = read_npy_f32(&fixtures().join(format!("{name}.logits.npy"))).unwrap();

    let folded = fold_checkpoint(src.as_ref(), &cfg, FoldMode::Fold).unwrap();
    let model = SlabModel::load(&ctx(), &cfg, &folded, Quant::F32).unwrap();
    let got = run(&model, &input);
    let err = max_abs(&got, &want);
    println!("{name}: f32 max |Δlogit| = {err:.2e}");
    assert!(err <= 1e-3, "{name}: f32 logits differ by {err}");

    let kept = fold_checkpoint(src.as_ref(), &cfg, FoldMode::Keep).unwrap();
    let unfolded = run(&SlabModel::load(&ctx(), &cfg, &kept, Quant::F32).unwrap(), &input);
    let scale = got.iter().map(|v| v.abs()).fold(0.0, f32::max);
    let rel = max_abs(&got, &unfolded) / scale;
    println!("{name}: folded vs unfolded max rel = {rel:.2e}");
    assert!(rel <= 1e-4, "{name}: fold changed the logits by {rel} (relative)");

    for (quant, min_cos) in [(Quant::F16, 0.999), (Quant::W8, 0.999), (Quant::W4, 0.99)] {
        let q = run(&SlabModel::load(&ctx(), &cfg, &folded, quant).unwrap(), &input);
        let cos = cosine(&q, &got);
        println!("{name}: {} cosine {cos:.6}", quant.name());
        assert!(cos >= min_cos, "{name}: {} cosine {cos} < {min_cos}", quant.name());
        if quant != Quant::W4 {
            assert_eq!(argmax(&q), argmax(&got), "{name}: {} changed the top-1 class", quant.name());
        }
    }
}

#[test]
fn slab_deit_small_fixture() {
    check_small("slab_deit_test");
}

#[test]
fn deit_prepbn_baseline_fixture() {
    check_small("deit_prepbn_test");
}

#[test]
fn slab_swin_small_fixture() {
    check_small("slab_swin_test");
}

#[test]
fn swin_prepbn_baseline_fixture() {
    check_small("swin_prepbn_test");
}

#[test]
fn slab_pvt_small_fixture() {
    check_small("slab_pvt_test");
}

#[test]
fn pvt_prepbn_baseline_fixture() {
    check_small("pvt_prepbn_test");
}

#[test]
fn slab_cswin_small_fixture() {
    check_small("slab_cswin_test");
}

/// The full-size state dict of `arch` from the synthetic generator with `seed`, keyed and
/// ordered by the committed official key list `<arch>.keys.tsv`.
fn synthetic_checkpoint(arch: &str, seed: u64) -> HostParams {
    let list = std::fs::read_to_string(fixtures().join(format!("{arch}.keys.tsv"))).unwrap();
    let mut params = HostParams::new(format!("<synthetic {arch}>"));
    for (i, line) in list.lines().enumerate() {
        let mut cols = line.split('\t');
        let (name, shape) = (cols.next().unwrap(), cols.next().unwrap());
        let shape: Vec<usize> =
            shape.trim_matches(['[', ']']).split(',').filter(|s| !s.trim().is_empty()).map(|s| s.trim().parse().unwrap()).collect();
        let n = shape.iter().product();
        let values = match rule(name, &shape).unwrap_or_else(|| panic!("no rule for {name}")) {
            SynthRule::Uniform { lo, hi } => uniform_values(seed, i as u64, lo, hi, n),
            SynthRule::IntZero | SynthRule::Architecture => vec![0.0; n],
        };
        params.insert(name, shape, values).unwrap();
    }
    params
}

fn check_full(arch: &str) {
    let _serial = serial();
    let cfg = kestrel_models::slab::config::lookup(arch).unwrap();
    let ckpt = synthetic_checkpoint(arch, weight_seed(arch).unwrap());
    let folded = fold_checkpoint(&ckpt, &cfg, FoldMode::Fold).unwrap();
    let model = SlabModel::load(&ctx(), &cfg, &folded, Quant::F32).unwrap();
    let got = run(&model, &input_image(224));
    let (_, want) = read_npy_f32(&fixtures().join(format!("{arch}_full.logits.npy"))).unwrap();
    let err = max_abs(&got, &want);
    println!("{arch} (full size): f32 max |Δlogit| = {err:.2e}, top-1 {} (reference {})", argmax(&got), argmax(&want));
    assert!(err <= 1e-3, "{arch}: f32 logits differ by {err}");
}

#[test]
fn slab_deit_tiny_full_size() {
    check_full("slab_deit_tiny");
}

#[test]
fn slab_swin_tiny_full_size() {
    check_full("slab_swin_tiny");
}

/// A full-size checkpoint with exactly the official entries of `arch` is recognised, folds and
/// loads (its logits are not checked: no full-size reference exists for these families).
fn check_key_list(arch: &str) {
    let _serial = serial();
    let ckpt = synthetic_checkpoint(arch, 9);
    let cfg = kestrel_models::slab::infer::infer_config(&ckpt).unwrap();
    assert_eq!(cfg.arch, arch);
    let folded = fold_checkpoint(&ckpt, &cfg, FoldMode::Fold).unwrap();
    SlabModel::load(&ctx(), &cfg, &folded, Quant::F32).unwrap();
}

#[test]
fn slab_pvt_tiny_official_keys() {
    check_key_list("slab_pvt_tiny");
}

#[test]
fn pvt_tiny_prepbn_official_keys() {
    check_key_list("pvt_tiny_prepbn");
}

#[test]
fn slab_cswin_tiny_official_keys() {
    check_key_list("slab_cswin_tiny");
}
