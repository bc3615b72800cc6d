//! # Kestrel's C ABI
//!
//! The stable C surface of Kestrel (`include/kestrel.h`, generated from this crate by
//! cbindgen): a runtime (the GPU context), models loaded from a path, classification of raw
//! pixels, streamed text generation and the latency profiler, with JSON for every option,
//! request and result. Built as `libkestrel_capi.a` and `libkestrel_capi.so` (`.dylib`,
//! `.dll`); it exports only `kestrel_*` symbols. Every function is declared with its
//! ownership and thread-safety rules; the conventions are in the header's preamble.

#![allow(non_camel_case_types)]

mod ffi;

pub use ffi::*;

/// The header cbindgen generated from these declarations for this build.
#[cfg(test)]
const GENERATED_HEADER: &str = include_str!(concat!(env!("OUT_DIR"), "/kestrel.h"));

#[cfg(test)]
mod tests {
    /// The drift check: the checked-in header must be the generated one.
    #[test]
    fn the_checked_in_header_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/include/kestrel.h");
        if std::env::var_os("KESTREL_BLESS_HEADER").is_some() {
            std::fs::write(path, super::GENERATED_HEADER).expect("capi/include/kestrel.h is writable");
        }
        let checked_in = std::fs::read_to_string(path).unwrap_or_default();
        assert!(checked_in == super::GENERATED_HEADER, "{path} is stale: scripts/test-capi.sh --bless rewrites it from the declarations");
    }
}
