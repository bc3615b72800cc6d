//! Decoding a video file with FFmpeg (ffmpeg-next) into 8-bit RGB frames.
//!
//! The frame count is that of the stream's packets (one per coded frame), counted by demuxing
//! the whole file without decoding; container headers are not trusted (their counts can be
//! missing or wrong). The same pass records each packet's timestamp and keyframe flag: frame
//! `k` is the one with the `k`-th smallest timestamp. The frames asked for are then decoded by
//! seeking to the keyframe at or before each (when one lies past the frames already decoded),
//! decoding forward and picking frames by timestamp; only those are converted to RGB. Streams
//! without timestamps, or where a seek does not land where it should, are decoded in one
//! forward pass instead (stopping after the last frame asked). Colour conversion is swscale's
//! YUV → RGB with the stream's tagged matrix and range, BT.601 limited range when untagged (what
//! FFmpeg, and so decord, the official reader, do).

use std::path::{Path, PathBuf};

use ffmpeg::format::Pixel;
use ffmpeg::media::Type;
use ffmpeg::software::scaling;
use ffmpeg::util::color;
use ffmpeg_next as ffmpeg;

use super::error::VideoError;
use crate::vision::Rgb8Image;

/// Facts about a video stream.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct VideoInfo {
    /// Frames in the stream (its packets).
    pub n_frames: usize,
    /// Average frame rate (frames per second; 0 when the container gives none).
    pub fps: f64,
    /// Frame width in pixels.
    pub width: usize,
    /// Frame height in pixels.
    pub height: usize,
}

/// Decoded frames with the stream's facts.
#[derive(Clone, Debug)]
pub struct DecodedVideo {
    /// The stream's facts.
    pub info: VideoInfo,
    /// The frame indices asked for, in the order asked (repeats allowed).
    pub indices: Vec<usize>,
    /// The frames, one per entry of `indices`.
    pub frames: Vec<Rgb8Image>,
    /// Seeks made to reach them (0: decoded forward from the start).
    pub seeks: usize,
}

fn open(path: &Path) -> Result<(ffmpeg::format::context::Input, usize), VideoError> {
    let err = |detail: String| VideoError::Open { path: path.to_path_buf(), detail };
    ffmpeg::init().map_err(|e| err(e.to_string()))?;
    // FFmpeg's own log would print every problem to stderr; the errors returned say it.
    ffmpeg::util::log::set_level(ffmpeg::util::log::Level::Fatal);
    if !path.is_file() {
        return Err(err("no such file".into()));
    }
    let input = ffmpeg::format::input(path).map_err(|e| err(e.to_string()))?;
    let stream = input.streams().best(Type::Video).ok_or_else(|| VideoError::NoVideoStream { path: path.to_path_buf() })?;
    let index = stream.index();
    Ok((input, index))
}

/// Counts the video stream's frames (its packets) and reads its size and rate, without
/// decoding.
pub fn probe(path: &Path) -> Result<VideoInfo, VideoError> {
    Ok(scan(path)?.0)
}

/// A video stream's frames in presentation order: each one's timestamp and whether a keyframe
/// starts at it (`None` when some packet has no timestamp or two share one).
type FrameIndex = Option<Vec<(i64, bool)>>;

/// [`probe`] and the frame index.
fn scan(path: &Path) -> Result<(VideoInfo, FrameIndex), VideoError> {
    let (mut input, index) = open(path)?;
    let stream = input.stream(index).ok_or_else(|| VideoError::NoVideoStream { path: path.to_path_buf() })?;
    let rate = stream.avg_frame_rate();
    let fps = if rate.denominator() != 0 { f64::from(rate.numerator()) / f64::from(rate.denominator()) } else { 0.0 };
    let params = stream.parameters();
    // SAFETY: `params` wraps the stream's valid AVCodecParameters for as long as `input` lives.
    let (width, height) = unsafe {
        let p = &*params.as_ptr();
        (p.width.max(0) as usize, p.height.max(0) as usize)
    };
    let packets: Vec<(Option<i64>, bool)> =
        input.packets().filter(|(s, _)| s.index() == index).map(|(_, p)| (p.pts(), p.is_key())).collect();
    let n_frames = packets.len();
    let mut frames: Vec<(i64, bool)> = packets.iter().filter_map(|&(pts, key)| pts.map(|t| (t, key))).collect();
    frames.sort_unstable();
    let unique = frames.windows(2).all(|w| w[0].0 != w[1].0);
    let frames = (frames.len() == n_frames && unique).then_some(frames);
    Ok((VideoInfo { n_frames, fps, width, height }, frames))
}

/// swscale's matrix for a stream's tagged colour space (BT.601 when untagged or unknown).
fn sws_colorspace(space: color::Space) -> i32 {
    match space {
        color::Space::BT709 => ffmpeg::ffi::SWS_CS_ITU709,
        color::Space::FCC => ffmpeg::ffi::SWS_CS_FCC,
        color::Space::SMPTE240M => ffmpeg::ffi::SWS_CS_SMPTE240M,
        color::Space::BT2020NCL | color::Space::BT2020CL => ffmpeg::ffi::SWS_CS_BT2020,
        _ => ffmpeg::ffi::SWS_CS_ITU601,
    }
}

/// A converter from the decoder's frames to RGB24 at the same size, with the stream's matrix
/// and range.
fn converter(path: &Path, frame: &ffmpeg::frame::Video) -> Result<scaling::Context, VideoError> {
    let err = |detail: String| VideoError::Decode { path: path.to_path_buf(), detail };
    let (w, h) = (frame.width(), frame.height());
    let mut ctx = scaling::Context::get(frame.format(), w, h, Pixel::RGB24, w, h, scaling::Flags::BICUBIC)
        .map_err(|e| err(format!("colour conversion: {e}")))?;
    let full = i32::from(frame.color_range() == color::Range::JPEG);
    // SAFETY: the context is valid; the coefficient tables are static arrays of libswscale.
    unsafe {
        let table = ffmpeg::ffi::sws_getCoefficients(sws_colorspace(frame.color_space()));
        let rgb = ffmpeg::ffi::sws_getCoefficients(ffmpeg::ffi::SWS_CS_DEFAULT);
        ffmpeg::ffi::sws_setColorspaceDetails(ctx.as_mut_ptr(), table, full, rgb, 1, 0, 1 << 16, 1 << 16);
    }
    Ok(ctx)
}

/// The RGB24 frame's rows, packed (the frame's stride dropped).
fn packed_rgb(frame: &ffmpeg::frame::Video) -> Result<Rgb8Image, crate::ModelError> {
    let (w, h) = (frame.width() as usize, frame.height() as usize);
    let stride = frame.stride(0);
    let data = frame.data(0);
    let mut out = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        out.extend_from_slice(&data[y * stride..y * stride + w * 3]);
    }
    Rgb8Image::new(w, h, out)
}

/// Decodes the frames at `indices` (any order, repeats allowed; each below the frame count)
/// of the video at `path`. `indices = None` decodes every frame.
pub fn decode(path: &Path, indices: Option<&[usize]>) -> Result<DecodedVideo, VideoError> {
    let (info, frame_index) = scan(path)?;
    if info.n_frames == 0 {
        return Err(VideoError::NoFrames { path: path.to_path_buf() });
    }
    let indices: Vec<usize> = match indices {
        Some(i) => i.to_vec(),
        None => (0..info.n_frames).collect(),
    };
    if let Some(&bad) = indices.iter().find(|&&i| i >= info.n_frames) {
        return Err(VideoError::MissingFrame { path: path.to_path_buf(), index: bad, decoded: 0, counted: info.n_frames });
    }
    let mut wanted: Vec<usize> = indices.clone();
    wanted.sort_unstable();
    wanted.dedup();
    let last = wanted.last().copied().unwrap_or(0);
    let seeked = match &frame_index {
        Some(index) if indices.len() < info.n_frames => decode_seeking(path, &wanted, index)?,
        _ => None,
    };
    let (decoded, seeks) = match seeked {
        Some(found) => found,
        None => (decode_sorted(path, &wanted, last, info.n_frames)?, 0),
    };
    let frames = indices.iter().map(|i| decoded[wanted.binary_search(i).unwrap_or_default()].clone()).collect();
    Ok(DecodedVideo { info, indices, frames, seeks })
}

/// The stream's decoder.
fn video_decoder(path: &Path, input: &ffmpeg::format::context::Input, index: usize) -> Result<ffmpeg::decoder::Video, VideoError> {
    let p = path.to_path_buf();
    let derr = |detail: String| VideoError::Decode { path: p.clone(), detail };
    let stream = input.stream(index).ok_or_else(|| VideoError::NoVideoStream { path: p.clone() })?;
    let params = stream.parameters();
    let codec_id = params.id();
    if ffmpeg::codec::decoder::find(codec_id).is_none() {
        return Err(VideoError::UnsupportedCodec { path: p.clone(), codec: format!("{codec_id:?}") });
    }
    let ctx = ffmpeg::codec::context::Context::from_parameters(params).map_err(|e| derr(e.to_string()))?;
    ctx.decoder().video().map_err(|e| match e {
        ffmpeg::Error::DecoderNotFound => VideoError::UnsupportedCodec { path: p.clone(), codec: format!("{codec_id:?}") },
        e => derr(e.to_string()),
    })
}

/// Decodes the frames `wanted` (sorted, unique) by seeking: for each, to the keyframe at or
/// before it when that keyframe lies past the last frame decoded, then forward, frames picked
/// by timestamp; the frames and the seeks made. `None` when the stream does not behave (a seek fails or passes a frame asked
/// for): the caller then decodes forward from the start.
fn decode_seeking(path: &Path, wanted: &[usize], frames: &[(i64, bool)]) -> Result<Option<(Vec<Rgb8Image>, usize)>, VideoError> {
    let derr = |detail: String| VideoError::Decode { path: path.to_path_buf(), detail };
    let (mut input, index) = open(path)?;
    let mut decoder = video_decoder(path, &input, index)?;
    let mut scaler: Option<scaling::Context> = None;
    let (mut frame, mut rgb) = (ffmpeg::frame::Video::empty(), ffmpeg::frame::Video::empty());
    let mut out = Vec::with_capacity(wanted.len());
    // Presentation position of the last frame decoded (None: nothing decoded yet).
    let mut position: Option<usize> = None;
    let (mut eof, mut seeks) = (false, 0);
    for &target in wanted {
        let key = (0..=target).rev().find(|&k| frames[k].1).unwrap_or(0);
        if position.is_none_or(|p| p < key) || eof {
            // SAFETY: `input` is an open format context and `index` one of its streams.
            let r =
                unsafe { ffmpeg::ffi::av_seek_frame(input.as_mut_ptr(), index as i32, frames[key].0, ffmpeg::ffi::AVSEEK_FLAG_BACKWARD) };
            if r < 0 {
                return Ok(None);
            }
            decoder.flush();
            (position, eof) = (None, false);
            seeks += 1;
        }
        let got = loop {
            match decoder.receive_frame(&mut frame) {
                Ok(()) => {
                    let Some(pts) = frame.timestamp() else { return Ok(None) };
                    let Ok(k) = frames.binary_search_by_key(&pts, |f| f.0) else { return Ok(None) };
                    position = Some(k);
                    if k == target {
                        break true;
                    }
                    if k > target {
                        return Ok(None);
                    }
                }
                Err(ffmpeg::Error::Eof) => break false,
                Err(_) if eof => break false,
                Err(_) => match input.packets().find(|(s, _)| s.index() == index) {
                    Some((_, packet)) => {
                        if let Err(e) = decoder.send_packet(&packet) {
                            log::warn!("{}: packet at {:?}: {e}", path.display(), packet.pts());
                        }
                    }
                    None => {
                        decoder.send_eof().map_err(|e| derr(e.to_string()))?;
                        eof = true;
                    }
                },
            }
        };
        if !got {
            return Ok(None);
        }
        let sc = match &mut scaler {
            Some(s) => s,
            None => scaler.insert(converter(path, &frame)?),
        };
        sc.run(&frame, &mut rgb).map_err(|e| derr(format!("colour conversion: {e}")))?;
        out.push(packed_rgb(&rgb).map_err(|e| derr(e.to_string()))?);
    }
    Ok(Some((out, seeks)))
}

/// Decodes frames `0..=last` in presentation order, converting those in `wanted` (sorted,
/// unique).
fn decode_sorted(path: &Path, wanted: &[usize], last: usize, counted: usize) -> Result<Vec<Rgb8Image>, VideoError> {
    let p: PathBuf = path.to_path_buf();
    let derr = |detail: String| VideoError::Decode { path: p.clone(), detail };
    let (mut input, index) = open(path)?;
    let mut decoder = video_decoder(path, &input, index)?;
    let mut out = Vec::with_capacity(wanted.len());
    let mut next = 0usize; // index of the next decoded frame
    let mut scaler: Option<scaling::Context> = None;
    let mut frame = ffmpeg::frame::Video::empty();
    let mut rgb = ffmpeg::frame::Video::empty();
    let mut take = |decoder: &mut ffmpeg::decoder::Video, next: &mut usize, out: &mut Vec<Rgb8Image>| -> Result<bool, VideoError> {
        while decoder.receive_frame(&mut frame).is_ok() {
            if out.len() < wanted.len() && wanted[out.len()] == *next {
                let sc = match &mut scaler {
                    Some(s) => s,
                    None => scaler.insert(converter(path, &frame)?),
                };
                sc.run(&frame, &mut rgb).map_err(|e| derr(format!("colour conversion: {e}")))?;
                out.push(packed_rgb(&rgb).map_err(|e| derr(e.to_string()))?);
            }
            *next += 1;
            if *next > last {
                return Ok(true);
            }
        }
        Ok(false)
    };
    for (s, packet) in input.packets() {
        if s.index() != index {
            continue;
        }
        // A corrupt packet is skipped as FFmpeg's tools do; a frame it held is then missing.
        if let Err(e) = decoder.send_packet(&packet) {
            log::warn!("{}: packet at {:?}: {e}", path.display(), packet.pts());
            continue;
        }
        if take(&mut decoder, &mut next, &mut out)? {
            return Ok(out);
        }
    }
    decoder.send_eof().map_err(|e| derr(e.to_string()))?;
    take(&mut decoder, &mut next, &mut out)?;
    if out.len() < wanted.len() {
        return Err(VideoError::MissingFrame { path: p, index: wanted[out.len()], decoded: next, counted });
    }
    Ok(out)
}
