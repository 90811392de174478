//! An MJPEG file (concatenated JPEG images, as cameras record and `ffmpeg -f mjpeg`
//! writes): read in chunks and split into frames by walking the JPEG markers, so a frame
//! is never cut at an 0xFFD9 that is really part of a thumbnail or of a length field.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::{Captured, EncodedImage, FrameSource, Next};

/// No frame of a stream is larger; past this the file is not an MJPEG stream.
const MAX_FRAME: usize = 64 << 20;
const CHUNK: usize = 256 << 10;

/// Frames of an MJPEG file, `repeat` times.
pub struct MjpegSource {
    path: PathBuf,
    name: String,
    file: File,
    buf: Vec<u8>,
    eof: bool,
    frame: u64,
    pass: usize,
    repeat: usize,
}

impl MjpegSource {
    /// Opens the file; a missing one is an error naming it.
    pub fn open(path: &Path, repeat: usize) -> anyhow::Result<Self> {
        let file =
            File::open(path).map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            name: path
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            file,
            buf: Vec::new(),
            eof: false,
            frame: 0,
            pass: 1,
            repeat: repeat.max(1),
        })
    }

    fn fill(&mut self) -> anyhow::Result<()> {
        let start = self.buf.len();
        self.buf.resize(start + CHUNK, 0);
        let n = self
            .file
            .read(&mut self.buf[start..])
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", self.path.display()))?;
        self.buf.truncate(start + n);
        self.eof = n == 0;
        Ok(())
    }
}

impl FrameSource for MjpegSource {
    fn next(&mut self) -> anyhow::Result<Next> {
        loop {
            match find_frame(&self.buf) {
                Scan::Frame(start, end) => {
                    let jpeg = self.buf[start..end].to_vec();
                    self.buf.drain(..end);
                    self.frame += 1;
                    return Ok(Next::Frame(Captured {
                        image: EncodedImage::Jpeg(jpeg),
                        source: format!("{}#{}", self.name, self.frame),
                    }));
                }
                Scan::Incomplete if self.buf.len() > MAX_FRAME => anyhow::bail!(
                    "{}: a frame larger than {} MB; not an MJPEG stream",
                    self.path.display(),
                    MAX_FRAME >> 20
                ),
                Scan::Incomplete if !self.eof => self.fill()?,
                Scan::Incomplete => {
                    if self.frame == 0 {
                        anyhow::bail!("{}: no JPEG frame in the file", self.path.display());
                    }
                    if self.pass >= self.repeat {
                        return Ok(Next::Finished);
                    }
                    // Start the next pass (a trailing partial frame is ignored).
                    *self = Self {
                        pass: self.pass + 1,
                        frame: 0,
                        ..Self::open(&self.path, self.repeat)?
                    };
                }
            }
        }
    }
}

/// Where the next whole JPEG in a buffer is.
#[derive(Debug, PartialEq, Eq)]
enum Scan {
    /// Bytes `start..end` are one JPEG, SOI to EOI.
    Frame(usize, usize),
    /// No whole JPEG yet.
    Incomplete,
}

fn find_frame(buf: &[u8]) -> Scan {
    // Garbage before a frame (a partial one at the start of a recording) is skipped.
    let Some(start) = buf.windows(3).position(|w| w == [0xFF, 0xD8, 0xFF]) else {
        return Scan::Incomplete;
    };
    match jpeg_end(&buf[start..]) {
        Some(len) => Scan::Frame(start, start + len),
        None => Scan::Incomplete,
    }
}

/// Length of the JPEG starting at `data[0]` (SOI), or `None` when it is not complete.
fn jpeg_end(data: &[u8]) -> Option<usize> {
    let mut i = 2; // past SOI
    loop {
        // Markers may be preceded by fill bytes 0xFF.
        if *data.get(i)? != 0xFF {
            // Not a marker where one must be: resynchronise on the next one.
            i += 1;
            continue;
        }
        let mut m = *data.get(i + 1)?;
        while m == 0xFF {
            i += 1;
            m = *data.get(i + 1)?;
        }
        i += 2;
        match m {
            0xD9 => return Some(i),
            0x01 | 0xD0..=0xD7 => {}
            _ => {
                let len = usize::from(u16::from_be_bytes([*data.get(i)?, *data.get(i + 1)?]));
                i += len;
                if m == 0xDA {
                    // Entropy-coded data: ends at a marker that is not a stuffed 0xFF00
                    // or a restart marker.
                    loop {
                        if *data.get(i)? == 0xFF {
                            let next = *data.get(i + 1)?;
                            if next != 0x00 && !(0xD0..=0xD7).contains(&next) {
                                break;
                            }
                            i += 1;
                        }
                        i += 1;
                    }
                }
            }
        }
    }
}

/// Splits a whole MJPEG byte string into its JPEG frames (for tools and tests).
pub fn split_jpegs(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Scan::Frame(start, end) = find_frame(data) {
        out.push(&data[start..end]);
        data = &data[end..];
    }
    out
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use image::{ImageFormat, Rgb, RgbImage};

    use super::*;

    fn jpeg(shade: u8) -> Vec<u8> {
        let img = RgbImage::from_fn(48, 32, |x, y| Rgb([shade, (x * 5) as u8, (y * 7) as u8]));
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Jpeg).expect("encode");
        out.into_inner()
    }

    #[test]
    fn frames_are_split_at_their_real_end_and_garbage_is_skipped() {
        let frames: Vec<Vec<u8>> = (0..3).map(|i| jpeg(i * 80)).collect();
        let mut stream = vec![0x00, 0xD9, 0x17]; // a torn frame's tail
        for f in &frames {
            stream.extend_from_slice(f);
        }
        stream.extend_from_slice(&frames[0][..40]); // a torn last frame
        let split = split_jpegs(&stream);
        assert_eq!(split, frames.iter().map(Vec::as_slice).collect::<Vec<_>>());
        for f in split {
            image::load_from_memory(f).expect("each piece decodes");
        }
    }

    #[test]
    fn the_source_reads_frames_in_chunks_and_repeats() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("line.mjpeg");
        let frames: Vec<Vec<u8>> = (0..4).map(|i| jpeg(i * 60)).collect();
        std::fs::write(&path, frames.concat()).expect("write");
        let mut s = MjpegSource::open(&path, 2).expect("open");
        let mut got = Vec::new();
        while let Next::Frame(c) = s.next().expect("next") {
            got.push(c);
        }
        assert_eq!(got.len(), 8);
        assert_eq!(got[5].source, "line.mjpeg#2");
        assert_eq!(got[5].image, EncodedImage::Jpeg(frames[1].clone()));
    }

    #[test]
    fn a_file_without_frames_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("empty.mjpeg");
        std::fs::write(&path, b"not a video").expect("write");
        let err = MjpegSource::open(&path, 1)
            .expect("open")
            .next()
            .expect_err("no frames")
            .to_string();
        assert!(
            err.ends_with("empty.mjpeg: no JPEG frame in the file"),
            "{err}"
        );
    }
}
