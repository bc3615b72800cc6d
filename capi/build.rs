//! Generates `kestrel.h` from the crate's declarations into `OUT_DIR`. The checked-in copy in
//! `include/` is compared with it by the crate's drift test rather than written from here, so
//! a build never modifies the source tree.

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    let config = cbindgen::Config::from_file(format!("{dir}/cbindgen.toml")).expect("capi/cbindgen.toml is valid");
    cbindgen::Builder::new()
        .with_crate(&dir)
        .with_config(config)
        .generate()
        .expect("cbindgen could not generate kestrel.h")
        .write_to_file(format!("{out}/kestrel.h"));
}
