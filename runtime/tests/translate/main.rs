//! Every kernel variant an op can select, translated to MSL (Metal), HLSL (DX12) and SPIR-V
//! (Vulkan) by naga's back ends as wgpu does on those platforms: validated with the features a
//! device that selects the variant has, written with the options wgpu-hal passes and at the
//! lowest language version such a device may run. CI runs only Linux; this keeps the other
//! platforms' shader translation checked. It says nothing about the platform compilers (Metal's,
//! DXC) that take naga's output on a real device.
//!
//! It needs no device, so it runs once per CI run (about 20 s on two cores): `scripts/test.sh`
//! runs it in the Vulkan pass and sets `KESTREL_SKIP_TRANSLATION=1` for the GL pass.

mod hlsl;
mod msl;
mod spv;
mod target;

use kestrel::ops::all_variants;
use kestrel::pipeline::KernelKey;
use kestrel::shader::{preprocess, source};
use target::{BACKENDS, Validated};

/// Translates one variant for every back end; each failure is a line naming the variant.
fn check(key: &KernelKey) -> Vec<String> {
    let name = format!("{}:{}[{}]", key.family, key.entry, key.defines.key());
    match source(key.family).and_then(|src| preprocess(key.family, &src, &key.defines)) {
        Ok(wgsl) => check_wgsl(&name, &wgsl, key.entry),
        Err(e) => vec![format!("{name}: {e}")],
    }
}

/// Validates `wgsl` and translates its entry point `entry` for every back end.
fn check_wgsl(name: &str, wgsl: &str, entry: &str) -> Vec<String> {
    match Validated::new(wgsl, entry) {
        Ok(v) => BACKENDS.iter().filter_map(|&b| v.translate(b).err().map(|e| format!("{name} on {b:?}: {e}"))).collect(),
        Err(e) => vec![format!("{name}: validation: {e}")],
    }
}

#[test]
fn every_variant_translates_for_metal_dx12_and_vulkan() {
    if std::env::var_os("KESTREL_SKIP_TRANSLATION").is_some_and(|v| v == "1") {
        eprintln!("KESTREL_SKIP_TRANSLATION=1: skipped (another pass of the suite runs it)");
        return;
    }
    let variants = all_variants();
    assert!(!variants.is_empty());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_thread = variants.len().div_ceil(threads);
    let failures: Vec<String> = std::thread::scope(|s| {
        let workers: Vec<_> =
            variants.chunks(per_thread).map(|chunk| s.spawn(move || chunk.iter().flat_map(check).collect::<Vec<_>>())).collect();
        workers.into_iter().flat_map(|w| w.join().unwrap_or_else(|_| vec!["a translation thread panicked".into()])).collect()
    });
    assert!(
        failures.is_empty(),
        "{} of {} variants × {} back ends fail to translate:\n{}",
        failures.len(),
        variants.len(),
        BACKENDS.len(),
        failures.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
}

/// The failure path: a kernel that naga validates and that its MSL and SPIR-V writers take, but
/// its HLSL writer does not — loading a whole array of atomics out of a storage buffer (naga 30's
/// HLSL writer panics on it; the test turns the panic into a failure). Should a naga update
/// teach the HLSL writer this, pick another construct only one back end rejects.
#[test]
fn a_kernel_only_one_back_end_rejects_is_caught() {
    let failures = check_wgsl("broken", include_str!("only_hlsl_rejects.wgsl"), "main");
    assert_eq!(failures.len(), 1, "{failures:#?}");
    assert!(failures[0].starts_with("broken on Dx12: "), "{failures:#?}");
}
