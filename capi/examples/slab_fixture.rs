//! Writes the small SLAB-DeiT test checkpoint (`models/tests/fixtures/slab/slab_deit_test.pth`,
//! an architecture that is not built in) as a Kestrel file that records its configuration, so
//! that both `kestrel classify` and `kestrel_model_load` open it. Used by
//! `scripts/test-capi.sh`: `cargo run -p kestrel-capi --example slab_fixture -- OUT.kestrel`.

use std::path::Path;

use kestrel_models::kestrel::Quant;
use kestrel_models::slab::config::lookup;
use kestrel_models::slab::convert::convert_checkpoint;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args().nth(1).ok_or("usage: slab_fixture OUT.kestrel")?;
    let ckpt = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures/slab/slab_deit_test.pth");
    // The fixture's architecture (tools/slab_reference): SLAB-DeiT-T's blocks at dim 36,
    // depth 2, 48 px, patch 8, 10 classes.
    let mut cfg = lookup("slab_deit_tiny")?;
    cfg.arch = "slab_deit_test".into();
    (cfg.embed_dims, cfg.depths, cfg.img_size, cfg.patch_size, cfg.num_classes) = (vec![36], vec![2], 48, 8, 10);
    let src = kestrel_models::kestrel::weights::open(&ckpt)?;
    convert_checkpoint(src.as_ref(), &cfg, Quant::F32, Path::new(&out), |_, _| {})?;
    Ok(())
}
