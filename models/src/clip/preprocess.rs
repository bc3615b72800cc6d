//! CLIP's image preprocessing as transformers' `CLIPImageProcessor` does it: the shortest side
//! resized to `size.shortest_edge` (Pillow's bicubic; the longer side `int(edge · long /
//! short)`), a centre crop of `crop_size` at offset `margin // 2`, `/ 255`, OpenAI's mean/std.
//! Read from `preprocessor_config.json` when the model directory has one, else the defaults for
//! the tower's image size. Built on [`crate::vision::preprocess()`].

use std::path::Path;

use serde_json::Value;

use crate::error::{ModelError, Result};
use crate::llm::config::opt_usize;
use crate::llm::load::read_json;
use crate::vision::{CropRounding, Interpolation, PreprocessConfig};

/// OpenAI CLIP's per-channel mean (transformers' `OPENAI_CLIP_MEAN`).
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];

/// OpenAI CLIP's per-channel standard deviation (transformers' `OPENAI_CLIP_STD`).
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

/// The transform for a tower of `image_size` pixels: shortest side and crop `image_size`,
/// bicubic, CLIP mean/std.
pub fn default_config(image_size: usize) -> PreprocessConfig {
    PreprocessConfig {
        crop_size: image_size,
        crop_pct: 1.0,
        interpolation: Interpolation::Bicubic,
        mean: CLIP_MEAN,
        std: CLIP_STD,
        crop_rounding: CropRounding::Floor,
    }
}

/// A square side from a `size`/`crop_size` entry: an integer, `{"shortest_edge": n}` or
/// `{"height": n, "width": n}`.
fn side(v: &Value, key: &str) -> Result<Option<usize>> {
    let err = |d: String| ModelError::Config(format!("preprocessor_config.json: `{key}` {d}"));
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(n @ Value::Number(_)) => n.as_u64().map(|n| Some(n as usize)).ok_or_else(|| err(format!("is {n}, not a size"))),
        Some(obj @ Value::Object(_)) => {
            if let Some(edge) = opt_usize(obj, "shortest_edge")? {
                return Ok(Some(edge));
            }
            match (opt_usize(obj, "height")?, opt_usize(obj, "width")?) {
                (Some(h), Some(w)) if h == w => Ok(Some(h)),
                (h, w) => Err(err(format!("is {obj}: only a shortest edge or a square ({h:?} x {w:?}) is supported"))),
            }
        }
        Some(other) => Err(err(format!("is {other}, not a size"))),
    }
}

/// Three finite numbers at `key`, if present.
fn triple(v: &Value, key: &str) -> Result<Option<[f32; 3]>> {
    let Some(arr) = v.get(key).filter(|a| !a.is_null()) else { return Ok(None) };
    let values: Option<Vec<f32>> = arr.as_array().map(|a| a.iter().filter_map(|x| x.as_f64().map(|x| x as f32)).collect());
    match values {
        Some(vals) if vals.len() == 3 && vals.iter().all(|x| x.is_finite()) => Ok(Some([vals[0], vals[1], vals[2]])),
        _ => Err(ModelError::Config(format!("preprocessor_config.json: `{key}` is {arr}, not three numbers"))),
    }
}

/// The transform of the model directory `dir` (its `preprocessor_config.json`, else
/// [`default_config`]); the crop must give the tower's `image_size`.
pub fn load_config(dir: &Path, image_size: usize) -> Result<PreprocessConfig> {
    let path = dir.join("preprocessor_config.json");
    if !path.is_file() {
        return Ok(default_config(image_size));
    }
    let v = read_json(&path)?;
    let cfg_err = |d: String| ModelError::Config(format!("{}: {d}", path.display()));
    for flag in ["do_resize", "do_center_crop", "do_rescale", "do_normalize"] {
        if v.get(flag).and_then(Value::as_bool) == Some(false) {
            return Err(cfg_err(format!("`{flag}` false is not supported")));
        }
    }
    let crop = side(&v, "crop_size")?.unwrap_or(image_size);
    let edge = side(&v, "size")?.unwrap_or(crop);
    if crop != image_size {
        return Err(cfg_err(format!("crop_size {crop} does not match the vision tower's image_size {image_size}")));
    }
    let interpolation = match opt_usize(&v, "resample")?.unwrap_or(3) {
        2 => Interpolation::Bilinear,
        3 => Interpolation::Bicubic,
        r => return Err(cfg_err(format!("resample {r} is not supported (2 bilinear, 3 bicubic)"))),
    };
    if edge == 0 {
        return Err(cfg_err("size 0".into()));
    }
    let cfg = PreprocessConfig {
        crop_pct: crop as f64 / edge as f64,
        interpolation,
        mean: triple(&v, "image_mean")?.unwrap_or(CLIP_MEAN),
        std: triple(&v, "image_std")?.unwrap_or(CLIP_STD),
        ..default_config(crop)
    };
    if cfg.resize_side()? != edge {
        return Err(cfg_err(format!("shortest edge {edge} with crop {crop} is not representable")));
    }
    Ok(cfg)
}
