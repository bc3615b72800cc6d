//! Image input for vision models: decoding ([`decode_image`], [`load_image`]) to
//! [`Rgb8Image`], timm's ImageNet evaluation transform ([`preprocess()`] with a
//! [`PreprocessConfig`]) and the ImageNet-1k class names ([`imagenet_label`]).

pub mod decode;
pub mod labels;
pub mod preprocess;
pub mod resample;
pub mod rgb;

pub use decode::{DecodeLimits, decode_image, load_image};
pub use labels::{IMAGENET_NUM_CLASSES, imagenet_label, imagenet_short_label};
pub use preprocess::{
    CropRounding, IMAGENET_MEAN, IMAGENET_STD, ImageTensor, PreprocessConfig, normalize, preprocess, preprocess_file, resize_and_crop,
    resized_size,
};
pub use resample::Interpolation;
pub use rgb::Rgb8Image;
