//! Choosing the next token from the last position's logits.
//!
//! Order (as Hugging Face's logits processors): repetition penalty → temperature → top-k →
//! top-p → min-p → a draw from the renormalised distribution. Temperature 0 is greedy.
//!
//! What is read back from the GPU: greedy without a penalty runs argmax on the GPU and reads one
//! `u32`; top-k (k ≤ [`MAX_TOP_K`]) without a penalty selects on the GPU and reads `2k` values;
//! anything else (a penalty, or no top-k) reads the row. Both paths give the same token for the
//! same seed. Draws come from a SplitMix64 generator seeded by [`SamplerConfig::seed`], one draw
//! per sampled token, so the same seed gives the same text.

use std::collections::HashSet;

use kestrel::ops::reduce::MAX_TOP_K;

use super::decoder::Logits;
use crate::error::{ModelError, Result};

/// Sampling parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplerConfig {
    /// Softmax temperature; 0 picks the largest logit (greedy).
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens; 0 = all.
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p` (0 < p ≤ 1;
    /// 1 = all).
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one (0 ≤ p ≤ 1; 0 = none).
    pub min_p: f32,
    /// Divide positive (multiply negative) logits of recently seen tokens by this (> 0; 1 = off;
    /// CTRL / Hugging Face `repetition_penalty`).
    pub repeat_penalty: f32,
    /// How many of the most recent tokens (prompt included) the penalty looks at; 0 = all.
    pub repeat_last_n: usize,
    /// Seed of the draws.
    pub seed: u64,
}

impl Default for SamplerConfig {
    /// Greedy, no penalty, seed 0.
    fn default() -> Self {
        SamplerConfig { temperature: 0.0, top_k: 0, top_p: 1.0, min_p: 0.0, repeat_penalty: 1.0, repeat_last_n: 64, seed: 0 }
    }
}

impl SamplerConfig {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        let bad = |d: String| Err(ModelError::Input(d));
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad(format!("temperature {} must be finite and ≥ 0", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top-p {} must be in (0, 1]", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad(format!("min-p {} must be in [0, 1]", self.min_p));
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return bad(format!("repeat penalty {} must be finite and > 0", self.repeat_penalty));
        }
        Ok(())
    }

    /// Whether every step is the largest logit (no draw).
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): a small, fast, seedable generator.
#[derive(Clone, Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 random bits.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Picks tokens; remembers the recent ones for the repetition penalty.
#[derive(Clone, Debug)]
pub struct Sampler {
    config: SamplerConfig,
    rng: SplitMix64,
    recent: Vec<u32>,
}

impl Sampler {
    /// A sampler; an error when a parameter is out of range.
    pub fn new(config: SamplerConfig) -> Result<Sampler> {
        config.validate()?;
        Ok(Sampler { config, rng: SplitMix64(config.seed), recent: Vec::new() })
    }

    /// The parameters.
    pub fn config(&self) -> &SamplerConfig {
        &self.config
    }

    /// Records tokens of the sequence (prompt or generated) for the repetition penalty.
    pub fn observe(&mut self, ids: &[u32]) {
        self.recent.extend_from_slice(ids);
        let n = self.config.repeat_last_n;
        if n > 0 && self.recent.len() > n {
            self.recent.drain(..self.recent.len() - n);
        }
    }

    /// The next token from GPU logits (reading back as little as the parameters allow), which
    /// is then [observed](Self::observe).
    pub fn sample(&mut self, logits: &Logits) -> Result<u32> {
        let c = self.config;
        let penalty = c.repeat_penalty != 1.0 && !self.recent.is_empty();
        let id = if !penalty && c.is_greedy() {
            logits.argmax()?
        } else if !penalty && c.top_k > 0 && c.top_k < logits.vocab() && c.top_k <= MAX_TOP_K {
            let (values, ids) = logits.top_k(c.top_k)?;
            self.pick(values.into_iter().zip(ids).collect())?
        } else {
            self.pick_from_row(&logits.to_vec()?)?
        };
        self.observe(&[id]);
        Ok(id)
    }

    /// The next token from a whole row of logits on the CPU (not observed; see
    /// [`Sampler::sample`]).
    pub fn pick_from_row(&mut self, logits: &[f32]) -> Result<u32> {
        let mut cands: Vec<(f32, u32)> = logits.iter().zip(0u32..).map(|(&l, i)| (l, i)).collect();
        self.penalise(&mut cands);
        self.pick(cands)
    }

    /// Applies the repetition penalty to the candidates' logits.
    fn penalise(&self, cands: &mut [(f32, u32)]) {
        let p = self.config.repeat_penalty;
        if p == 1.0 {
            return;
        }
        let seen: HashSet<u32> = self.recent.iter().copied().collect();
        for (l, id) in cands.iter_mut() {
            if seen.contains(id) {
                *l = if *l > 0.0 { *l / p } else { *l * p };
            }
        }
    }

    /// Temperature, top-k, top-p, min-p and a draw over `(logit, id)` candidates.
    fn pick(&mut self, mut cands: Vec<(f32, u32)>) -> Result<u32> {
        let c = self.config;
        if cands.iter().any(|(l, _)| l.is_nan()) {
            return Err(ModelError::Input("the logits hold NaN".into()));
        }
        // Descending logits, ties by the lower id (as the GPU argmax/top-k).
        cands.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let Some(&(_, best)) = cands.first() else {
            return Err(ModelError::Input("no logits to sample from".into()));
        };
        if c.is_greedy() {
            return Ok(best);
        }
        if c.top_k > 0 {
            cands.truncate(c.top_k);
        }
        let max = f64::from(cands[0].0) / f64::from(c.temperature);
        let mut probs: Vec<f64> = cands.iter().map(|&(l, _)| (f64::from(l) / f64::from(c.temperature) - max).exp()).collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        let mut keep = probs.len();
        if c.top_p < 1.0 {
            let mut acc = 0.0;
            keep = probs
                .iter()
                .position(|&p| {
                    acc += p;
                    acc >= f64::from(c.top_p)
                })
                .map_or(keep, |i| i + 1);
        }
        if c.min_p > 0.0 {
            let floor = f64::from(c.min_p) * probs[0];
            keep = keep.min(probs.iter().take_while(|&&p| p >= floor).count().max(1));
        }
        let kept = &probs[..keep];
        let mut u = self.rng.next_f64() * kept.iter().sum::<f64>();
        for (i, &p) in kept.iter().enumerate() {
            if u < p {
                return Ok(cands[i].1);
            }
            u -= p;
        }
        Ok(cands[keep - 1].1)
    }
}
