//! Links libkestrel_jni.so with 16 KB page alignment on ELF targets (Android 15+ devices with
//! 16 KB pages refuse to load a library whose LOAD segments are aligned to 4 KB). The same flag
//! is used on Linux hosts so that the host test (scripts/test-android.sh) checks it with readelf.

fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os == "android" || os == "linux" {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-z,max-page-size=16384");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
