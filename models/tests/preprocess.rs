//! Image input against timm's own eval transform (fixtures made by
//! `tests/fixtures/make_preprocess_fixture.py`), hostile images, labels and `.npy` files.

#[path = "preprocess/npy.rs"]
mod npy;
#[path = "preprocess/png.rs"]
mod png;

use std::path::{Path, PathBuf};

use kestrel_models::ModelError;
use kestrel_models::npy::read_npy_f32;
use kestrel_models::vision::{
    CropRounding, DecodeLimits, IMAGENET_NUM_CLASSES, Interpolation, PreprocessConfig, Rgb8Image, decode_image, imagenet_label,
    imagenet_short_label, load_image, normalize, preprocess, preprocess_file, resize_and_crop, resized_size,
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/preprocess")
}

struct Case {
    name: String,
    input: String,
    config: PreprocessConfig,
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(fixtures().join("cases.txt")).expect("cases.txt");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(f.len(), 11, "bad case line {line:?}");
            let num = |i: usize| f[i].parse::<f64>().expect("number");
            Case {
                name: f[0].to_string(),
                input: f[1].to_string(),
                config: PreprocessConfig {
                    crop_size: f[2].parse().expect("crop size"),
                    crop_pct: num(3),
                    interpolation: Interpolation::from_name(f[4]).expect("interpolation"),
                    mean: [num(5) as f32, num(6) as f32, num(7) as f32],
                    std: [num(8) as f32, num(9) as f32, num(10) as f32],
                    crop_rounding: CropRounding::HalfToEven,
                },
            }
        })
        .collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Every fixture (PNG, WebP, BMP and JPEG inputs): the 8-bit crop equals timm's (Resize +
/// CenterCrop) and the tensor equals timm's output, exactly.
#[test]
fn matches_timm_eval_transform() {
    let dir = fixtures();
    let limits = DecodeLimits::default();
    let mut worst = 0f32;
    for case in cases() {
        let image = load_image(&dir.join(&case.input), &limits).expect("decode input");
        let crop = resize_and_crop(&image, &case.config).expect("resize");
        let want_crop = load_image(&dir.join(format!("{}.expected.png", case.name)), &limits).expect("expected");
        assert_eq!((crop.width(), crop.height()), (want_crop.width(), want_crop.height()), "{}", case.name);
        let byte_diffs: Vec<u8> = crop.as_bytes().iter().zip(want_crop.as_bytes()).map(|(a, b)| a.abs_diff(*b)).collect();
        let max_byte = byte_diffs.iter().copied().max().unwrap_or(0);
        let n_diff = byte_diffs.iter().filter(|&&d| d != 0).count();

        let got = preprocess(&image, &case.config).expect("preprocess");
        let want = normalize(&want_crop, case.config.mean, case.config.std);
        assert_eq!(got.shape, case.config.output_shape());
        assert_eq!(got.shape, want.shape);
        let diff = max_abs_diff(&got.data, &want.data);
        let mean = got.data.iter().zip(&want.data).map(|(a, b)| f64::from((a - b).abs())).sum::<f64>() / got.data.len() as f64;
        println!(
            "{:<24} {:>4}x{:<4} -> {:?}: max |Δ| {diff:.3e}, mean |Δ| {mean:.1e}, 8-bit: {n_diff} values differ (max {max_byte})",
            case.name,
            image.width(),
            image.height(),
            got.shape
        );
        worst = worst.max(diff);
        assert_eq!(max_byte, 0, "{}: 8-bit crop differs from timm's", case.name);
        assert_eq!(diff, 0.0, "{}", case.name);
    }
    println!("worst max |Δ| over every case: {worst:.3e}");
}

/// timm's tensor itself (written by numpy) against the whole pipeline from the file.
#[test]
fn chelsea_matches_timm_tensor() {
    let dir = fixtures();
    let (shape, want) = read_npy_f32(&dir.join("chelsea_default.timm.npy")).expect("npy");
    assert_eq!(shape, vec![1, 3, 224, 224]);
    let config = PreprocessConfig::imagenet_default();
    let got = preprocess_file(&dir.join("chelsea.png"), &config, &DecodeLimits::default()).expect("preprocess");
    assert_eq!(got.shape.to_vec(), shape);
    let diff = max_abs_diff(&got.data, &want);
    println!("chelsea vs timm tensor: max |Δ| {diff:e}");
    assert_eq!(diff, 0.0);
}

/// JPEG decoding equals Pillow's (libjpeg-turbo's) byte for byte, over the variants of
/// `make_jpeg_decode_fixtures` and the photo of the transform cases.
#[test]
fn jpeg_decodes_like_pillow() {
    let dir = fixtures();
    let limits = DecodeLimits::default();
    let names = [
        "jpeg_444_q95",
        "jpeg_422_q75",
        "jpeg_420_progressive",
        "jpeg_420_odd_61x37",
        "jpeg_422_restart",
        "jpeg_gray",
        "jpeg_cmyk",
        "chelsea_q85",
    ];
    for name in names {
        let ours = load_image(&dir.join(format!("{name}.jpg")), &limits).expect("jpeg");
        let pillow = load_image(&dir.join(format!("{name}.pil.png")), &limits).expect("pillow pixels");
        assert_eq!((ours.width(), ours.height()), (pillow.width(), pillow.height()), "{name}");
        let differing = ours.as_bytes().iter().zip(pillow.as_bytes()).filter(|(a, b)| a != b).count();
        println!("{name}: {}x{}, {differing} bytes differ from Pillow's decoding", ours.width(), ours.height());
        assert_eq!(differing, 0, "{name}: decoded pixels differ from Pillow's");
    }
}

#[test]
fn resize_rounding_is_torchvision_s() {
    assert_eq!(resized_size(451, 300, 256), (384, 256)); // int(256 * 451 / 300) = int(384.85)
    assert_eq!(resized_size(97, 411, 256), (256, 1084));
    assert_eq!(resized_size(1, 1, 256), (256, 256));
    assert_eq!(resized_size(303, 200, 256), (387, 256));
    assert_eq!(PreprocessConfig::imagenet_default().resize_side().expect("side"), 256);
    let c = PreprocessConfig { crop_pct: 0.9, ..PreprocessConfig::imagenet_default() };
    assert_eq!(c.resize_side().expect("side"), 248);
}

#[test]
fn one_pixel_image_is_a_constant_tensor() {
    let image = Rgb8Image::new(1, 1, vec![200, 30, 90]).expect("image");
    let config = PreprocessConfig::imagenet_default();
    let t = preprocess(&image, &config).expect("1x1");
    let plane = 224 * 224;
    for (c, v) in [200u8, 30, 90].iter().enumerate() {
        let want = (f32::from(*v) / 255.0 - config.mean[c]) / config.std[c];
        assert!(t.data[c * plane..(c + 1) * plane].iter().all(|&x| x == want));
    }
}

/// A 1 x 16384 strip resizes (in torchvision's arithmetic) to 256 x 4194304; only the crop is
/// computed, so it is cheap, and every output row is constant.
#[test]
fn extreme_aspect_ratios_stay_cheap() {
    let data: Vec<u8> = (0..16384 * 3).map(|i| (i % 251) as u8).collect();
    for (w, h) in [(1, 16384), (16384, 1)] {
        let image = Rgb8Image::new(w, h, data.clone()).expect("image");
        let t = preprocess(&image, &PreprocessConfig::imagenet_default()).expect("strip");
        assert_eq!(t.shape, [1, 3, 224, 224]);
        assert!(t.data.iter().all(|v| v.is_finite()));
        if w == 1 {
            assert!(t.data.chunks_exact(224).all(|row| row.iter().all(|&v| v == row[0])));
        }
    }
}

#[test]
fn invalid_configs_are_refused() {
    let image = Rgb8Image::new(2, 2, vec![0; 12]).expect("image");
    let base = PreprocessConfig::imagenet_default();
    let bad = [
        PreprocessConfig { crop_pct: 0.0, ..base.clone() },
        PreprocessConfig { crop_pct: f64::NAN, ..base.clone() },
        PreprocessConfig { crop_pct: 1e9, ..base.clone() },
        PreprocessConfig { crop_size: 0, ..base.clone() },
        PreprocessConfig { std: [0.2, 0.0, 0.2], ..base.clone() },
        PreprocessConfig { mean: [f32::INFINITY, 0.0, 0.0], ..base.clone() },
    ];
    for config in bad {
        let r = preprocess(&image, &config);
        assert!(matches!(r, Err(ModelError::Config(_))), "{config:?}: {r:?}");
    }
    assert!(matches!(Rgb8Image::new(0, 5, vec![]), Err(ModelError::Input(_))));
    assert!(matches!(Rgb8Image::new(2, 2, vec![0; 11]), Err(ModelError::Input(_))));
}

fn expect_decode_error(bytes: &[u8], what: &str) {
    match decode_image(bytes, &DecodeLimits::default()) {
        Err(ModelError::ImageDecode(msg)) => println!("{what}: {msg}"),
        Err(e) => panic!("{what}: expected ImageDecode, got {e:?}"),
        Ok(img) => panic!("{what}: decoded to a {}x{} image", img.width(), img.height()),
    }
}

#[test]
fn corrupt_and_truncated_images_are_typed_errors() {
    let dir = fixtures();
    let png_bytes = std::fs::read(dir.join("gradient_303x200.png")).expect("png");
    let jpg_bytes = std::fs::read(dir.join("chelsea_q85.jpg")).expect("jpg");

    expect_decode_error(&[], "empty");
    expect_decode_error(b"definitely not an image", "text");
    expect_decode_error(&png_bytes[..8], "PNG signature only");
    expect_decode_error(&png_bytes[..png_bytes.len() / 2], "truncated PNG");
    let mut flipped = png_bytes.clone();
    for b in &mut flipped[200..260] {
        *b ^= 0x5A;
    }
    expect_decode_error(&flipped, "corrupt PNG data");
    expect_decode_error(&jpg_bytes[..2], "JPEG SOI only");
    expect_decode_error(&jpg_bytes[..jpg_bytes.len() / 2], "truncated JPEG");
    expect_decode_error(&jpg_bytes[..jpg_bytes.len() - 2], "JPEG without EOI");
}

#[test]
fn oversized_headers_are_refused_before_allocating() {
    // A valid PNG header claiming 20000 x 20000 RGB (1.2 GB decoded), then the first bytes of
    // its pixel data (a real one would deflate to ~1 MB).
    let bomb = |width: u32, height: u32, depth: u8, colour: u8| {
        let mut png_bytes = png::header(width, height, depth, colour);
        png_bytes.extend(png::chunk(b"IDAT", &[0x78, 0x01, 0x00, 0xFF, 0xFF, 0x00, 0x00, 0, 0, 0]));
        png_bytes.extend(png::chunk(b"IEND", &[]));
        png_bytes
    };
    match decode_image(&bomb(20000, 20000, 8, 2), &DecodeLimits::default()) {
        Err(ModelError::ImageTooLarge { width: 20000, height: 20000, limit }) => println!("20000x20000: {limit}"),
        other => panic!("expected ImageTooLarge, got {:?}", other.map(|i| (i.width(), i.height()))),
    }
    // Within the side limit but over the allocation budget: 16384 x 16384 RGBA16 is 2 GiB.
    match decode_image(&bomb(16384, 16384, 16, 6), &DecodeLimits::default()) {
        Err(ModelError::ImageTooLarge { width: 16384, height: 16384, limit }) => println!("16384x16384 RGBA16: {limit}"),
        other => panic!("expected ImageTooLarge, got {:?}", other.map(|i| (i.width(), i.height()))),
    }
    // The header alone (no pixel data at all): refused too, as undecodable.
    let mut header_only = png::header(20000, 20000, 8, 2);
    header_only.extend(png::chunk(b"IEND", &[]));
    let r = decode_image(&header_only, &DecodeLimits::default()).map(|i| i.width());
    assert!(matches!(r, Err(ModelError::ImageTooLarge { .. } | ModelError::ImageDecode(_))), "{r:?}");
    // A real JPEG whose frame header (SOF0: FF C0, length, precision, height, width) is
    // patched to claim 60000 x 60000.
    let mut jpeg = std::fs::read(fixtures().join("chelsea_q85.jpg")).expect("jpg");
    let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).expect("SOF0");
    jpeg[sof + 5..sof + 9].copy_from_slice(&[0xEA, 0x60, 0xEA, 0x60]);
    let r = decode_image(&jpeg, &DecodeLimits::default()).map(|i| (i.width(), i.height()));
    assert!(matches!(r, Err(ModelError::ImageTooLarge { width: 60000, height: 60000, .. })), "{r:?}");
    // Custom limits apply to ordinary images too.
    let tight = DecodeLimits { max_width: 100, max_height: 100, ..DecodeLimits::default() };
    let r = load_image(&fixtures().join("chelsea.png"), &tight).map(|i| i.width());
    assert!(matches!(r, Err(ModelError::ImageTooLarge { width: 451, height: 300, .. })), "{r:?}");
    let tiny_file = DecodeLimits { max_file_bytes: 1000, ..DecodeLimits::default() };
    assert!(matches!(load_image(&fixtures().join("chelsea.png"), &tiny_file), Err(ModelError::Input(_))));
    assert!(matches!(load_image(&fixtures().join("no_such_file.png"), &DecodeLimits::default()), Err(ModelError::Io { .. })));
}

#[test]
fn colour_layouts_convert_like_pillow() {
    // 16-bit grey: high byte (Pillow would clip I;16 to 255 — documented difference).
    let rows = vec![vec![0x12, 0xFF, 0x80, 0x80, 0xFF, 0x7F]];
    let img = decode_image(&png::encode(3, 1, 16, 0, &rows), &DecodeLimits::default()).expect("L16");
    assert_eq!(img.as_bytes(), &[0x12, 0x12, 0x12, 0x80, 0x80, 0x80, 0xFF, 0xFF, 0xFF]);
    // Grey + alpha: alpha dropped, grey replicated.
    let rows = vec![vec![7, 0, 200, 255]];
    let img = decode_image(&png::encode(2, 1, 8, 4, &rows), &DecodeLimits::default()).expect("LA8");
    assert_eq!(img.as_bytes(), &[7, 7, 7, 200, 200, 200]);
    // RGBA: alpha dropped without blending.
    let rows = vec![vec![10, 20, 30, 0, 40, 50, 60, 128]];
    let img = decode_image(&png::encode(2, 1, 8, 6, &rows), &DecodeLimits::default()).expect("RGBA8");
    assert_eq!(img.as_bytes(), &[10, 20, 30, 40, 50, 60]);
    // 1-bit grey expands to 0 / 255.
    let rows = vec![vec![0b1010_0000]];
    let img = decode_image(&png::encode(3, 1, 1, 0, &rows), &DecodeLimits::default()).expect("L1");
    assert_eq!(img.as_bytes(), &[255, 255, 255, 0, 0, 0, 255, 255, 255]);
}

#[test]
fn labels_are_the_imagenet_1k_classes() {
    assert_eq!(IMAGENET_NUM_CLASSES, 1000);
    assert_eq!(imagenet_label(0), Some("tench, Tinca tinca"));
    assert_eq!(imagenet_label(281), Some("tabby, tabby cat"));
    assert_eq!(imagenet_label(999), Some("toilet tissue, toilet paper, bathroom tissue"));
    assert_eq!(imagenet_label(1000), None);
    assert_eq!(imagenet_short_label(1), Some("goldfish"));
    assert_eq!(imagenet_short_label(134), imagenet_short_label(517)); // crane, crane
    assert!((0..1000).all(|i| imagenet_label(i).is_some_and(|l| !l.is_empty())));
}
