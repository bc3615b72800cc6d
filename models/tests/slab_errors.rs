//! Bad checkpoints for the SLAB models: the wrong architecture, a missing tensor, a misshapen
//! tensor, a non-finite weight and a file that is no SLAB checkpoint at all each give a typed
//! error naming the file and tensor — never a panic.

use std::path::{Path, PathBuf};

use kestrel::weights::tensor_f32;
use kestrel_models::ModelError;
use kestrel_models::params::HostParams;
use kestrel_models::slab::config::lookup;
use kestrel_models::slab::fold::FoldMode;
use kestrel_models::slab::fold_checkpoint;
use kestrel_models::slab::infer::infer_config;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// The small SLAB-DeiT fixture checkpoint, with `edit` applied to each (name, shape, values).
fn edited(edit: impl Fn(&str, &mut Vec<usize>, &mut Vec<f32>) -> bool) -> HostParams {
    let src = kestrel::weights::open(&fixture("slab/slab_deit_test.pth")).unwrap();
    let mut out = HostParams::new("edited.pth");
    for info in src.tensors() {
        let mut shape = info.shape.clone();
        let mut values = tensor_f32(src.as_ref(), &info.name).unwrap();
        if edit(&info.name, &mut shape, &mut values) {
            out.insert(info.name.clone(), shape, values).unwrap();
        }
    }
    out
}

/// The config of the small SLAB-DeiT fixture (dim 36, 3 heads, depth 2, 48 px, patch 8).
fn small_deit() -> kestrel_models::slab::config::SlabConfig {
    let mut c = lookup("slab_deit_tiny").unwrap();
    c.embed_dims = vec![36];
    c.depths = vec![2];
    c.img_size = 48;
    c.patch_size = 8;
    c.num_classes = 10;
    c
}

fn checkpoint_error(r: Result<HostParams, ModelError>) -> String {
    match r {
        Err(e @ ModelError::Checkpoint { .. }) => e.to_string(),
        Err(other) => panic!("expected a checkpoint error, got {other}"),
        Ok(_) => panic!("expected a checkpoint error, got a model"),
    }
}

#[test]
fn the_fixture_itself_loads() {
    let p = edited(|_, _, _| true);
    fold_checkpoint(&p, &small_deit(), FoldMode::Fold).unwrap();
}

#[test]
fn wrong_architecture_is_named() {
    let src = kestrel::weights::open(&fixture("slab/slab_deit_test.pth")).unwrap();
    let msg = checkpoint_error(fold_checkpoint(src.as_ref(), &lookup("slab_swin_tiny").unwrap(), FoldMode::Fold));
    assert!(msg.contains("slab_deit_test.pth") && msg.contains("missing tensor"), "{msg}");
    let msg = checkpoint_error(fold_checkpoint(src.as_ref(), &lookup("slab_deit_tiny").unwrap(), FoldMode::Fold));
    assert!(msg.contains("has shape"), "{msg}");
}

#[test]
fn missing_tensor_is_named() {
    let p = edited(|name, _, _| name != "blocks.1.mlp.fc1.weight");
    let msg = checkpoint_error(fold_checkpoint(&p, &small_deit(), FoldMode::Fold));
    assert!(msg.contains("blocks.1.mlp.fc1.weight") && msg.contains("missing"), "{msg}");
}

#[test]
fn misshapen_tensor_is_named() {
    let p = edited(|name, shape, values| {
        if name == "blocks.0.attn.proj.weight" {
            *shape = vec![36, 35];
            values.truncate(36 * 35);
        }
        true
    });
    let msg = checkpoint_error(fold_checkpoint(&p, &small_deit(), FoldMode::Fold));
    assert!(msg.contains("blocks.0.attn.proj.weight") && msg.contains("[36, 35]"), "{msg}");
}

#[test]
fn non_finite_weight_is_named() {
    let p = edited(|name, _, values| {
        if name == "head.weight" {
            values[3] = f32::NAN;
        }
        true
    });
    let msg = checkpoint_error(fold_checkpoint(&p, &small_deit(), FoldMode::Fold));
    assert!(msg.contains("head.weight") && msg.contains("non-finite"), "{msg}");
}

#[test]
fn a_non_slab_file_is_not_inferred() {
    let src = kestrel::weights::open(&fixture("spm_tiny.gguf")).unwrap();
    match infer_config(src.as_ref()) {
        Err(ModelError::Checkpoint { detail, .. }) => assert!(detail.contains("not a recognised"), "{detail}"),
        other => panic!("expected a checkpoint error, got {:?}", other.map(|c| c.arch)),
    }
}

#[test]
fn shape_mismatch_of_a_small_fixture_is_not_inferred_as_full_size() {
    let src = kestrel::weights::open(&fixture("slab/slab_deit_test.pth")).unwrap();
    match infer_config(src.as_ref()) {
        Err(ModelError::Checkpoint { detail, .. }) => assert!(detail.contains("matches no built-in"), "{detail}"),
        other => panic!("expected a checkpoint error, got {:?}", other.map(|c| c.arch)),
    }
}
