//! A V4L2 camera (Linux, `v4l2` build feature): the device is asked for Motion-JPEG (or
//! JPEG) at the requested size, which most USB and CSI cameras deliver in hardware, so the
//! agent never encodes frames itself. A camera that offers neither is an error listing
//! what it does offer.

use std::io;
use std::path::Path;

use linuxvideo::format::{PixFormat, PixelFormat};
use linuxvideo::stream::ReadStream;
use linuxvideo::{BufType, Device};

use super::{Captured, EncodedImage, FrameSource, Next};

/// Frames from a V4L2 capture device, until stopped.
pub struct V4l2Source {
    name: String,
    stream: ReadStream,
    frame: u64,
}

impl V4l2Source {
    /// Opens `path` (e.g. `/dev/video0`) and starts streaming at about `width` x `height`
    /// (the driver picks the nearest size it has).
    pub fn open(path: &Path, width: u32, height: u32) -> anyhow::Result<Self> {
        let shown = path.display();
        let device =
            Device::open(path).map_err(|e| anyhow::anyhow!("cannot open camera {shown}: {e}"))?;
        let formats = device
            .formats(BufType::VIDEO_CAPTURE)
            .map(|f| f.map(|f| f.pixel_format()))
            .collect::<io::Result<Vec<_>>>()
            .map_err(|e| anyhow::anyhow!("camera {shown}: cannot list formats: {e}"))?;
        let format = [PixelFormat::MJPG, PixelFormat::JPEG]
            .into_iter()
            .find(|f| formats.contains(f))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "camera {shown} offers no Motion-JPEG or JPEG format (it has {formats:?})"
                )
            })?;
        let capture = device
            .video_capture(PixFormat::new(width, height, format))
            .map_err(|e| {
                anyhow::anyhow!("camera {shown}: cannot set {width}x{height} {format:?}: {e}")
            })?;
        let stream = capture
            .into_stream()
            .map_err(|e| anyhow::anyhow!("camera {shown}: cannot start streaming: {e}"))?;
        Ok(Self {
            name: path
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            stream,
            frame: 0,
        })
    }
}

impl FrameSource for V4l2Source {
    fn next(&mut self) -> anyhow::Result<Next> {
        // Blocks for at most one frame interval of the camera.
        let (jpeg, corrupt) = self
            .stream
            .dequeue(|buf| Ok((buf.to_vec(), buf.is_error())))
            .map_err(|e| anyhow::anyhow!("camera {}: {e}", self.name))?;
        if corrupt || jpeg.is_empty() {
            // The driver flagged the buffer (a USB hiccup): skip it, ask for the next.
            tracing::warn!(camera = %self.name, "camera delivered a corrupt frame; skipped");
            return Ok(Next::Idle);
        }
        self.frame += 1;
        Ok(Next::Frame(Captured {
            image: EncodedImage::Jpeg(jpeg),
            source: format!("{}#{}", self.name, self.frame),
        }))
    }
}
