//! Every WGSL file parses, and every kernel variant an op can select preprocesses and
//! validates with naga (with f16 and subgroup capabilities allowed).

use kestrel::SubgroupLayoutTest;
use kestrel::ops::all_variants;
use kestrel::shader::{Defines, FAMILIES, preprocess, source, validate};

#[test]
fn every_variant_validates() {
    let variants = all_variants();
    assert!(!variants.is_empty());
    for key in &variants {
        let src = source(key.family).unwrap();
        let wgsl = preprocess(key.family, &src, &key.defines).unwrap();
        if let Err(e) = validate(key.family, &key.defines, &wgsl) {
            panic!("{e}");
        }
        assert!(wgsl.contains(&format!("fn {}(", key.entry)), "{}: entry {} missing", key.family, key.entry);
        assert!(!wgsl.contains("enable subgroups"), "{}: WGSL must not say `enable subgroups;`", key.family);
    }
}

/// The defines of the imitated subgroup layouts (`SubgroupLayoutTest`) validate wherever they
/// change a variant's source; they change every subgroup reduction's.
#[test]
fn subgroup_layout_defines_validate() {
    for test in [SubgroupLayoutTest::PermutedLocalIndex, SubgroupLayoutTest::Untiled] {
        let mut changed = std::collections::BTreeSet::new();
        for key in &all_variants() {
            let src = source(key.family).unwrap();
            let plain = preprocess(key.family, &src, &key.defines).unwrap();
            let defines = key.defines.clone().flag(test.define(), true);
            let wgsl = preprocess(key.family, &src, &defines).unwrap();
            if wgsl == plain {
                continue;
            }
            if let Err(e) = validate(key.family, &defines, &wgsl) {
                panic!("{e}");
            }
            changed.insert((key.family, key.entry));
        }
        for entry in [
            ("gemv", "gemv"),
            ("qmatmul", "qgemv"),
            ("norm", "layer_norm"),
            ("norm", "rms_norm"),
            ("softmax", "softmax"),
            ("reduce", "argmax"),
            ("reduce", "top_k"),
            ("attention", "attn_decode"),
        ] {
            assert!(changed.contains(&entry), "{test:?} does not reach {entry:?}");
        }
    }
}

#[test]
fn every_family_is_used_by_some_variant() {
    let variants = all_variants();
    for (family, _) in FAMILIES {
        assert!(variants.iter().any(|k| k.family == *family), "family {family} has no variant");
    }
    let _ = Defines::new();
}
