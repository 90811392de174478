//! Generated JPEG frames for tests and load: a gradient with a square that moves.

use std::io::Cursor;

use image::{ImageFormat, Rgb, RgbImage};

use super::{Captured, EncodedImage, FrameSource, Next};

/// `count` generated frames.
pub struct SyntheticSource {
    count: u64,
    produced: u64,
    width: u32,
    height: u32,
}

impl SyntheticSource {
    /// `count` frames of `width` x `height`.
    pub fn new(count: u64, width: u32, height: u32) -> Self {
        Self {
            count,
            produced: 0,
            width: width.max(16),
            height: height.max(16),
        }
    }

    /// Frame `n` as an RGB image.
    pub fn render(&self, n: u64) -> RgbImage {
        let side = (self.width.min(self.height) / 4).max(4);
        let x0 = (n as u32 * 7) % (self.width - side);
        let y0 = (n as u32 * 5) % (self.height - side);
        RgbImage::from_fn(self.width, self.height, |x, y| {
            if (x0..x0 + side).contains(&x) && (y0..y0 + side).contains(&y) {
                Rgb([230, 40, 40])
            } else {
                Rgb([
                    (x * 255 / self.width) as u8,
                    (y * 255 / self.height) as u8,
                    90,
                ])
            }
        })
    }
}

impl FrameSource for SyntheticSource {
    fn next(&mut self) -> anyhow::Result<Next> {
        if self.produced >= self.count {
            return Ok(Next::Finished);
        }
        let img = self.render(self.produced);
        self.produced += 1;
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Jpeg)?;
        Ok(Next::Frame(Captured {
            image: EncodedImage::Jpeg(out.into_inner()),
            source: format!("synthetic-{}", self.produced),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_source_is_finite_and_decodable() {
        let mut s = SyntheticSource::new(3, 64, 48);
        let mut frames = Vec::new();
        while let Next::Frame(c) = s.next().expect("next") {
            frames.push(c);
        }
        assert_eq!(frames.len(), 3);
        let img = image::load_from_memory(frames[0].image.bytes()).expect("decodes");
        assert_eq!((img.width(), img.height()), (64, 48));
        assert_eq!(frames[2].source, "synthetic-3");
    }
}
