//! Shared harness of the kernel tests: one context per configuration, seeded data, and
//! comparisons against the CPU reference.
#![allow(dead_code)]

use std::sync::{Arc, OnceLock};

use kestrel::{Context, ContextOptions, SubgroupLayoutTest};

/// The shapes every kernel is tried at: 1, odd primes, tile-size neighbours, ViT token counts.
pub const AWKWARD: &[usize] = &[1, 7, 33, 197, 577];

fn make(opts: ContextOptions) -> Arc<Context> {
    match Context::new(&opts) {
        Ok(c) => c,
        Err(e) => panic!("cannot create a GPU context (is lavapipe installed?): {e}"),
    }
}

/// The device with every fast path it offers.
pub fn fast() -> Arc<Context> {
    static C: OnceLock<Arc<Context>> = OnceLock::new();
    C.get_or_init(|| make(ContextOptions::from_env())).clone()
}

/// The same device with f16 and subgroups hidden, so fallback kernels run (GPU kernel set).
pub fn fallback() -> Arc<Context> {
    static C: OnceLock<Arc<Context>> = OnceLock::new();
    C.get_or_init(|| make(ContextOptions { disable_f16: true, disable_subgroups: true, gpu_kernels: true, ..ContextOptions::from_env() }))
        .clone()
}

/// The same device with a 1 MiB storage-binding limit, so chunked (windowed) paths run at
/// small sizes (quantised weights in buffers, which are what gets windowed).
pub fn small_bindings() -> Arc<Context> {
    static C: OnceLock<Arc<Context>> = OnceLock::new();
    C.get_or_init(|| {
        make(ContextOptions { max_binding_override: Some(1 << 20), weight_textures: Some(false), ..ContextOptions::from_env() })
    })
    .clone()
}

/// [`small_bindings`] with the GPU kernel set.
pub fn small_bindings_gpu_kernels() -> Arc<Context> {
    static C: OnceLock<Arc<Context>> = OnceLock::new();
    C.get_or_init(|| {
        make(ContextOptions {
            max_binding_override: Some(1 << 20),
            gpu_kernels: true,
            weight_textures: Some(false),
            ..ContextOptions::from_env()
        })
    })
    .clone()
}

/// The GPU kernel set reading quantised weights from textures (the CPU kernel set does by
/// default on a CPU adapter; the GPU set does not), so every quantised kernel runs with both
/// weight storages.
pub fn gpu_kernels_textures() -> Arc<Context> {
    static C: OnceLock<Arc<Context>> = OnceLock::new();
    C.get_or_init(|| make(ContextOptions { gpu_kernels: true, weight_textures: Some(true), ..ContextOptions::from_env() })).clone()
}

/// The device with every fast path, selecting the kernels meant for real GPUs even where the
/// adapter is a CPU (lavapipe), so both kernel sets run in the tests.
pub fn gpu_kernels() -> Arc<Context> {
    static C: OnceLock<Arc<Context>> = OnceLock::new();
    C.get_or_init(|| make(ContextOptions { gpu_kernels: true, ..ContextOptions::from_env() })).clone()
}

/// The CPU-adapter kernel set with f16 and subgroups hidden: its no-subgroup variants (on a GPU
/// adapter, the GPU kernels' fallbacks again).
pub fn cpu_plain() -> Arc<Context> {
    static C: OnceLock<Arc<Context>> = OnceLock::new();
    C.get_or_init(|| make(ContextOptions { disable_f16: true, disable_subgroups: true, ..ContextOptions::from_env() })).clone()
}

/// The GPU kernel set as on a device whose subgroups are scattered over the local invocation
/// indices ([`SubgroupLayoutTest::PermutedLocalIndex`]): a subgroup reduction that assumes
/// contiguous subgroups gives wrong sums here.
pub fn permuted_local_index() -> Arc<Context> {
    static C: OnceLock<Arc<Context>> = OnceLock::new();
    C.get_or_init(|| layout_context(SubgroupLayoutTest::PermutedLocalIndex)).clone()
}

/// The GPU kernel set with the subgroup reductions on their path for subgroups that do not
/// tile the workgroup ([`SubgroupLayoutTest::Untiled`]).
pub fn untiled_subgroups() -> Arc<Context> {
    static C: OnceLock<Arc<Context>> = OnceLock::new();
    C.get_or_init(|| layout_context(SubgroupLayoutTest::Untiled)).clone()
}

fn layout_context(test: SubgroupLayoutTest) -> Arc<Context> {
    make(ContextOptions { gpu_kernels: true, subgroup_layout_test: Some(test), ..ContextOptions::from_env() })
}

/// [`all`] plus the imitated subgroup layouts, for the families with subgroup reductions
/// (GEMV, norms, softmax, argmax / top-k, decode attention). Where the device has no
/// subgroups the layouts only permute the local indices of the workgroup-reduction kernels.
pub fn all_with_subgroup_layouts() -> Vec<(&'static str, Arc<Context>)> {
    let mut v = all();
    v.extend(subgroup_layouts());
    v
}

/// The imitated subgroup layouts alone: [`permuted_local_index`], [`untiled_subgroups`].
pub fn subgroup_layouts() -> Vec<(&'static str, Arc<Context>)> {
    vec![("permuted-lid", permuted_local_index()), ("untiled-subgroups", untiled_subgroups())]
}

/// [`all`] plus [`cpu_plain`], for the families with a CPU-adapter kernel set.
pub fn all_with_cpu_plain() -> Vec<(&'static str, Arc<Context>)> {
    let mut v = all();
    v.push(("cpu-plain", cpu_plain()));
    v
}

/// Every configuration, labelled: fast paths; forced fallbacks (no f16, no subgroups) with the
/// GPU kernel set; fast paths with the GPU kernel set.
pub fn all() -> Vec<(&'static str, Arc<Context>)> {
    vec![("fast", fast()), ("fallback", fallback()), ("gpu-kernels", gpu_kernels())]
}

/// Deterministic pseudo-random values in [-1, 1) (xorshift64*).
pub fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
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

/// Asserts `|got - want| <= atol + rtol·|want|` everywhere; names the first offender.
#[track_caller]
pub fn assert_close(got: &[f32], want: &[f32], atol: f32, rtol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        let tol = atol + rtol * w.abs();
        // NaN anywhere fails: `err > tol` alone would let it through.
        if err.is_nan() || err > tol {
            panic!("{what}: element {i}: got {g}, want {w} (|Δ| {err} > tol {tol})");
        }
    }
}

/// Rounds through f16, as an f16 tensor stores values.
pub fn f16_round(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect()
}
