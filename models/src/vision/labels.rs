//! The 1000 ImageNet-1k class names, in the index order of every ImageNet-1k classifier.
//!
//! `models/data/imagenet1k_labels.txt` holds one WordNet lemma list per line (e.g.
//! `tench, Tinca tinca`): the line for each synset of timm's `imagenet_synsets.txt`, taken from
//! its `imagenet_synset_to_lemma.txt` — the strings timm's `ImageNetInfo.index_to_description`
//! returns.

use std::sync::OnceLock;

/// Number of ImageNet-1k classes.
pub const IMAGENET_NUM_CLASSES: usize = 1000;

const LABELS: &str = include_str!("../../data/imagenet1k_labels.txt");

fn labels() -> &'static [&'static str] {
    static TABLE: OnceLock<Vec<&'static str>> = OnceLock::new();
    TABLE.get_or_init(|| LABELS.lines().collect())
}

/// The name of ImageNet-1k class `index` (0..1000), e.g. `imagenet_label(0)` is
/// `Some("tench, Tinca tinca")`; `None` past the last class.
pub fn imagenet_label(index: usize) -> Option<&'static str> {
    labels().get(index).copied()
}

/// The first (most common) name of class `index`, e.g. `tench`; names can repeat
/// (`crane` is both 134, the bird, and 517, the machine).
pub fn imagenet_short_label(index: usize) -> Option<&'static str> {
    imagenet_label(index).map(|l| l.split(',').next().unwrap_or(l).trim())
}
