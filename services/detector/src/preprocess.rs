//! Letterbox pre-processing: scale an RGB image to fit a square network input while keeping
//! its aspect ratio, centre it, and fill the border with grey (114), exactly as the
//! reference YOLO pipelines do, so that detections agree with theirs.

/// Grey level of the letterbox border.
pub const PAD_VALUE: u8 = 114;

/// Where an image landed inside the square input: enough to map boxes back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Letterbox {
    /// Source width in pixels.
    pub src_width: u32,
    /// Source height in pixels.
    pub src_height: u32,
    /// Scale factor from source to input pixels.
    pub gain: f32,
    /// Width of the resized image inside the input.
    pub resized_width: u32,
    /// Height of the resized image inside the input.
    pub resized_height: u32,
    /// Left border in input pixels.
    pub left: u32,
    /// Top border in input pixels.
    pub top: u32,
    /// Left offset used to map boxes back (the reference computes it from the unrounded size).
    pub unpad_x: f32,
    /// Top offset used to map boxes back.
    pub unpad_y: f32,
}

/// Python's `round`: halves go to the even neighbour. The references round this way, and
/// matching them keeps the borders identical to the pixel.
fn py_round(x: f64) -> f64 {
    x.round_ties_even()
}

impl Letterbox {
    /// Geometry of a `width` x `height` image letterboxed into a `size` square.
    pub fn new(width: u32, height: u32, size: u32) -> Self {
        let (w, h, s) = (f64::from(width), f64::from(height), f64::from(size));
        let gain = (s / h).min(s / w);
        let resized_width = (py_round(w * gain) as u32).clamp(1, size);
        let resized_height = (py_round(h * gain) as u32).clamp(1, size);
        let dw = f64::from(size - resized_width) / 2.0;
        let dh = f64::from(size - resized_height) / 2.0;
        Self {
            src_width: width,
            src_height: height,
            gain: gain as f32,
            resized_width,
            resized_height,
            left: py_round(dw - 0.1) as u32,
            top: py_round(dh - 0.1) as u32,
            unpad_x: py_round((s - w * gain) / 2.0 - 0.1) as f32,
            unpad_y: py_round((s - h * gain) / 2.0 - 0.1) as f32,
        }
    }

    /// Maps a box from input pixels back to source pixels, clipped to the image.
    pub fn to_source(&self, b: [f32; 4]) -> [f32; 4] {
        let (w, h) = (self.src_width as f32, self.src_height as f32);
        let x = |v: f32| ((v - self.unpad_x) / self.gain).clamp(0.0, w);
        let y = |v: f32| ((v - self.unpad_y) / self.gain).clamp(0.0, h);
        [x(b[0]), y(b[1]), x(b[2]), y(b[3])]
    }
}

/// Letterboxes interleaved RGB8 pixels into `out`, a planar (CHW) `3 x size x size` buffer of
/// values in 0..=1. Returns the geometry.
///
/// Bilinear (half-pixel centres, as OpenCV's `INTER_LINEAR`), each output row blended from
/// two horizontally resampled source rows that are kept while consecutive output rows share
/// them; values are rounded to 8 bits, as the references' uint8 resize does, then
/// normalised through a 256-entry table. Only the border is filled with grey.
///
/// # Panics
/// Never for valid arguments; `rgb` must hold `width * height * 3` bytes and `out`
/// `3 * size * size` floats, which the caller ([`crate::Detector`]) guarantees.
pub fn letterbox_into(
    rgb: &[u8],
    width: u32,
    height: u32,
    size: u32,
    out: &mut [f32],
) -> Letterbox {
    let geo = Letterbox::new(width, height, size);
    let s = size as usize;
    debug_assert_eq!(rgb.len(), width as usize * height as usize * 3);
    debug_assert_eq!(out.len(), 3 * s * s);
    let (rw, rh) = (geo.resized_width as usize, geo.resized_height as usize);
    let (left, top) = (geo.left as usize, geo.top as usize);
    fill_border(out, s, (left, top), (rw, rh));

    let normalise: [f32; 256] = std::array::from_fn(|v| v as f32 / 255.0);
    let xmap = axis_map(width as usize, rw);
    let ymap = axis_map(height as usize, rh);
    let sw = width as usize * 3;
    let source_row = |y: usize| &rgb[y * sw..(y + 1) * sw];
    // Horizontally resampled source rows, tagged with the source row they hold.
    let mut upper = (usize::MAX, vec![0f32; rw * 3]);
    let mut lower = (usize::MAX, vec![0f32; rw * 3]);
    let (red, rest) = out.split_at_mut(s * s);
    let (green, blue) = rest.split_at_mut(s * s);
    for (dy, &(y0, y1, fy)) in ymap.iter().enumerate() {
        if upper.0 != y0 {
            if lower.0 == y0 {
                std::mem::swap(&mut upper, &mut lower);
            } else {
                horizontal(source_row(y0), &xmap, &mut upper.1);
                upper.0 = y0;
            }
        }
        if lower.0 != y1 {
            horizontal(source_row(y1), &xmap, &mut lower.1);
            lower.0 = y1;
        }
        let at = (top + dy) * s + left;
        let planes = (
            &mut red[at..at + rw],
            &mut green[at..at + rw],
            &mut blue[at..at + rw],
        );
        let pixels = upper.1.chunks_exact(3).zip(lower.1.chunks_exact(3));
        for (((u, l), r), (g, b)) in pixels
            .zip(planes.0.iter_mut())
            .zip(planes.1.iter_mut().zip(planes.2.iter_mut()))
        {
            // Round half up: the blend of two values in 0..=255 is never negative.
            let q = |c: usize| normalise[((u[c] + (l[c] - u[c]) * fy) + 0.5) as u8 as usize];
            (*r, *g, *b) = (q(0), q(1), q(2));
        }
    }
    geo
}

/// Fills the grey border around the `rw x rh` image placed at `(left, top)`, in each plane.
fn fill_border(out: &mut [f32], s: usize, (left, top): (usize, usize), (rw, rh): (usize, usize)) {
    let pad = f32::from(PAD_VALUE) / 255.0;
    for plane in out.chunks_exact_mut(s * s) {
        plane[..top * s].fill(pad);
        plane[(top + rh) * s..].fill(pad);
        for row in plane[top * s..(top + rh) * s].chunks_exact_mut(s) {
            row[..left].fill(pad);
            row[left + rw..].fill(pad);
        }
    }
}

/// The deterministic planar input the golden tests, benchmarks and `vfctl profile` share:
/// `batch` copies of `3 x size x size` values `((7x + 13y + 29c) mod 256) / 255`.
pub fn test_pattern(batch: usize, size: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(batch * 3 * size * size);
    for _ in 0..batch {
        for c in 0..3 {
            for y in 0..size {
                for x in 0..size {
                    v.push(((x * 7 + y * 13 + c * 29) % 256) as f32 / 255.0);
                }
            }
        }
    }
    v
}

/// For each destination index: the two source indices and the weight of the second, with
/// half-pixel centres and edge clamping (OpenCV's `INTER_LINEAR` convention).
fn axis_map(src: usize, dst: usize) -> Vec<(usize, usize, f32)> {
    let scale = src as f64 / dst as f64;
    (0..dst)
        .map(|d| {
            let f = ((d as f64 + 0.5) * scale - 0.5).max(0.0);
            let i0 = (f.floor() as usize).min(src - 1);
            let i1 = (i0 + 1).min(src - 1);
            let w = if i0 == src - 1 {
                0.0
            } else {
                (f - i0 as f64) as f32
            };
            (i0, i1, w)
        })
        .collect()
}

fn horizontal(src_row: &[u8], xmap: &[(usize, usize, f32)], out: &mut [f32]) {
    for (px, &(x0, x1, fx)) in out.chunks_exact_mut(3).zip(xmap) {
        let (a, b) = (&src_row[x0 * 3..x0 * 3 + 3], &src_row[x1 * 3..x1 * 3 + 3]);
        for c in 0..3 {
            let (a, b) = (f32::from(a[c]), f32::from(b[c]));
            px[c] = a + (b - a) * fx;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portrait_image_is_centred_with_side_borders() {
        // bus.jpg is 810x1080
        let g = Letterbox::new(810, 1080, 640);
        assert_eq!((g.resized_width, g.resized_height), (480, 640));
        assert_eq!((g.left, g.top), (80, 0));
        assert_eq!((g.unpad_x, g.unpad_y), (80.0, 0.0));
    }

    #[test]
    fn odd_borders_round_like_the_reference() {
        // 1280x720 -> 640x360, 140 px of border split 140/140; 1000x999 -> 640x639 with
        // a one-pixel border that goes to the bottom (round(0.4) = 0, round(0.6) = 1).
        let g = Letterbox::new(1280, 720, 640);
        assert_eq!((g.resized_width, g.resized_height, g.top), (640, 360, 140));
        let g = Letterbox::new(1000, 999, 640);
        assert_eq!((g.resized_height, g.top), (639, 0));
    }

    #[test]
    fn tiny_and_huge_images_stay_in_bounds() {
        let g = Letterbox::new(1, 1, 640);
        assert_eq!(
            (g.resized_width, g.resized_height, g.left, g.top),
            (640, 640, 0, 0)
        );
        let g = Letterbox::new(100_000, 1, 640);
        assert_eq!((g.resized_width, g.resized_height), (640, 1));
        assert_eq!(g.top, 319);
        let mut out = vec![0f32; 3 * 64 * 64];
        letterbox_into(&[255, 0, 0], 1, 1, 64, &mut out);
        assert!(out[..64 * 64].iter().all(|&v| v == 1.0));
        assert!(out[64 * 64..].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn border_is_grey_and_content_is_planar_rgb() {
        // A 2x4 (w x h) image into 8: scaled 2x to 4x8, borders of 2 left and right.
        let mut rgb = vec![0u8; 2 * 4 * 3];
        for px in rgb.chunks_exact_mut(3) {
            px.copy_from_slice(&[10, 20, 30]);
        }
        let mut out = vec![0f32; 3 * 8 * 8];
        let g = letterbox_into(&rgb, 2, 4, 8, &mut out);
        assert_eq!((g.left, g.top, g.resized_width), (2, 0, 4));
        let at = |c: usize, y: usize, x: usize| (out[c * 64 + y * 8 + x] * 255.0).round() as u8;
        assert_eq!(at(0, 0, 0), PAD_VALUE);
        assert_eq!(at(2, 7, 7), PAD_VALUE);
        assert_eq!((at(0, 3, 3), at(1, 3, 3), at(2, 3, 3)), (10, 20, 30));
    }

    #[test]
    fn downscale_interpolates_between_neighbours() {
        // One row 0, 100, 200, 250 halved: samples at 0.5 and 2.5 -> 50 and 225.
        let m = axis_map(4, 2);
        assert_eq!(m, vec![(0, 1, 0.5), (2, 3, 0.5)]);
        let mut out = vec![0f32; 6];
        let row = [0, 0, 0, 100, 100, 100, 200, 200, 200, 250, 250, 250];
        horizontal(&row, &m, &mut out);
        assert_eq!(out[0], 50.0);
        assert_eq!(out[3], 225.0);
    }

    /// The row cache and the border fill against a direct per-pixel bilinear resize, for
    /// downscales, upscales and odd sizes in both orientations.
    #[test]
    fn matches_a_direct_bilinear_resize() {
        let mut state = 0x1234_5678_9abc_def1u64;
        for (w, h, size) in [
            (37, 23, 32),
            (23, 37, 32),
            (5, 3, 16),
            (200, 120, 64),
            (9, 9, 9),
        ] {
            let rgb: Vec<u8> = (0..w * h * 3)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state % 256) as u8
                })
                .collect();
            let s = size as usize;
            let mut out = vec![-1f32; 3 * s * s];
            let g = letterbox_into(&rgb, w, h, size, &mut out);
            let mut inexact = 0;
            let (xm, ym) = (
                axis_map(w as usize, g.resized_width as usize),
                axis_map(h as usize, g.resized_height as usize),
            );
            let px = |x: usize, y: usize, c: usize| f32::from(rgb[(y * w as usize + x) * 3 + c]);
            for c in 0..3 {
                for y in 0..s {
                    for x in 0..s {
                        let got = out[c * s * s + y * s + x];
                        let (ix, iy) = (
                            x.wrapping_sub(g.left as usize),
                            y.wrapping_sub(g.top as usize),
                        );
                        let want = if ix < xm.len() && iy < ym.len() {
                            let ((x0, x1, fx), (y0, y1, fy)) = (xm[ix], ym[iy]);
                            let top = px(x0, y0, c) + (px(x1, y0, c) - px(x0, y0, c)) * fx;
                            let bot = px(x0, y1, c) + (px(x1, y1, c) - px(x0, y1, c)) * fx;
                            (top + (bot - top) * fy).round() / 255.0
                        } else {
                            f32::from(PAD_VALUE) / 255.0
                        };
                        // Rounding half up and `round` differ only on exact halves.
                        assert!(
                            (got - want).abs() <= 1.0 / 255.0 + 1e-6,
                            "{w}x{h} into {size}: ({c}, {y}, {x}) = {got}, want {want}"
                        );
                        inexact += usize::from(got != want);
                    }
                }
            }
            assert!(
                inexact * 100 <= s * s * 3,
                "{w}x{h}: {inexact} values off by one"
            );
        }
    }

    #[test]
    fn boxes_map_back_to_source_pixels_and_clip() {
        let g = Letterbox::new(810, 1080, 640);
        let b = g.to_source([80.0, 0.0, 560.0, 640.0]);
        assert!((b[0]).abs() < 1e-3 && (b[2] - 810.0).abs() < 1e-3);
        assert!((b[3] - 1080.0).abs() < 1e-3);
        let clipped = g.to_source([0.0, -10.0, 700.0, 700.0]);
        assert_eq!(clipped, [0.0, 0.0, 810.0, 1080.0]);
    }
}
