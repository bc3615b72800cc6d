//! The aggregation spec string of Free Video-LLM (`prepare_visual_aggregation`), e.g. the
//! default `slow_3frms_spatial_1d_max_pool_roi8-middle_5frms_spatial_1d_max_pool_24x12-fast_50frms_4x4`.
//!
//! The official regular expression is
//! `^slow_(\d+)frms_(\w+)_roi(\d+)-middle_(\d+)frms_(\w+)_(\d+)x(\d+)-fast_(\d+)frms_(\d+)x(\d+)$`;
//! of its aggregations only `spatial_1d_max_pool` is implemented here (slow and middle), and
//! the middle path's output size (`24x12`) is parsed but unused, as in the official code.

use std::fmt;

use crate::error::{ModelError, Result};

/// The spec the official 7B configuration runs.
pub const DEFAULT_SPEC: &str = "slow_3frms_spatial_1d_max_pool_roi8-middle_5frms_spatial_1d_max_pool_24x12-fast_50frms_4x4";

/// A parsed aggregation spec.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Spec {
    /// Text-guided frames of the slow path (0: no slow path).
    pub slow_frames: usize,
    /// `roiD`: the RoI keeps the ratio `D / 10` of the pooled grid; cropping happens iff `D < 10`.
    pub roi_tenths: usize,
    /// Evenly spaced frames of the middle path (0: no middle path).
    pub middle_frames: usize,
    /// The middle path's `HxW` (parsed, unused by the official code).
    pub middle_size: (usize, usize),
    /// Frames of the fast path (all sampled frames when at least their count).
    pub fast_frames: usize,
    /// The fast path's adaptive average pooling output `(rows, columns)`.
    pub fast_size: (usize, usize),
}

impl Default for Spec {
    fn default() -> Spec {
        Spec { slow_frames: 3, roi_tenths: 8, middle_frames: 5, middle_size: (24, 12), fast_frames: 50, fast_size: (4, 4) }
    }
}

impl fmt::Display for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "slow_{}frms_spatial_1d_max_pool_roi{}-middle_{}frms_spatial_1d_max_pool_{}x{}-fast_{}frms_{}x{}",
            self.slow_frames,
            self.roi_tenths,
            self.middle_frames,
            self.middle_size.0,
            self.middle_size.1,
            self.fast_frames,
            self.fast_size.0,
            self.fast_size.1
        )
    }
}

/// `\d+` at the start of `s`: the number and the rest.
fn digits<'a>(s: &'a str, what: &str) -> Result<(usize, &'a str)> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if end == 0 {
        return Err(ModelError::Input(format!("spec: expected the number of {what} at {s:?}")));
    }
    let n = s[..end].parse().map_err(|_| ModelError::Input(format!("spec: {what} {} is too large", &s[..end])))?;
    Ok((n, &s[end..]))
}

/// `s` starting with `prefix`: the rest.
fn expect<'a>(s: &'a str, prefix: &str) -> Result<&'a str> {
    s.strip_prefix(prefix).ok_or_else(|| ModelError::Input(format!("spec: expected {prefix:?} at {s:?}")))
}

/// `NxM`.
fn size<'a>(s: &'a str, what: &str) -> Result<((usize, usize), &'a str)> {
    let (a, rest) = digits(s, what)?;
    let (b, rest) = digits(expect(rest, "x")?, what)?;
    Ok(((a, b), rest))
}

/// The aggregation of a path: only `spatial_1d_max_pool` is implemented.
fn aggregation<'a>(s: &'a str, path: &str, terminator: &str) -> Result<&'a str> {
    const AGG: &str = "spatial_1d_max_pool";
    let rest = s.strip_prefix(AGG).filter(|r| r.starts_with(terminator)).ok_or_else(|| {
        let name = s.split(terminator).next().unwrap_or(s);
        ModelError::Input(format!("spec: the {path} path's aggregation {name:?} is not supported (only {AGG})"))
    })?;
    Ok(rest)
}

impl Spec {
    /// Parses a spec string; anything the official regular expression rejects, or an
    /// aggregation other than `spatial_1d_max_pool`, a zero-sized fast pooling or a RoI ratio
    /// of zero, is an [`ModelError::Input`].
    pub fn parse(s: &str) -> Result<Spec> {
        let rest = expect(s, "slow_")?;
        let (slow_frames, rest) = digits(rest, "slow frames")?;
        let rest = aggregation(expect(rest, "frms_")?, "slow", "_roi")?;
        let (roi_tenths, rest) = digits(expect(rest, "_roi")?, "RoI tenths")?;
        let rest = expect(rest, "-middle_")?;
        let (middle_frames, rest) = digits(rest, "middle frames")?;
        let rest = aggregation(expect(rest, "frms_")?, "middle", "_")?;
        let (middle_size, rest) = size(expect(rest, "_")?, "middle size")?;
        let rest = expect(rest, "-fast_")?;
        let (fast_frames, rest) = digits(rest, "fast frames")?;
        let (fast_size, rest) = size(expect(rest, "frms_")?, "fast size")?;
        if !rest.is_empty() {
            return Err(ModelError::Input(format!("spec: unexpected {rest:?} at the end")));
        }
        if roi_tenths == 0 {
            return Err(ModelError::Input("spec: roi0 keeps no token".into()));
        }
        if fast_frames > 0 && (fast_size.0 == 0 || fast_size.1 == 0) {
            return Err(ModelError::Input(format!("spec: fast pooling to {}x{}", fast_size.0, fast_size.1)));
        }
        Ok(Spec { slow_frames, roi_tenths, middle_frames, middle_size, fast_frames, fast_size })
    }

    /// Whether slow and middle frames are cropped (`roiD` with `D < 10`).
    pub fn crops(&self) -> bool {
        self.roi_tenths < 10
    }

    /// The RoI ratio `D / 10` (f64, as Python's `int(D) / 10.0`).
    pub fn roi_ratio(&self) -> f64 {
        self.roi_tenths as f64 / 10.0
    }
}
