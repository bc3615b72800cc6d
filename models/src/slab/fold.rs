//! Load-time folding of every RepBN of a SLAB checkpoint into its neighbouring layer, giving
//! [`HostParams`] with the official names and no normalisation left. With
//! [`FoldMode::Keep`] the affines are kept as `{norm}.scale` / `{norm}.shift` tensors instead
//! (the models then run them as a separate op) — the unfolded graph the folded one is checked
//! against.

use kestrel::weights::WeightSource;
use kestrel::weights::fold::{ChannelAffine, fold_into_following_linear, fold_into_preceding};

use crate::error::Result;
use crate::params::{HostParams, read_checked};
use crate::slab::repbn::read_repbn;

/// Whether normalisations are folded away or kept as separate ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FoldMode {
    /// Fold every RepBN into a neighbouring linear or conv (the inference graph).
    Fold,
    /// Keep each RepBN as a per-channel affine op (for checking the fold).
    Keep,
}

/// Builds folded parameters from a checkpoint.
pub struct Folder<'a> {
    src: &'a dyn WeightSource,
    out: HostParams,
    mode: FoldMode,
}

impl<'a> Folder<'a> {
    /// Starts reading `src`.
    pub fn new(src: &'a dyn WeightSource, mode: FoldMode) -> Folder<'a> {
        Folder { src, out: HostParams::derived_from(src), mode }
    }

    /// The finished parameters.
    pub fn finish(self) -> HostParams {
        self.out
    }

    /// Reads `name` (checking `shape`) and stores it unchanged under the same name.
    pub fn copy(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let data = read_checked(self.src, name, shape)?;
        self.out.insert(name, shape.to_vec(), data.clone())?;
        Ok(data)
    }

    fn read(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        read_checked(self.src, name, shape)
    }

    fn read_opt(&self, name: &str, shape: &[usize]) -> Result<Option<Vec<f32>>> {
        if self.src.info(name).is_some() { self.read(name, shape).map(Some) } else { Ok(None) }
    }

    fn keep_affine(&mut self, norm: &str, a: &ChannelAffine) -> Result<()> {
        let n = a.channels();
        self.out.insert(format!("{norm}.scale"), vec![n], a.scale.iter().map(|&v| v as f32).collect())?;
        self.out.insert(format!("{norm}.shift"), vec![n], a.shift.iter().map(|&v| v as f32).collect())
    }

    /// The RepBN at `norm` (over `channels`) feeds the linear layers `linears` (each
    /// `(prefix, out_features)`, `in_features = channels`, optional bias): folded into all of them.
    pub fn norm_into_linears(&mut self, norm: &str, channels: usize, linears: &[(&str, usize)]) -> Result<()> {
        let shapes: Vec<[usize; 2]> = linears.iter().map(|&(_, out)| [out, channels]).collect();
        let layers: Vec<(&str, &[usize])> = linears.iter().zip(&shapes).map(|(&(prefix, _), s)| (prefix, &s[..])).collect();
        self.norm_into_layers(norm, channels, &layers)
    }

    /// The RepBN at `norm` (over `channels`) feeds the layers `layers` (each `(prefix, weight
    /// shape)`: a linear `[out, channels]` or a conv without padding `[out, channels, kh, kw]`,
    /// optional bias): folded into all of them.
    pub fn norm_into_layers(&mut self, norm: &str, channels: usize, layers: &[(&str, &[usize])]) -> Result<()> {
        let affine = read_repbn(self.src, norm, channels)?;
        if self.mode == FoldMode::Keep {
            self.keep_affine(norm, &affine)?;
        }
        for &(prefix, wshape) in layers {
            let out = wshape[0];
            let wname = format!("{prefix}.weight");
            let w = self.read(&wname, wshape)?;
            let b = self.read_opt(&format!("{prefix}.bias"), &[out])?;
            let (w, b) = match self.mode {
                FoldMode::Fold => {
                    let f = fold_into_following_linear(&affine, &w, b.as_deref(), out)?;
                    (f.weight, Some(f.bias))
                }
                FoldMode::Keep => (w, b),
            };
            self.out.insert(wname, wshape.to_vec(), w)?;
            if let Some(b) = b {
                self.out.insert(format!("{prefix}.bias"), vec![out], b)?;
            }
        }
        Ok(())
    }

    /// The RepBN at `norm` follows the conv `conv` (weight `wshape`, `[Cout, …]`, bias
    /// optional): folded into the conv's output channels.
    pub fn norm_after_conv(&mut self, conv: &str, wshape: &[usize], norm: &str) -> Result<()> {
        let cout = wshape[0];
        let affine = read_repbn(self.src, norm, cout)?;
        let wname = format!("{conv}.weight");
        let w = self.read(&wname, wshape)?;
        let b = self.read_opt(&format!("{conv}.bias"), &[cout])?;
        let (w, b) = match self.mode {
            FoldMode::Fold => {
                let f = fold_into_preceding(&affine, &w, b.as_deref())?;
                (f.weight, f.bias)
            }
            FoldMode::Keep => {
                self.keep_affine(norm, &affine)?;
                (w, b.unwrap_or_else(|| vec![0.0; cout]))
            }
        };
        self.out.insert(wname, wshape.to_vec(), w)?;
        self.out.insert(format!("{conv}.bias"), vec![cout], b)
    }
}
