//! Frame sources: an image folder (finite, optionally repeated) and a synthetic generator
//! for tests and load. A source yields encoded images; the uplink stamps and numbers them.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{ImageFormat, Rgb, RgbImage};

/// An encoded image ready to send.
#[derive(Debug, Clone, PartialEq)]
pub enum EncodedImage {
    /// JPEG bytes.
    Jpeg(Vec<u8>),
    /// PNG bytes.
    Png(Vec<u8>),
}

/// Something that produces frames; `None` means the source is finished.
pub trait FrameSource: Send {
    /// The next image, or `None` when done.
    fn next_image(&mut self) -> Option<anyhow::Result<(EncodedImage, PathBuf)>>;
}

/// Every JPEG/PNG file of a folder in name order, `repeat` times.
pub struct FolderSource {
    files: Vec<PathBuf>,
    repeat: usize,
    index: usize,
}

impl FolderSource {
    /// Lists the folder; an empty or missing folder is an error naming it.
    pub fn open(dir: &Path, repeat: usize) -> anyhow::Result<Self> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| anyhow::anyhow!("cannot read image folder {}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| image_kind(p).is_some())
            .collect();
        files.sort();
        if files.is_empty() {
            anyhow::bail!("no .jpg, .jpeg or .png files in {}", dir.display());
        }
        Ok(Self {
            files,
            repeat: repeat.max(1),
            index: 0,
        })
    }
}

fn image_kind(p: &Path) -> Option<ImageFormat> {
    match p.extension()?.to_str()?.to_ascii_lowercase().as_str() {
        "jpg" | "jpeg" => Some(ImageFormat::Jpeg),
        "png" => Some(ImageFormat::Png),
        _ => None,
    }
}

impl FrameSource for FolderSource {
    fn next_image(&mut self) -> Option<anyhow::Result<(EncodedImage, PathBuf)>> {
        if self.index >= self.files.len() * self.repeat {
            return None;
        }
        let path = self.files[self.index % self.files.len()].clone();
        self.index += 1;
        Some(
            std::fs::read(&path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))
                .map(|bytes| match image_kind(&path) {
                    Some(ImageFormat::Png) => (EncodedImage::Png(bytes), path.clone()),
                    _ => (EncodedImage::Jpeg(bytes), path.clone()),
                }),
        )
    }
}

/// Generated JPEG frames: a gradient with a square that moves each frame.
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
    fn next_image(&mut self) -> Option<anyhow::Result<(EncodedImage, PathBuf)>> {
        if self.produced >= self.count {
            return None;
        }
        let img = self.render(self.produced);
        self.produced += 1;
        let mut out = Cursor::new(Vec::new());
        Some(
            img.write_to(&mut out, ImageFormat::Jpeg)
                .map(|_| {
                    (
                        EncodedImage::Jpeg(out.into_inner()),
                        PathBuf::from(format!("synthetic-{}", self.produced)),
                    )
                })
                .map_err(anyhow::Error::from),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_source_lists_images_in_order_and_repeats() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.png"), b"png").unwrap();
        std::fs::write(dir.path().join("a.jpg"), b"jpg").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"skip").unwrap();
        let mut s = FolderSource::open(dir.path(), 2).unwrap();
        let kinds: Vec<EncodedImage> = std::iter::from_fn(|| s.next_image())
            .map(|r| r.unwrap().0)
            .collect();
        assert_eq!(
            kinds,
            vec![
                EncodedImage::Jpeg(b"jpg".to_vec()),
                EncodedImage::Png(b"png".to_vec()),
                EncodedImage::Jpeg(b"jpg".to_vec()),
                EncodedImage::Png(b"png".to_vec()),
            ]
        );
    }

    #[test]
    fn empty_folder_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = FolderSource::open(dir.path(), 1).err().unwrap().to_string();
        assert!(err.starts_with("no .jpg, .jpeg or .png files in"), "{err}");
    }

    #[test]
    fn synthetic_source_is_finite_and_decodable() {
        let mut s = SyntheticSource::new(3, 64, 48);
        let frames: Vec<_> = std::iter::from_fn(|| s.next_image()).collect();
        assert_eq!(frames.len(), 3);
        let EncodedImage::Jpeg(bytes) = &frames[0].as_ref().unwrap().0 else {
            panic!("synthetic frames are JPEG")
        };
        let img = image::load_from_memory(bytes).unwrap();
        assert_eq!((img.width(), img.height()), (64, 48));
    }
}
