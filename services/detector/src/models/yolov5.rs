//! YOLOv5 (v6.x): CSP-darknet backbone with C3 blocks and SPPF, a PAN neck, and the
//! anchor-based head. Module names follow the reference checkpoint (`model.<index>.<part>`).

use candle_core::{Device, Module, Tensor};

use super::common::{
    scale_channels, scale_depth, sigmoid, upsample2, Conv2d, ConvBnSilu, Sppf, C3,
};
use crate::error::{Error, Result};
use crate::manifest::Scale;
use crate::weights::Weights;

const STRIDES: [usize; 3] = [8, 16, 32];

/// (depth, width) per scale, from the reference `yolov5*.yaml` files.
fn multiples(scale: Scale) -> (f64, f64) {
    match scale {
        Scale::N => (0.33, 0.25),
        Scale::S => (0.33, 0.50),
        Scale::M => (0.67, 0.75),
        Scale::L => (1.00, 1.00),
        Scale::X => (1.33, 1.25),
    }
}

/// The YOLOv5 network.
#[derive(Debug, Clone)]
pub struct YoloV5 {
    stem: (ConvBnSilu, ConvBnSilu),
    c3_2: C3,
    down3: ConvBnSilu,
    c3_4: C3,
    down5: ConvBnSilu,
    c3_6: C3,
    down7: ConvBnSilu,
    c3_8: C3,
    sppf: Sppf,
    lateral10: ConvBnSilu,
    top_down_p4: C3,
    lateral14: ConvBnSilu,
    top_down_p3: C3,
    down_p3: ConvBnSilu,
    bottom_up_p4: C3,
    down_p4: ConvBnSilu,
    bottom_up_p5: C3,
    head: Vec<Conv2d>,
    /// Anchor sizes per level as `[1, anchors, 2, 1]` tensors in input pixels.
    anchors: Vec<Tensor>,
    per_level: usize,
    outputs: usize,
}

impl YoloV5 {
    /// Builds the network for `scale`, `classes` and the anchor sets (one list per level).
    pub fn load(
        weights: &Weights,
        scale: Scale,
        classes: usize,
        anchors: Vec<Vec<[f32; 2]>>,
    ) -> Result<Self> {
        if anchors.len() != STRIDES.len() || anchors.iter().any(|a| a.len() != anchors[0].len()) {
            return Err(Error::WeightMismatch {
                family: "yolov5".into(),
                reason: format!("need 3 equal anchor levels, got {anchors:?}"),
            });
        }
        let (depth, width) = multiples(scale);
        let ch = |c: usize| scale_channels(c, width, usize::MAX);
        let n = |r: usize| scale_depth(r, depth);
        let m = |i: usize| weights.pp("model").pp(i);
        let (c64, c128, c256, c512, c1024) = (ch(64), ch(128), ch(256), ch(512), ch(1024));
        let per_level = anchors[0].len();
        let outputs = 5 + classes;

        let stem = (
            ConvBnSilu::load(&m(0), 3, c64, 6, 2, 2)?,
            ConvBnSilu::load_auto(&m(1), c64, c128, 3, 2)?,
        );
        let c3_2 = C3::load(&m(2), c128, c128, n(3), true)?;
        let down3 = ConvBnSilu::load_auto(&m(3), c128, c256, 3, 2)?;
        let c3_4 = C3::load(&m(4), c256, c256, n(6), true)?;
        let down5 = ConvBnSilu::load_auto(&m(5), c256, c512, 3, 2)?;
        let c3_6 = C3::load(&m(6), c512, c512, n(9), true)?;
        let down7 = ConvBnSilu::load_auto(&m(7), c512, c1024, 3, 2)?;
        let c3_8 = C3::load(&m(8), c1024, c1024, n(3), true)?;
        let sppf = Sppf::load(&m(9), c1024, c1024, 5)?;
        let lateral10 = ConvBnSilu::load_auto(&m(10), c1024, c512, 1, 1)?;
        let top_down_p4 = C3::load(&m(13), c512 + c512, c512, n(3), false)?;
        let lateral14 = ConvBnSilu::load_auto(&m(14), c512, c256, 1, 1)?;
        let top_down_p3 = C3::load(&m(17), c256 + c256, c256, n(3), false)?;
        let down_p3 = ConvBnSilu::load_auto(&m(18), c256, c256, 3, 2)?;
        let bottom_up_p4 = C3::load(&m(20), c256 + c256, c512, n(3), false)?;
        let down_p4 = ConvBnSilu::load_auto(&m(21), c512, c512, 3, 2)?;
        let bottom_up_p5 = C3::load(&m(23), c512 + c512, c1024, n(3), false)?;
        let head = [c256, c512, c1024]
            .iter()
            .enumerate()
            .map(|(i, &c)| Conv2d::load(&m(24).pp("m").pp(i), c, per_level * outputs, 1, 1, 0))
            .collect::<Result<_>>()?;
        let anchors = anchors
            .iter()
            .map(|level| {
                let flat: Vec<f32> = level.iter().flat_map(|wh| wh.iter().copied()).collect();
                Tensor::from_vec(flat, (1, per_level, 2, 1), weights.device())
            })
            .collect::<candle_core::Result<_>>()?;
        Ok(Self {
            stem,
            c3_2,
            down3,
            c3_4,
            down5,
            c3_6,
            down7,
            c3_8,
            sppf,
            lateral10,
            top_down_p4,
            lateral14,
            top_down_p3,
            down_p3,
            bottom_up_p4,
            down_p4,
            bottom_up_p5,
            head,
            anchors,
            per_level,
            outputs,
        })
    }

    /// `[batch, 3, h, w]` in 0..=1 to `[batch, anchors, 5 + classes]`: box centre x, y,
    /// width, height in input pixels, objectness, then per-class probabilities.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let x = self.stem.1.forward(&self.stem.0.forward(xs)?)?;
        let x = self.c3_2.forward(&x)?;
        let p3 = self.c3_4.forward(&self.down3.forward(&x)?)?;
        let p4 = self.c3_6.forward(&self.down5.forward(&p3)?)?;
        let p5 = self
            .sppf
            .forward(&self.c3_8.forward(&self.down7.forward(&p4)?)?)?;

        let l10 = self.lateral10.forward(&p5)?;
        let t4 = self
            .top_down_p4
            .forward(&Tensor::cat(&[&upsample2(&l10)?, &p4], 1)?)?;
        let l14 = self.lateral14.forward(&t4)?;
        let out3 = self
            .top_down_p3
            .forward(&Tensor::cat(&[&upsample2(&l14)?, &p3], 1)?)?;
        let out4 = self
            .bottom_up_p4
            .forward(&Tensor::cat(&[&self.down_p3.forward(&out3)?, &l14], 1)?)?;
        let out5 = self
            .bottom_up_p5
            .forward(&Tensor::cat(&[&self.down_p4.forward(&out4)?, &l10], 1)?)?;

        let levels = [out3, out4, out5]
            .iter()
            .enumerate()
            .map(|(i, x)| self.decode_level(i, x))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(&levels, 1)?)
    }

    fn decode_level(&self, level: usize, x: &Tensor) -> Result<Tensor> {
        let raw = self.head[level].forward(x)?;
        let (batch, _, h, w) = raw.dims4()?;
        let (na, no) = (self.per_level, self.outputs);
        let y = sigmoid(&raw.reshape((batch, na, no, h * w))?)?;
        let stride = STRIDES[level] as f64;
        // Centre: (2 * sigmoid - 0.5 + cell) * stride. Size: (2 * sigmoid)^2 * anchor.
        let xy = y
            .narrow(2, 0, 2)?
            .affine(2.0, -0.5)?
            .broadcast_add(&cell_offsets(h, w, x.device())?)?
            .affine(stride, 0.0)?;
        let wh = y
            .narrow(2, 2, 2)?
            .affine(2.0, 0.0)?
            .sqr()?
            .broadcast_mul(&self.anchors[level])?;
        let rest = y.narrow(2, 4, no - 4)?;
        let decoded = Tensor::cat(&[xy, wh, rest], 2)?; // [B, na, no, hw]
        Ok(decoded
            .transpose(2, 3)?
            .contiguous()?
            .reshape((batch, na * h * w, no))?)
    }
}

/// Integer cell coordinates `[1, 1, 2, h*w]`: x then y.
fn cell_offsets(h: usize, w: usize, device: &Device) -> Result<Tensor> {
    let mut xy = Vec::with_capacity(2 * h * w);
    xy.extend((0..h).flat_map(|_| (0..w).map(|x| x as f32)));
    xy.extend((0..h).flat_map(|y| (0..w).map(move |_| y as f32)));
    Ok(Tensor::from_vec(xy, (1, 1, 2, h * w), device)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::yolov5_default_anchors;
    use candle_core::DType;

    #[test]
    fn builds_and_outputs_one_row_per_anchor_box() {
        let w = Weights::recording("yolov5");
        let model = YoloV5::load(&w, Scale::N, 80, yolov5_default_anchors()).unwrap();
        let x = Tensor::zeros((2, 3, 64, 64), DType::F32, &Device::Cpu).unwrap();
        let y = model.forward(&x).unwrap();
        assert_eq!(y.dims(), &[2, 3 * 84, 85]);
    }

    #[test]
    fn anchor_decode_matches_the_reference_formula() {
        // All-zero weights: sigmoid(0) = 0.5, so centre = (0.5 + cell) * stride and size =
        // anchor exactly.
        let w = Weights::recording("yolov5");
        let model = YoloV5::load(&w, Scale::N, 1, yolov5_default_anchors()).unwrap();
        let x = Tensor::zeros((1, 3, 32, 32), DType::F32, &Device::Cpu).unwrap();
        let y: Vec<Vec<f32>> = model
            .forward(&x)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec2()
            .unwrap();
        // Level P3 is 4x4; row 5 is anchor 0, cell (x=1, y=1).
        assert_eq!(&y[5][..4], &[12.0, 12.0, 10.0, 13.0]);
        // Row 16 + 2 is anchor 1, cell (2, 0).
        assert_eq!(&y[18][..4], &[20.0, 4.0, 16.0, 30.0]);
        assert_eq!(y[0][4], 0.5);
    }

    #[test]
    fn checkpoint_names_follow_the_reference() {
        let w = Weights::recording("yolov5");
        YoloV5::load(&w, Scale::S, 80, yolov5_default_anchors()).unwrap();
        let specs = w.recorded();
        let convs: Vec<_> = specs.iter().filter(|s| s.dims.len() == 4).collect();
        // 57 convolutions in the body plus three head convolutions.
        assert_eq!(convs.len(), 60);
        assert_eq!(convs[0].name, "model.0.conv.weight");
        assert_eq!(convs[0].dims, vec![32, 3, 6, 6]);
        assert_eq!(convs[59].name, "model.24.m.2.weight");
        assert_eq!(convs[59].dims, vec![255, 512, 1, 1]);
    }
}
