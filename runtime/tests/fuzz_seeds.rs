//! Every committed fuzz seed (`fuzz/seeds/*/*`: real fixtures and the crafted files of past
//! defects) through the fuzz targets' own body, as a regression test that runs without
//! cargo-fuzz: no seed may panic, and the crafted seeds must still be read as intended.

#[path = "../../fuzz/src/lib.rs"]
mod body;

use std::path::{Path, PathBuf};

fn seeds() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds")
}

#[test]
fn every_seed_runs_through_the_fuzz_body() {
    let mut n = 0;
    for target in std::fs::read_dir(seeds()).expect("seeds") {
        let target = target.expect("entry").path();
        if !target.is_dir() {
            continue;
        }
        for seed in std::fs::read_dir(&target).expect("target") {
            let path = seed.expect("seed").path();
            let data = std::fs::read(&path).expect("read seed");
            body::open_and_read_all(&data);
            let _ = kestrel::weights::pytorch::fuzz_unpickle(&data);
            n += 1;
        }
    }
    assert!(n >= 15, "only {n} seeds found");
}

#[test]
fn crafted_seeds_are_read_as_intended() {
    let open = |rel: &str| kestrel::weights::open_bytes(std::fs::read(seeds().join(rel)).expect(rel));
    assert_eq!(open("safetensors/header_len_0x80.safetensors").expect("0x80").format(), "safetensors");
    assert_eq!(open("safetensors/kestrel_len80.kestrel").expect("kestrel 0x80").format(), "kestrel");
    let pth = open("pytorch/os_system_call.pth").expect("pth");
    assert_eq!(pth.metadata()["skipped_calls"], serde_json::json!(["os.system"]));
    for gguf in ["gguf/nan_rope_freq_base.gguf", "gguf/inf_rms_epsilon.gguf"] {
        let meta = open(gguf).expect(gguf).metadata();
        let bad =
            meta.as_object().expect("object").iter().find(|(_, v)| v.is_string() && ["NaN", "inf"].contains(&v.as_str().unwrap_or("")));
        assert!(bad.is_some(), "{gguf}: the non-finite value is not visible: {meta}");
    }
}
