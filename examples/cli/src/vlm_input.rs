//! `kestrel generate`'s inputs for vision-language models: the image (`--image` or
//! `--pixel-values`) encoded on the GPU, and the prompt (`--input-ids`, or `--prompt` in the
//! model's conversation) with the image's features in place of its placeholder.

use std::path::Path;

use kestrel::Tensor;
use kestrel_models::eve::EveModel;
use kestrel_models::eve::prompt::Piece;
use kestrel_models::llava::{ImageInput, LlavaModel};
use kestrel_models::llm::decoder::Segment;
use kestrel_models::npy::{read_npy_f32, read_npy_i64, read_npy_u32};
use kestrel_models::vision::{DecodeLimits, load_image};

/// The options of `kestrel generate` that describe the input.
pub struct InputArgs<'a> {
    /// `--image`.
    pub image: Option<&'a Path>,
    /// `--pixel-values`.
    pub pixel_values: Option<&'a Path>,
    /// `--image-size` (`HEIGHTxWIDTH`).
    pub image_size: Option<&'a str>,
    /// `--input-ids`.
    pub input_ids: Option<&'a Path>,
}

impl InputArgs<'_> {
    /// Whether an image was given.
    pub fn has_image(&self) -> bool {
        self.image.is_some() || self.pixel_values.is_some()
    }
}

type Error = Box<dyn std::error::Error>;

/// A prompt with the storage its segments borrow.
pub enum Prompt {
    /// Token ids; for LLaVA each run of the image token takes the next image's features.
    Ids(Vec<u32>, Vec<Tensor>),
    /// Eve's pieces (ids and image placeholders) and the image's tokens.
    Pieces(Vec<Piece>, Option<Tensor>),
}

impl Prompt {
    /// Positions taken by images.
    pub fn image_tokens(&self) -> usize {
        match self {
            Prompt::Ids(_, images) => images.iter().map(|t| t.shape()[0]).sum(),
            Prompt::Pieces(pieces, Some(t)) => pieces.iter().filter(|p| **p == Piece::Image).count() * t.shape()[0],
            Prompt::Pieces(_, None) => 0,
        }
    }
}

/// The `.npy` token ids at `path`: one non-empty row.
pub fn read_ids(path: &Path) -> Result<Vec<u32>, Error> {
    let (shape, ids) = read_npy_u32(path)?;
    check_row(path, &shape, ids.len())?;
    Ok(ids)
}

fn check_row(path: &Path, shape: &[usize], n: usize) -> Result<(), Error> {
    if n == 0 || shape.iter().filter(|&&d| d > 1).count() > 1 {
        return Err(format!("{}: token ids of shape {shape:?}; one non-empty row wanted", path.display()).into());
    }
    Ok(())
}

/// Pixel values `[tiles, 3, size, size]` f32 from `path`.
fn read_pixels(path: &Path, size: usize) -> Result<(usize, Vec<f32>), Error> {
    let (shape, pixels) = read_npy_f32(path)?;
    match shape[..] {
        [tiles, 3, h, w] if tiles > 0 && (h, w) == (size, size) => Ok((tiles, pixels)),
        _ => Err(format!("{}: pixel values of shape {shape:?}; [tiles, 3, {size}, {size}] wanted", path.display()).into()),
    }
}

/// `HEIGHTxWIDTH` as two positive numbers.
fn parse_size(text: &str) -> Result<(usize, usize), String> {
    let parsed = text.split_once('x').and_then(|(h, w)| Some((h.trim().parse().ok()?, w.trim().parse().ok()?)));
    match parsed {
        Some((h, w)) if h > 0 && w > 0 => Ok((h, w)),
        _ => Err(format!("--image-size `{text}`: HEIGHTxWIDTH wanted, e.g. 480x640")),
    }
}

/// LLaVA's image input from `args`, if an image was given.
fn llava_image(args: &InputArgs, model: &LlavaModel) -> Result<Option<ImageInput>, Error> {
    if let Some(path) = args.image {
        return Ok(Some(model.image_input(&load_image(path, &DecodeLimits::default())?)?));
    }
    let Some(path) = args.pixel_values else { return Ok(None) };
    let s = model.config().vision.image_size;
    let (tiles, pixels) = read_pixels(path, s)?;
    let size = match args.image_size {
        Some(text) => parse_size(text)?,
        None if tiles == 1 => (s, s),
        None => return Err("--pixel-values with several tiles (LLaVA-NeXT) needs --image-size HEIGHTxWIDTH".into()),
    };
    Ok(Some(model.image_input_from_pixels(pixels, tiles, size)?))
}

/// LLaVA's prompt: the encoded image and the ids (`--input-ids`, else `text` via
/// [`LlavaModel::encode_prompt`], or `ids` already made from a chat template).
pub fn llava_prompt(args: &InputArgs, model: &LlavaModel, text: &str, chat_ids: Option<Vec<u32>>) -> Result<Prompt, Error> {
    let images: Vec<Tensor> = match llava_image(args, model)? {
        Some(input) => vec![model.encode(&input)?],
        None => Vec::new(),
    };
    let ids = match (args.input_ids, chat_ids) {
        (Some(path), _) => read_ids(path)?,
        (None, Some(ids)) => ids,
        (None, None) => model.encode_prompt(&if images.is_empty() { text.to_string() } else { LlavaModel::prompt_text(text) })?,
    };
    Ok(Prompt::Ids(ids, images))
}

/// Eve's prompt: the image's 144 tokens and the pieces (`--input-ids` with −200 where the
/// image goes, else `text` in Eve's v1 conversation; without an image, `text` as it is).
pub fn eve_prompt(args: &InputArgs, model: &EveModel, text: &str) -> Result<Prompt, Error> {
    let image = if let Some(path) = args.image {
        Some(model.image_tokens_of(&model.pixels_from_file(path)?)?)
    } else if let Some(path) = args.pixel_values {
        let s = model.config().vision.image_size;
        let (tiles, pixels) = read_pixels(path, s)?;
        if tiles != 1 {
            return Err(format!("{}: Eve takes one image, {tiles} were given", path.display()).into());
        }
        Some(model.image_tokens(&Tensor::from_f32(model.context(), &[1, 3, s, s], &pixels)?)?)
    } else {
        None
    };
    let ids: Vec<i64> = match args.input_ids {
        Some(path) => {
            let (shape, ids) = read_npy_i64(path)?;
            check_row(path, &shape, ids.len())?;
            ids
        }
        None if image.is_some() => model.prompt_ids(text)?,
        None => {
            let tokenizer = model.tokenizer().ok_or("this Eve model has no tokenizer; give --input-ids")?;
            tokenizer.encode(text, true)?.into_iter().map(i64::from).collect()
        }
    };
    let pieces = EveModel::pieces(&ids, usize::from(image.is_some()))?;
    Ok(Prompt::Pieces(pieces, image))
}

/// The decoder segments of `prompt` (`llava` splits LLaVA's ids at its image token).
pub fn segments<'a>(prompt: &'a Prompt, llava: Option<&LlavaModel>) -> Result<Vec<Segment<'a>>, Error> {
    Ok(match (prompt, llava) {
        (Prompt::Ids(ids, images), Some(m)) => m.segments(ids, images)?,
        (Prompt::Ids(ids, _), None) => vec![Segment::Tokens(ids)],
        (Prompt::Pieces(pieces, image), _) => EveModel::segments(pieces, image.as_ref())?,
    })
}
