//! What capture does to an image before it is stored: shrink it to a maximum size and
//! re-encode it as JPEG at a set quality (cameras often deliver more pixels than the
//! detector's 640x640 input needs), and motion gating: a frame that differs from the last
//! kept one by less than a threshold is skipped, and counted.

use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::imageops::FilterType;
use image::{DynamicImage, GrayImage};

use crate::source::{Captured, EncodedImage};

/// Side of the grey thumbnail that motion is measured on: small enough to ignore sensor
/// noise and cheap to compare.
const THUMB: u32 = 32;

/// Shaping settings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShapingConfig {
    /// Shrink (keeping the aspect ratio) to fit this width...
    pub max_width: Option<u32>,
    /// ...and this height.
    pub max_height: Option<u32>,
    /// Re-encode as JPEG at this quality (1-100); also used when shrinking.
    pub jpeg_quality: Option<u8>,
    /// Skip frames whose mean absolute difference from the last kept frame is below this
    /// many percent of full scale.
    pub motion_threshold_percent: Option<f32>,
}

/// What became of a captured image.
#[derive(Debug)]
pub enum Shaped {
    /// Keep it (possibly resized and re-encoded).
    Keep(Captured),
    /// Skipped by motion gating.
    Still,
}

/// Applies [`ShapingConfig`] frame by frame (it remembers the last kept frame).
#[derive(Debug, Default)]
pub struct Shaper {
    cfg: ShapingConfig,
    last_kept: Option<GrayImage>,
}

impl Shaper {
    /// A shaper with these settings.
    pub fn new(cfg: ShapingConfig) -> Self {
        Self {
            cfg,
            last_kept: None,
        }
    }

    /// Whether this shaper touches images at all (otherwise they pass undecoded).
    pub fn is_identity(&self) -> bool {
        self.cfg == ShapingConfig::default()
    }

    /// Shapes one image. An image that does not decode is an error naming its source.
    pub fn shape(&mut self, captured: Captured) -> anyhow::Result<Shaped> {
        if self.is_identity() {
            return Ok(Shaped::Keep(captured));
        }
        let decoded = image::load_from_memory(captured.image.bytes())
            .map_err(|e| anyhow::anyhow!("{}: not a decodable image: {e}", captured.source))?;
        if let Some(threshold) = self.cfg.motion_threshold_percent {
            let thumb = decoded
                .resize_exact(THUMB, THUMB, FilterType::Triangle)
                .to_luma8();
            if let Some(last) = &self.last_kept {
                if difference_percent(last, &thumb) < threshold {
                    return Ok(Shaped::Still);
                }
            }
            self.last_kept = Some(thumb);
        }
        let (w, h) = (decoded.width(), decoded.height());
        let (max_w, max_h) = (
            self.cfg.max_width.unwrap_or(u32::MAX),
            self.cfg.max_height.unwrap_or(u32::MAX),
        );
        let shrink = w > max_w || h > max_h;
        if !shrink && self.cfg.jpeg_quality.is_none() {
            return Ok(Shaped::Keep(captured));
        }
        let out = if shrink {
            decoded.resize(max_w, max_h, FilterType::Triangle)
        } else {
            decoded
        };
        Ok(Shaped::Keep(Captured {
            image: EncodedImage::Jpeg(encode_jpeg(&out, self.cfg.jpeg_quality.unwrap_or(85))?),
            source: captured.source,
        }))
    }
}

/// Mean absolute difference of two equal-sized grey images, in percent of full scale.
fn difference_percent(a: &GrayImage, b: &GrayImage) -> f32 {
    let sum: u64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&x, &y)| u64::from(x.abs_diff(y)))
        .sum();
    sum as f32 * 100.0 / (a.as_raw().len().max(1) as f32 * 255.0)
}

fn encode_jpeg(img: &DynamicImage, quality: u8) -> anyhow::Result<Vec<u8>> {
    let mut out = Cursor::new(Vec::new());
    JpegEncoder::new_with_quality(&mut out, quality.clamp(1, 100)).encode_image(&img.to_rgb8())?;
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use image::{Rgb, RgbImage};

    use super::*;

    fn captured(img: &RgbImage) -> Captured {
        Captured {
            image: EncodedImage::Jpeg(
                encode_jpeg(&DynamicImage::ImageRgb8(img.clone()), 90).expect("encode"),
            ),
            source: "test".into(),
        }
    }

    fn scene(square_at: u32) -> RgbImage {
        RgbImage::from_fn(320, 240, |x, y| {
            if (square_at..square_at + 60).contains(&x) && (80..140).contains(&y) {
                Rgb([250, 250, 250])
            } else {
                Rgb([40, 60, 80])
            }
        })
    }

    #[test]
    fn large_frames_shrink_to_fit_and_keep_their_aspect() {
        let mut s = Shaper::new(ShapingConfig {
            max_width: Some(160),
            max_height: Some(160),
            ..ShapingConfig::default()
        });
        let Shaped::Keep(out) = s.shape(captured(&scene(10))).expect("shape") else {
            panic!("kept")
        };
        let img = image::load_from_memory(out.image.bytes()).expect("decodes");
        assert_eq!((img.width(), img.height()), (160, 120));
    }

    #[test]
    fn still_frames_are_skipped_and_moving_ones_kept() {
        let mut s = Shaper::new(ShapingConfig {
            motion_threshold_percent: Some(1.0),
            ..ShapingConfig::default()
        });
        let kept =
            |s: &mut Shaper, at| matches!(s.shape(captured(&scene(at))), Ok(Shaped::Keep(_)));
        assert!(kept(&mut s, 10), "the first frame is always kept");
        assert!(!kept(&mut s, 10), "the same scene again");
        assert!(!kept(&mut s, 11), "one pixel of movement is noise");
        assert!(kept(&mut s, 150), "the part moved");
        assert!(!kept(&mut s, 150));
    }

    #[test]
    fn an_undecodable_image_is_an_error_naming_its_source() {
        let mut s = Shaper::new(ShapingConfig {
            jpeg_quality: Some(70),
            ..ShapingConfig::default()
        });
        let err = s
            .shape(Captured {
                image: EncodedImage::Jpeg(b"nope".to_vec()),
                source: "cam7.jpg".into(),
            })
            .expect_err("not an image")
            .to_string();
        assert!(err.starts_with("cam7.jpg: not a decodable image"), "{err}");
    }
}
