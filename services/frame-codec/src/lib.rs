//! Frame decoding: JPEG, PNG or raw pixels into RGB8, refusing anything malformed or too
//! large before a pixel buffer is allocated. Every input gives an image or a
//! [`DecodeError`] naming the problem, never a panic: `fuzz/` drives this crate with
//! libFuzzer.

use std::io::Cursor;

use image::{ImageFormat, ImageReader, RgbImage};
use visionfleet_proto::v1::{frame::Image, PixelFormat, RawImage};

/// Why a frame's image was refused. The messages are what clients see.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The frame itself is malformed (no image).
    #[error("invalid frame: {0}")]
    InvalidFrame(String),
    /// The image cannot be decoded or has unusable dimensions.
    #[error("invalid image: {0}")]
    InvalidImage(String),
    /// The image exceeds a configured limit.
    #[error("frame too large: {0}")]
    TooLarge(String),
}

/// Limits applied to every frame.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest encoded (or raw) image in bytes.
    pub max_bytes: usize,
    /// Largest decoded image in pixels.
    pub max_pixels: u64,
}

/// Decodes a frame's image into RGB8.
pub fn decode(image: Option<&Image>, limits: &Limits) -> Result<RgbImage, DecodeError> {
    match image {
        None => Err(DecodeError::InvalidFrame("frame has no image".into())),
        Some(Image::Jpeg(bytes)) => decode_encoded(bytes, ImageFormat::Jpeg, limits),
        Some(Image::Png(bytes)) => decode_encoded(bytes, ImageFormat::Png, limits),
        Some(Image::Raw(raw)) => decode_raw(raw, limits),
    }
}

fn check_pixels(width: u32, height: u32, limits: &Limits) -> Result<(), DecodeError> {
    if width == 0 || height == 0 {
        return Err(DecodeError::InvalidImage(format!(
            "image has zero size ({width}x{height})"
        )));
    }
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limits.max_pixels {
        return Err(DecodeError::TooLarge(format!(
            "{width}x{height} is {pixels} pixels, the limit is {}",
            limits.max_pixels
        )));
    }
    Ok(())
}

fn decode_encoded(
    bytes: &[u8],
    format: ImageFormat,
    limits: &Limits,
) -> Result<RgbImage, DecodeError> {
    let name = format!("{format:?}").to_uppercase();
    if bytes.is_empty() {
        return Err(DecodeError::InvalidImage(format!("{name} data is empty")));
    }
    if bytes.len() > limits.max_bytes {
        return Err(DecodeError::TooLarge(format!(
            "{name} is {} bytes, the limit is {}",
            bytes.len(),
            limits.max_bytes
        )));
    }
    // Read only the header first: a decompression bomb is refused before any allocation.
    let (width, height) = ImageReader::with_format(Cursor::new(bytes), format)
        .into_dimensions()
        .map_err(|e| {
            DecodeError::InvalidImage(format!("{name} header: {}", e.to_string().trim_end()))
        })?;
    check_pixels(width, height, limits)?;
    // The JPEG decoder fills a truncated scan with grey instead of failing; a frame cut off
    // in transit must not become a "valid" half-grey image, so require the end marker.
    if format == ImageFormat::Jpeg && !has_jpeg_end_marker(bytes) {
        return Err(DecodeError::InvalidImage(
            "JPEG data: truncated (no end-of-image marker)".into(),
        ));
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut image_limits = image::Limits::default();
    image_limits.max_image_width = Some(width);
    image_limits.max_image_height = Some(height);
    // RGBA16 worst case plus decoder scratch.
    image_limits.max_alloc = Some(u64::from(width) * u64::from(height) * 8 + (1 << 20));
    reader.limits(image_limits);
    let decoded = reader.decode().map_err(|e| {
        DecodeError::InvalidImage(format!("{name} data: {}", e.to_string().trim_end()))
    })?;
    Ok(decoded.into_rgb8())
}

/// Whether the end-of-image marker (FF D9) is present near the end (encoders may pad a
/// few bytes after it).
fn has_jpeg_end_marker(bytes: &[u8]) -> bool {
    let tail = &bytes[bytes.len().saturating_sub(1024)..];
    tail.windows(2).any(|w| w == [0xFF, 0xD9])
}

fn decode_raw(raw: &RawImage, limits: &Limits) -> Result<RgbImage, DecodeError> {
    let format = PixelFormat::try_from(raw.format).unwrap_or(PixelFormat::Unspecified);
    let channels: u64 = match format {
        PixelFormat::Rgb8 | PixelFormat::Bgr8 => 3,
        PixelFormat::Gray8 => 1,
        PixelFormat::Unspecified => {
            return Err(DecodeError::InvalidImage(format!(
                "raw image has no pixel format (got {})",
                raw.format
            )))
        }
    };
    check_pixels(raw.width, raw.height, limits)?;
    let expected = u64::from(raw.width) * u64::from(raw.height) * channels;
    if raw.data.len() as u64 != expected {
        return Err(DecodeError::InvalidImage(format!(
            "raw {} buffer has {} bytes, {}x{}x{channels} needs {expected}",
            format.as_str_name(),
            raw.data.len(),
            raw.width,
            raw.height
        )));
    }
    let rgb: Vec<u8> = match format {
        PixelFormat::Rgb8 => raw.data.clone(),
        PixelFormat::Bgr8 => raw
            .data
            .chunks_exact(3)
            .flat_map(|p| [p[2], p[1], p[0]])
            .collect(),
        _ => raw.data.iter().flat_map(|&g| [g, g, g]).collect(),
    };
    RgbImage::from_raw(raw.width, raw.height, rgb)
        .ok_or_else(|| DecodeError::InvalidImage("raw buffer does not fit its size".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_bytes: 1 << 20,
        max_pixels: 10_000_000,
    };

    fn jpeg(width: u32, height: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(width, height, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Jpeg).unwrap();
        out.into_inner()
    }

    #[test]
    fn good_jpeg_png_and_raw_decode() {
        let img = decode(Some(&Image::Jpeg(jpeg(32, 16))), &LIMITS).unwrap();
        assert_eq!(img.dimensions(), (32, 16));
        let mut png = Cursor::new(Vec::new());
        RgbImage::new(5, 3)
            .write_to(&mut png, ImageFormat::Png)
            .unwrap();
        let img = decode(Some(&Image::Png(png.into_inner())), &LIMITS).unwrap();
        assert_eq!(img.dimensions(), (5, 3));
        let raw = RawImage {
            format: PixelFormat::Bgr8 as i32,
            width: 2,
            height: 1,
            data: vec![1, 2, 3, 4, 5, 6],
        };
        let img = decode(Some(&Image::Raw(raw)), &LIMITS).unwrap();
        assert_eq!(img.as_raw(), &vec![3, 2, 1, 6, 5, 4]);
        let gray = RawImage {
            format: PixelFormat::Gray8 as i32,
            width: 1,
            height: 1,
            data: vec![9],
        };
        assert_eq!(
            decode(Some(&Image::Raw(gray)), &LIMITS).unwrap().as_raw(),
            &vec![9, 9, 9]
        );
    }

    fn err(image: Option<Image>) -> String {
        decode(image.as_ref(), &LIMITS).unwrap_err().to_string()
    }

    #[test]
    fn bad_input_gets_a_precise_error() {
        assert_eq!(err(None), "invalid frame: frame has no image");
        assert_eq!(
            err(Some(Image::Jpeg(vec![]))),
            "invalid image: JPEG data is empty"
        );
        let mut header_only = jpeg(64, 64);
        header_only.truncate(100);
        assert!(err(Some(Image::Jpeg(header_only))).starts_with("invalid image: JPEG header:"));
        let mut truncated = jpeg(256, 256);
        truncated.truncate(truncated.len() * 4 / 5);
        assert_eq!(
            err(Some(Image::Jpeg(truncated))),
            "invalid image: JPEG data: truncated (no end-of-image marker)"
        );
        assert!(err(Some(Image::Jpeg(b"not a jpeg at all".to_vec())))
            .starts_with("invalid image: JPEG header:"));
        let raw = RawImage {
            format: PixelFormat::Rgb8 as i32,
            width: 4,
            height: 4,
            data: vec![0; 47],
        };
        assert_eq!(
            err(Some(Image::Raw(raw))),
            "invalid image: raw PIXEL_FORMAT_RGB8 buffer has 47 bytes, 4x4x3 needs 48"
        );
        let zero = RawImage {
            format: PixelFormat::Rgb8 as i32,
            width: 0,
            height: 4,
            data: vec![],
        };
        assert_eq!(
            err(Some(Image::Raw(zero))),
            "invalid image: image has zero size (0x4)"
        );
        let nofmt = RawImage {
            format: 0,
            width: 1,
            height: 1,
            data: vec![0, 0, 0],
        };
        assert_eq!(
            err(Some(Image::Raw(nofmt))),
            "invalid image: raw image has no pixel format (got 0)"
        );
    }

    #[test]
    fn oversize_and_bombs_are_refused_before_decoding() {
        let small = Limits {
            max_bytes: 100,
            max_pixels: 10_000_000,
        };
        let big = jpeg(64, 64);
        let e = decode(Some(&Image::Jpeg(big.clone())), &small).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "frame too large: JPEG is {} bytes, the limit is 100",
                big.len()
            )
        );
        // A JPEG whose frame header claims 60000x60000 (3.6 Gpx): refused from the header
        // alone, before the decoder allocates anything.
        let mut bomb = jpeg(16, 16);
        let sof = bomb
            .windows(2)
            .position(|w| w == [0xFF, 0xC0])
            .expect("baseline JPEG has an SOF0 marker");
        bomb[sof + 5..sof + 7].copy_from_slice(&60_000u16.to_be_bytes());
        bomb[sof + 7..sof + 9].copy_from_slice(&60_000u16.to_be_bytes());
        let e = decode(Some(&Image::Jpeg(bomb)), &LIMITS)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "frame too large: 60000x60000 is 3600000000 pixels, the limit is 10000000"
        );
    }

    /// Seeded mutation testing of the decoders on the stable toolchain: thousands of
    /// corrupted, truncated and extended JPEG/PNG/raw frames must each give Ok or a clean
    /// error, never a panic or an allocation past the limits.
    #[test]
    fn mutated_frames_never_panic() {
        let mut png = Cursor::new(Vec::new());
        RgbImage::from_fn(48, 32, |x, y| image::Rgb([x as u8, y as u8, 3]))
            .write_to(&mut png, ImageFormat::Png)
            .unwrap();
        let seeds = [jpeg(48, 32), png.into_inner()];
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..3000 {
            let mut bytes = seeds[round % 2].clone();
            match next() % 4 {
                0 => {
                    let cut = (next() as usize) % bytes.len();
                    bytes.truncate(cut);
                }
                1 => bytes.extend((0..next() % 64).map(|_| next() as u8)),
                _ => {
                    for _ in 0..1 + next() % 8 {
                        let at = (next() as usize) % bytes.len();
                        bytes[at] = next() as u8;
                    }
                }
            }
            let image = if round % 2 == 0 {
                Image::Jpeg(bytes)
            } else {
                Image::Png(bytes)
            };
            let _ = decode(Some(&image), &LIMITS);
        }
        for _ in 0..500 {
            let raw = RawImage {
                format: (next() % 5) as i32,
                width: (next() % 70_000) as u32,
                height: (next() % 70_000) as u32,
                data: vec![0; (next() % 4096) as usize],
            };
            let _ = decode(Some(&Image::Raw(raw)), &LIMITS);
        }
    }
}
