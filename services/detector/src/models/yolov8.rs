//! YOLOv8 (Ultralytics): CSP-darknet backbone with C2f blocks, a PAN neck, and the
//! anchor-free decoupled head with distribution focal loss (DFL) box regression.
//! Module names follow the Ultralytics checkpoint (`model.<index>.<part>`), so a state dict
//! or an ONNX export maps one to one.

use candle_core::{DType, Device, Module, Tensor};

use super::common::{
    scale_channels, scale_depth, sigmoid, upsample2, C2f, Conv2d, ConvBnSilu, Sppf,
};
use crate::error::Result;
use crate::manifest::Scale;
use crate::weights::Weights;

/// Bins of the DFL box distribution.
pub const REG_MAX: usize = 16;
const STRIDES: [usize; 3] = [8, 16, 32];

/// (depth, width, max channels) per scale, from the reference `yolov8.yaml`.
fn multiples(scale: Scale) -> (f64, f64, usize) {
    match scale {
        Scale::N => (0.33, 0.25, 1024),
        Scale::S => (0.33, 0.50, 1024),
        Scale::M => (0.67, 0.75, 768),
        Scale::L => (1.00, 1.00, 512),
        Scale::X => (1.00, 1.25, 512),
    }
}

/// Box and class branches for one detection level.
#[derive(Debug, Clone)]
struct HeadLevel {
    box_convs: (ConvBnSilu, ConvBnSilu, Conv2d),
    cls_convs: (ConvBnSilu, ConvBnSilu, Conv2d),
}

/// The YOLOv8 network.
#[derive(Debug, Clone)]
pub struct YoloV8 {
    stem: (ConvBnSilu, ConvBnSilu),
    c2_3: C2f,
    down3: ConvBnSilu,
    c2_4: C2f,
    down5: ConvBnSilu,
    c2_6: C2f,
    down7: ConvBnSilu,
    c2_8: C2f,
    sppf: Sppf,
    top_down_p4: C2f,
    top_down_p3: C2f,
    down_p3: ConvBnSilu,
    bottom_up_p4: C2f,
    down_p4: ConvBnSilu,
    bottom_up_p5: C2f,
    head: Vec<HeadLevel>,
    classes: usize,
}

impl YoloV8 {
    /// Builds the network for `scale` with `classes` outputs from `weights`.
    pub fn load(weights: &Weights, scale: Scale, classes: usize) -> Result<Self> {
        let (depth, width, max_c) = multiples(scale);
        let ch = |c: usize| scale_channels(c, width, max_c);
        let n = |r: usize| scale_depth(r, depth);
        let m = |i: usize| weights.pp("model").pp(i);
        let (c64, c128, c256, c512, c1024) = (ch(64), ch(128), ch(256), ch(512), ch(1024));

        let stem = (
            ConvBnSilu::load_auto(&m(0), 3, c64, 3, 2)?,
            ConvBnSilu::load_auto(&m(1), c64, c128, 3, 2)?,
        );
        let c2_3 = C2f::load(&m(2), c128, c128, n(3), true)?;
        let down3 = ConvBnSilu::load_auto(&m(3), c128, c256, 3, 2)?;
        let c2_4 = C2f::load(&m(4), c256, c256, n(6), true)?;
        let down5 = ConvBnSilu::load_auto(&m(5), c256, c512, 3, 2)?;
        let c2_6 = C2f::load(&m(6), c512, c512, n(6), true)?;
        let down7 = ConvBnSilu::load_auto(&m(7), c512, c1024, 3, 2)?;
        let c2_8 = C2f::load(&m(8), c1024, c1024, n(3), true)?;
        let sppf = Sppf::load(&m(9), c1024, c1024, 5)?;
        // Neck: layers 10, 11, 13, 14, 16, 17, 19, 20 are upsample/concat (no weights).
        let top_down_p4 = C2f::load(&m(12), c1024 + c512, c512, n(3), false)?;
        let top_down_p3 = C2f::load(&m(15), c512 + c256, c256, n(3), false)?;
        let down_p3 = ConvBnSilu::load_auto(&m(16), c256, c256, 3, 2)?;
        let bottom_up_p4 = C2f::load(&m(18), c256 + c512, c512, n(3), false)?;
        let down_p4 = ConvBnSilu::load_auto(&m(19), c512, c512, 3, 2)?;
        let bottom_up_p5 = C2f::load(&m(21), c512 + c1024, c1024, n(3), false)?;

        let level_channels = [c256, c512, c1024];
        let box_c = (level_channels[0] / 4).max(REG_MAX * 4).max(16);
        let cls_c = level_channels[0].max(classes.min(100));
        let detect = m(22);
        let head = level_channels
            .iter()
            .enumerate()
            .map(|(i, &c)| -> Result<HeadLevel> {
                let b = detect.pp("cv2").pp(i);
                let k = detect.pp("cv3").pp(i);
                Ok(HeadLevel {
                    box_convs: (
                        ConvBnSilu::load_auto(&b.pp(0), c, box_c, 3, 1)?,
                        ConvBnSilu::load_auto(&b.pp(1), box_c, box_c, 3, 1)?,
                        Conv2d::load(&b.pp(2), box_c, 4 * REG_MAX, 1, 1, 0)?,
                    ),
                    cls_convs: (
                        ConvBnSilu::load_auto(&k.pp(0), c, cls_c, 3, 1)?,
                        ConvBnSilu::load_auto(&k.pp(1), cls_c, cls_c, 3, 1)?,
                        Conv2d::load(&k.pp(2), cls_c, classes, 1, 1, 0)?,
                    ),
                })
            })
            .collect::<Result<_>>()?;
        // The DFL weights are the fixed bin indices 0..16; exports carry them but they
        // are not learned, so they are not read.
        Ok(Self {
            stem,
            c2_3,
            down3,
            c2_4,
            down5,
            c2_6,
            down7,
            c2_8,
            sppf,
            top_down_p4,
            top_down_p3,
            down_p3,
            bottom_up_p4,
            down_p4,
            bottom_up_p5,
            head,
            classes,
        })
    }

    /// `[batch, 3, h, w]` in 0..=1 to `[batch, 4 + classes, anchors]`: rows are box centre
    /// x, y, width, height in input pixels, then per-class probabilities.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let x = self.stem.1.forward(&self.stem.0.forward(xs)?)?;
        let x = self.c2_3.forward(&x)?;
        let p3 = self.c2_4.forward(&self.down3.forward(&x)?)?;
        let p4 = self.c2_6.forward(&self.down5.forward(&p3)?)?;
        let p5 = self
            .sppf
            .forward(&self.c2_8.forward(&self.down7.forward(&p4)?)?)?;

        let t4 = self
            .top_down_p4
            .forward(&Tensor::cat(&[&upsample2(&p5)?, &p4], 1)?)?;
        let out3 = self
            .top_down_p3
            .forward(&Tensor::cat(&[&upsample2(&t4)?, &p3], 1)?)?;
        let out4 = self
            .bottom_up_p4
            .forward(&Tensor::cat(&[&self.down_p3.forward(&out3)?, &t4], 1)?)?;
        let out5 = self
            .bottom_up_p5
            .forward(&Tensor::cat(&[&self.down_p4.forward(&out4)?, &p5], 1)?)?;

        self.decode(&[out3, out4, out5])
    }

    fn decode(&self, features: &[Tensor]) -> Result<Tensor> {
        let batch = features[0].dim(0)?;
        let mut boxes = Vec::with_capacity(3);
        let mut scores = Vec::with_capacity(3);
        let mut anchor_xy = Vec::with_capacity(3);
        let mut anchor_stride = Vec::with_capacity(3);
        for ((level, x), &stride) in self.head.iter().zip(features).zip(&STRIDES) {
            let (_, _, h, w) = x.dims4()?;
            let (b0, b1, b2) = &level.box_convs;
            let (c0, c1, c2) = &level.cls_convs;
            let dist = b2.forward(&b1.forward(&b0.forward(x)?)?)?;
            let cls = c2.forward(&c1.forward(&c0.forward(x)?)?)?;
            boxes.push(dist.reshape((batch, 4 * REG_MAX, h * w))?);
            scores.push(cls.reshape((batch, self.classes, h * w))?);
            let (xy, s) = grid(h, w, stride, x.device())?;
            anchor_xy.push(xy);
            anchor_stride.push(s);
        }
        let dist = Tensor::cat(&boxes, 2)?;
        let scores = sigmoid(&Tensor::cat(&scores, 2)?)?;
        let anchors = Tensor::cat(&anchor_xy, 1)?; // [2, A] in grid units
        let strides = Tensor::cat(&anchor_stride, 1)?; // [1, A]
        let a = dist.dim(2)?;

        // DFL: the expected value of a softmax over REG_MAX bins per box side.
        let probs = candle_nn::ops::softmax(&dist.reshape((batch, 4, REG_MAX, a))?, 2)?;
        let bins =
            Tensor::arange(0f32, REG_MAX as f32, dist.device())?.reshape((1, 1, REG_MAX, 1))?;
        let ltrb = probs.broadcast_mul(&bins)?.sum(2)?; // [B, 4, A]

        let lt = ltrb.narrow(1, 0, 2)?;
        let rb = ltrb.narrow(1, 2, 2)?;
        let anchors = anchors.unsqueeze(0)?;
        let x1y1 = anchors.broadcast_sub(&lt)?;
        let x2y2 = anchors.broadcast_add(&rb)?;
        let centre = ((&x1y1 + &x2y2)? * 0.5)?;
        let wh = (x2y2 - x1y1)?;
        let xywh = Tensor::cat(&[centre, wh], 1)?.broadcast_mul(&strides.unsqueeze(0)?)?;
        Ok(Tensor::cat(&[xywh, scores], 1)?)
    }
}

/// Grid-cell centres `[2, h*w]` (x then y, in cells) and their stride `[1, h*w]`.
fn grid(h: usize, w: usize, stride: usize, device: &Device) -> Result<(Tensor, Tensor)> {
    let mut xy = Vec::with_capacity(2 * h * w);
    xy.extend((0..h).flat_map(|_| (0..w).map(|x| x as f32 + 0.5)));
    xy.extend((0..h).flat_map(|y| (0..w).map(move |_| y as f32 + 0.5)));
    let xy = Tensor::from_vec(xy, (2, h * w), device)?;
    let s = Tensor::full(stride as f32, (1, h * w), device)?.to_dtype(DType::F32)?;
    Ok((xy, s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scale_builds_and_outputs_one_row_per_anchor() {
        for scale in [Scale::N, Scale::S] {
            let w = Weights::recording("yolov8");
            let model = YoloV8::load(&w, scale, 3).unwrap();
            let x = Tensor::zeros((2, 3, 64, 64), DType::F32, &Device::Cpu).unwrap();
            let y = model.forward(&x).unwrap();
            // 8x8 + 4x4 + 2x2 anchors for a 64x64 input
            assert_eq!(y.dims(), &[2, 4 + 3, 84]);
        }
    }

    #[test]
    fn checkpoint_names_follow_ultralytics() {
        let w = Weights::recording("yolov8");
        YoloV8::load(&w, Scale::S, 2).unwrap();
        let specs = w.recorded();
        assert_eq!(specs[0].name, "model.0.conv.weight");
        assert_eq!(specs[0].dims, vec![32, 3, 3, 3]);
        let last = specs.last().unwrap();
        assert_eq!(last.name, "model.22.cv3.2.2.bias");
        assert_eq!(last.dims, vec![2]);
        // C2f in layer 2 of v8s has one bottleneck: cv2 takes (2 + 1) * 32 channels.
        let cv2 = specs
            .iter()
            .find(|s| s.name == "model.2.cv2.conv.weight")
            .unwrap();
        assert_eq!(cv2.dims, vec![64, 96, 1, 1]);
    }

    #[test]
    fn zero_network_decodes_boxes_around_cell_centres() {
        // With all-zero weights every DFL bin is equally likely, so each side is the mean
        // bin (7.5 cells) and the centre is the cell centre.
        let w = Weights::recording("yolov8");
        let model = YoloV8::load(&w, Scale::N, 1).unwrap();
        let x = Tensor::zeros((1, 3, 32, 32), DType::F32, &Device::Cpu).unwrap();
        let y = model.forward(&x).unwrap().squeeze(0).unwrap();
        let rows: Vec<Vec<f32>> = y.to_vec2().unwrap();
        assert_eq!(rows[0][0], 4.0); // first P3 cell centre x: 0.5 * 8
        assert_eq!(rows[2][0], 15.0 * 8.0); // width: (7.5 + 7.5) * 8
        assert_eq!(rows[4][0], 0.5); // sigmoid(0)
    }
}
