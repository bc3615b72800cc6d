//! Image classification with a SLAB model: one call from a normalised input to logits, and the
//! softmax top-k of the logits.

use kestrel::{Recorder, Tensor};

use crate::error::{ModelError, Result};
use crate::slab::SlabModel;

/// One ranked class.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Ranked {
    /// Class index.
    pub index: usize,
    /// Softmax probability.
    pub prob: f32,
}

impl SlabModel {
    /// Uploads `input` (`[1, 3, S, S]` row-major f32, already normalised), runs the forward pass
    /// in one submission and reads back the logits.
    pub fn logits(&self, input: &[f32]) -> Result<Vec<f32>> {
        let c = self.config();
        let shape = [1, c.in_chans, c.img_size, c.img_size];
        if input.len() != shape.iter().product::<usize>() {
            return Err(ModelError::Input(format!(
                "{} needs {shape:?} = {} values, got {}",
                c.arch,
                shape.iter().product::<usize>(),
                input.len()
            )));
        }
        let ctx = self.context();
        let x = Tensor::from_f32(ctx, &shape, input)?;
        let mut rec = Recorder::new(ctx);
        let logits = self.forward(&mut rec, &x)?;
        rec.submit()?;
        Ok(logits.to_vec_f32()?)
    }
}

/// The `k` most probable classes of `logits` under a softmax, most probable first (ties by
/// index).
pub fn top_k(logits: &[f32], k: usize) -> Vec<Ranked> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&v| f64::from(v - max).exp()).sum();
    let mut ranked: Vec<Ranked> =
        logits.iter().enumerate().map(|(index, &v)| Ranked { index, prob: (f64::from(v - max).exp() / sum) as f32 }).collect();
    ranked.sort_by(|a, b| b.prob.total_cmp(&a.prob).then(a.index.cmp(&b.index)));
    ranked.truncate(k);
    ranked
}
