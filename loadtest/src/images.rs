//! The frames virtual devices send: real photos at several camera resolutions, mirrored
//! and cropped differently, so the pod decodes varied JPEGs rather than one cached size.

use std::path::Path;

use anyhow::Context;
use image::imageops::FilterType;
use image::DynamicImage;

/// Camera resolutions of the set (VGA to 1080p).
const RESOLUTIONS: [(u32, u32); 4] = [(640, 480), (1280, 720), (1600, 1200), (1920, 1080)];

/// Encoded JPEGs, each with its size.
pub struct ImageSet {
    /// (width, height, JPEG bytes).
    pub frames: Vec<(u32, u32, Vec<u8>)>,
}

impl ImageSet {
    /// Builds the set from every `.jpg`/`.png` photo in `dir`: each photo at each
    /// resolution (cropped to fill), plain and mirrored, JPEG quality 85.
    pub fn build(dir: &Path) -> anyhow::Result<Self> {
        let mut photos = Vec::new();
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .is_some_and(|x| x.eq_ignore_ascii_case("jpg") || x.eq_ignore_ascii_case("png"))
            })
            .collect();
        paths.sort();
        for p in &paths {
            photos.push(image::open(p).with_context(|| format!("decoding {}", p.display()))?);
        }
        anyhow::ensure!(
            !photos.is_empty(),
            "no .jpg or .png photos in {}",
            dir.display()
        );
        let mut frames = Vec::new();
        for photo in &photos {
            for (w, h) in RESOLUTIONS {
                let filled = photo.resize_to_fill(w, h, FilterType::Triangle);
                for variant in [filled.clone(), filled.fliph()] {
                    frames.push((w, h, encode(&variant)?));
                }
            }
        }
        Ok(Self { frames })
    }

    /// The frame a device sends as its `n`th: devices start at different offsets.
    pub fn pick(&self, device: usize, n: u64) -> &(u32, u32, Vec<u8>) {
        &self.frames[(device + n as usize) % self.frames.len()]
    }

    /// One line describing the set, for the report.
    pub fn describe(&self) -> String {
        let bytes: usize = self.frames.iter().map(|f| f.2.len()).sum();
        format!(
            "{} JPEGs ({} resolutions from 640x480 to 1920x1080, mean {} KB)",
            self.frames.len(),
            RESOLUTIONS.len(),
            bytes / self.frames.len() / 1024
        )
    }
}

fn encode(img: &DynamicImage) -> anyhow::Result<Vec<u8>> {
    let mut out = std::io::Cursor::new(Vec::new());
    let rgb = img.to_rgb8();
    let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85);
    enc.encode_image(&rgb)?;
    Ok(out.into_inner())
}
