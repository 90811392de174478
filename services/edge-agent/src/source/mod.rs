//! Frame sources: an image folder (listed once, or watched for new files), an MJPEG file,
//! a synthetic generator for tests and load, and a V4L2 camera (the `v4l2` build feature).
//! A source yields encoded images named after where they came from; capture shapes
//! (resize, re-encode, motion gating) and the uplink stamps and numbers them.

mod folder;
mod mjpeg;
mod synthetic;
#[cfg(feature = "v4l2")]
mod v4l2;

pub use folder::FolderSource;
pub use mjpeg::{split_jpegs, MjpegSource};
pub use synthetic::SyntheticSource;
#[cfg(feature = "v4l2")]
pub use v4l2::V4l2Source;

/// An encoded image ready to send.
#[derive(Debug, Clone, PartialEq)]
pub enum EncodedImage {
    /// JPEG bytes.
    Jpeg(Vec<u8>),
    /// PNG bytes.
    Png(Vec<u8>),
}

impl EncodedImage {
    /// The encoded bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            EncodedImage::Jpeg(b) | EncodedImage::Png(b) => b,
        }
    }
}

/// An image and where it came from (a file name, `clip.mjpeg#12`, `synthetic-3`): the
/// frame's `source` attribute.
#[derive(Debug, Clone, PartialEq)]
pub struct Captured {
    /// The image.
    pub image: EncodedImage,
    /// Where it came from.
    pub source: String,
}

/// What a source has next.
#[derive(Debug)]
pub enum Next {
    /// An image.
    Frame(Captured),
    /// Nothing yet (a watched folder with no new file): ask again.
    Idle,
    /// The source is finished.
    Finished,
}

/// Something that produces frames. `next` may block for a short while (a camera's frame
/// interval, a folder poll) but returns [`Next::Idle`] rather than wait indefinitely, so
/// that capture can notice a stop request.
pub trait FrameSource: Send {
    /// The next image, or why there is none.
    fn next(&mut self) -> anyhow::Result<Next>;
}
