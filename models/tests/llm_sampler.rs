//! The sampler's CPU path: each filter on hand-made logits (no GPU).

use kestrel_models::llm::sampler::{Sampler, SamplerConfig};

/// Logits whose softmax is ≈ [0.09, 0.24, 0.03, 0.64] (ids 3, 1, 0, 2 from most to least likely).
const ROW: [f32; 4] = [0.0, 1.0, -1.0, 2.0];
/// The most likely id.
const BEST: u32 = 3;

fn draws(config: SamplerConfig, n: usize) -> Vec<u32> {
    let mut s = Sampler::new(config).expect("sampler");
    (0..n).map(|_| s.pick_from_row(&ROW).expect("pick")).collect()
}

fn sampling(seed: u64) -> SamplerConfig {
    SamplerConfig { temperature: 1.0, seed, ..SamplerConfig::default() }
}

#[test]
fn greedy_and_degenerate_filters_pick_the_largest_logit() {
    assert_eq!(draws(SamplerConfig::default(), 5), vec![BEST; 5]);
    assert_eq!(draws(SamplerConfig { top_k: 1, ..sampling(1) }, 20), vec![BEST; 20]);
    assert_eq!(draws(SamplerConfig { min_p: 1.0, ..sampling(2) }, 20), vec![BEST; 20]);
    assert_eq!(draws(SamplerConfig { top_p: 0.1, ..sampling(3) }, 20), vec![BEST; 20]);
}

#[test]
fn filters_keep_only_their_candidates() {
    let top2 = draws(SamplerConfig { top_k: 2, ..sampling(4) }, 200);
    assert!(top2.iter().all(|&i| i == 3 || i == 1) && top2.contains(&1), "top-k 2: {top2:?}");
    // min-p 0.3 keeps ids with p ≥ 0.3 · 0.64 = 0.19: ids 3 and 1 (0.24).
    let minp = draws(SamplerConfig { min_p: 0.3, ..sampling(5) }, 200);
    assert!(minp.iter().all(|&i| i == 3 || i == 1) && minp.contains(&1), "min-p: {minp:?}");
    // top-p 0.8: 0.64 + 0.24 reaches it, so ids 3 and 1.
    let topp = draws(SamplerConfig { top_p: 0.8, ..sampling(6) }, 200);
    assert!(topp.iter().all(|&i| i == 3 || i == 1) && topp.contains(&1), "top-p: {topp:?}");
    let all = draws(sampling(7), 400);
    assert!([0, 1, 2, 3].iter().all(|i| all.contains(i)), "temperature 1 reaches every id: {all:?}");
}

#[test]
fn repetition_penalty_demotes_seen_tokens() {
    let mut s = Sampler::new(SamplerConfig { repeat_penalty: 4.0, ..SamplerConfig::default() }).expect("sampler");
    s.observe(&[3]);
    // 2.0 / 4 = 0.5 < 1.0: id 1 is now the largest.
    assert_eq!(s.pick_from_row(&[0.0, 1.0, -1.0, 2.0]).expect("pick"), 1);
    // Negative logits are multiplied: -1 · 4 stays the smallest.
    s.observe(&[2]);
    assert_eq!(s.pick_from_row(&[0.0, -0.5, -1.0, -0.1]).expect("pick"), 0);
}

#[test]
fn same_seed_same_draws() {
    assert_eq!(draws(sampling(9), 50), draws(sampling(9), 50));
    assert_ne!(draws(sampling(9), 50), draws(sampling(10), 50));
}

#[test]
fn nan_logits_are_an_error() {
    let mut s = Sampler::new(sampling(0)).expect("sampler");
    assert!(s.pick_from_row(&[0.0, f32::NAN]).is_err());
}
