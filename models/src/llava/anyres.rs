//! LLaVA-NeXT's "anyres" input, as transformers' `LlavaNextImageProcessor` and
//! `LlavaNextModel.pack_image_features` compute it: the best of the candidate resolutions,
//! the image resized into it keeping its aspect and padded with zeros, cut into tower-sized
//! tiles behind a squashed copy of the whole image; and the order in which the projected tile
//! features reach the language model (the padding's features dropped, each row ended by
//! `image_newline`).

use crate::error::{ModelError, Result};
use crate::vision::preprocess::{PreprocessConfig, normalize, resize_and_crop};
use crate::vision::resample::{Interpolation, resize_window};
use crate::vision::rgb::Rgb8Image;

/// transformers' `select_best_resolution`: the candidate `(height, width)` that keeps the most
/// of the image's pixels when it is scaled to fit, then the one that wastes the fewest.
pub fn best_resolution(height: usize, width: usize, candidates: &[(usize, usize)]) -> Option<(usize, usize)> {
    let (oh, ow) = (height as f64, width as f64);
    let mut best = None;
    let (mut most_kept, mut least_wasted) = (0usize, usize::MAX);
    for &(h, w) in candidates {
        let scale = (w as f64 / ow).min(h as f64 / oh);
        let (dw, dh) = ((ow * scale) as usize, (oh * scale) as usize);
        let kept = (dw * dh).min(width * height);
        let wasted = (w * h).saturating_sub(kept);
        if kept > most_kept || (kept == most_kept && wasted < least_wasted) {
            (most_kept, least_wasted) = (kept, wasted);
            best = Some((h, w));
        }
    }
    best
}

/// transformers' `get_patch_output_size`: the size `(height, width)` of the image scaled to
/// fit `target` with its aspect kept (the fitted side rounded up).
fn fitted_size(height: usize, width: usize, target: (usize, usize)) -> (usize, usize) {
    let (th, tw) = target;
    let (sw, sh) = (tw as f64 / width as f64, th as f64 / height as f64);
    if sw < sh {
        ((height as f64 * sw).ceil().min(th as f64) as usize, tw)
    } else {
        (th, (width as f64 * sh).ceil().min(tw as f64) as usize)
    }
}

/// `image` resized to `width` × `height` with Pillow's `filter`.
fn resized(image: &Rgb8Image, width: usize, height: usize, filter: Interpolation) -> Result<Rgb8Image> {
    if width == 0 || height == 0 {
        return Err(ModelError::Input(format!("image of {}x{} pixels resizes to {width}x{height}", image.width(), image.height())));
    }
    Rgb8Image::new(width, height, resize_window(image, width, height, 0..width, 0..height, filter))
}

/// The tiles of an image, preprocessed: `[tiles, 3, size, size]` f32 values, the whole image
/// first, then the grid row by row.
#[derive(Clone, Debug, PartialEq)]
pub struct Tiles {
    /// The pixel values.
    pub pixels: Vec<f32>,
    /// Number of tiles (1 + grid rows · grid columns).
    pub count: usize,
    /// The grid `(rows, columns)` of tiles after the first.
    pub grid: (usize, usize),
    /// The original image's `(height, width)`.
    pub image_size: (usize, usize),
}

/// `LlavaNextImageProcessor` on `image`: `config` is the tower's CLIP transform (its crop is
/// the tile size), `candidates` the grid pinpoints.
pub fn tiles(image: &Rgb8Image, config: &PreprocessConfig, candidates: &[(usize, usize)]) -> Result<Tiles> {
    let s = config.crop_size;
    let (h, w) = (image.height(), image.width());
    let best = best_resolution(h, w, candidates).ok_or_else(|| ModelError::Config("no image_grid_pinpoints".into()))?;
    if best.0 % s != 0 || best.1 % s != 0 {
        return Err(ModelError::Config(format!("grid pinpoint {best:?} is not a multiple of the tile size {s}")));
    }
    let (fh, fw) = fitted_size(h, w, best);
    let fitted = resized(image, fw, fh, config.interpolation)?;
    // Centred on a black canvas of the best resolution (the odd pixel to the right / bottom).
    let (top, left) = ((best.0 - fh) / 2, (best.1 - fw) / 2);
    let mut canvas = vec![0u8; best.0 * best.1 * 3];
    for (y, row) in fitted.as_bytes().chunks_exact(fw * 3).enumerate() {
        let at = ((top + y) * best.1 + left) * 3;
        canvas[at..at + fw * 3].copy_from_slice(row);
    }
    let grid = (best.0 / s, best.1 / s);
    let mut parts = vec![resized(image, s, s, config.interpolation)?];
    for gy in 0..grid.0 {
        for gx in 0..grid.1 {
            let mut tile = Vec::with_capacity(s * s * 3);
            for y in gy * s..(gy + 1) * s {
                let at = (y * best.1 + gx * s) * 3;
                tile.extend_from_slice(&canvas[at..at + s * 3]);
            }
            parts.push(Rgb8Image::new(s, s, tile)?);
        }
    }
    let mut pixels = Vec::with_capacity(parts.len() * 3 * s * s);
    for part in &parts {
        pixels.extend(normalize(&resize_and_crop(part, config)?, config.mean, config.std).data);
    }
    Ok(Tiles { pixels, count: parts.len(), grid, image_size: (h, w) })
}

/// Which rows of the projected tile features `[tiles · g², hidden]` (index `tiles · g²`: the
/// `image_newline` row) make up the image's features, in order: the whole image's `g²`, then
/// the grid's feature map (`grid.0 · g` × `grid.1 · g`) with the padding's rows or columns
/// dropped, each remaining row followed by the newline. `g` is the tower's patch grid side.
pub fn packed_rows(grid: (usize, usize), g: usize, image_size: (usize, usize)) -> Vec<u32> {
    let (rows, cols) = (grid.0 * g, grid.1 * g);
    let (oh, ow) = (image_size.0 as f64, image_size.1 as f64);
    // transformers' `unpad_image`: `int(round(x, 7))`.
    let round7 = |x: f64| ((x * 1e7).round_ties_even() / 1e7) as usize;
    let (mut r0, mut r1, mut c0, mut c1) = (0, rows, 0, cols);
    if ow / oh > cols as f64 / rows as f64 {
        let pad = rows.saturating_sub(round7(oh * (cols as f64 / ow))) / 2;
        (r0, r1) = (pad, rows - pad);
    } else {
        let pad = cols.saturating_sub(round7(ow * (rows as f64 / oh))) / 2;
        (c0, c1) = (pad, cols - pad);
    }
    let tiles = 1 + grid.0 * grid.1;
    let newline = (tiles * g * g) as u32;
    let mut ids: Vec<u32> = (0..(g * g) as u32).collect();
    for r in r0..r1 {
        for c in c0..c1 {
            let tile = 1 + (r / g) * grid.1 + c / g;
            ids.push((tile * g * g + (r % g) * g + c % g) as u32);
        }
        ids.push(newline);
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_resolution_prefers_kept_pixels_then_less_waste() {
        let grid = [(336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008)];
        // Values from transformers' `select_best_resolution` on the same inputs.
        assert_eq!(best_resolution(300, 451, &grid), Some((336, 672)));
        assert_eq!(best_resolution(800, 900, &grid), Some((672, 672)));
        assert_eq!(best_resolution(100, 1000, &grid), Some((336, 1008)));
        assert_eq!(best_resolution(1000, 100, &grid), Some((1008, 336)));
    }

    #[test]
    fn packed_rows_drop_the_padding_and_end_rows_with_the_newline() {
        // A wide image on a 2x2 grid of 2x2-feature tiles: the map is 4x4, the image fills
        // half its height, so one row of padding is dropped at the top and the bottom.
        let ids = packed_rows((2, 2), 2, (50, 100));
        let newline = 5 * 4;
        assert_eq!(&ids[..4], &[0, 1, 2, 3]);
        assert_eq!(ids.len(), 4 + 2 * (4 + 1));
        // Map row 1: tile 1 (row 1 of it), tile 2 (row 1 of it).
        assert_eq!(&ids[4..9], &[4 + 2, 4 + 3, 8 + 2, 8 + 3, newline]);
        assert_eq!(&ids[9..14], &[12, 13, 16, 17, newline]);
    }
}
