//! Building blocks shared by YOLOv5 and YOLOv8: convolution with batch-norm folded in,
//! bottlenecks, CSP blocks and spatial pyramid pooling.

use candle_core::{Module, Tensor, D};

use super::cpu_conv::{Activation, CpuConv};
use crate::error::Result;
use crate::weights::Weights;

/// Batch-norm epsilon of both reference implementations.
const BN_EPS: f64 = 1e-3;

/// Channel count scaled by the width multiple, rounded up to a multiple of 8, as the
/// reference model builders do.
pub fn scale_channels(channels: usize, width: f64, max_channels: usize) -> usize {
    let c = channels.min(max_channels) as f64 * width;
    ((c / 8.0).ceil() as usize) * 8
}

/// Block repeat count scaled by the depth multiple (never below one).
pub fn scale_depth(repeats: usize, depth: f64) -> usize {
    if repeats > 1 {
        ((repeats as f64 * depth).round() as usize).max(1)
    } else {
        repeats
    }
}

/// A 2-D convolution with bias and an optional SiLU. On the CPU it runs through
/// [`CpuConv`] (kernel pre-packed, bias and activation fused); on a GPU through candle's
/// convolution followed by the bias and activation.
#[derive(Debug, Clone)]
pub struct Conv2d {
    run: ConvImpl,
}

#[derive(Debug, Clone)]
enum ConvImpl {
    Cpu(CpuConv),
    Device {
        weight: Tensor,
        bias: Tensor,
        stride: usize,
        padding: usize,
        activation: Activation,
    },
}

impl Conv2d {
    /// Loads `weight` `[c2, c1, k, k]` and `bias` `[c2]`, with no activation.
    pub fn load(w: &Weights, c1: usize, c2: usize, k: usize, s: usize, p: usize) -> Result<Self> {
        let weight = w.get(&[c2, c1, k, k], "weight")?;
        let bias = w.get(&[c2], "bias")?;
        Self::new(w.prefix(), weight, bias, s, p, Activation::Identity)
    }

    fn new(
        name: &str,
        weight: Tensor,
        bias: Tensor,
        stride: usize,
        padding: usize,
        activation: Activation,
    ) -> Result<Self> {
        let run = if weight.device().is_cpu() {
            ConvImpl::Cpu(CpuConv::new(
                name, &weight, &bias, stride, padding, activation,
            )?)
        } else {
            let c2 = bias.elem_count();
            ConvImpl::Device {
                weight,
                bias: bias.reshape((1, c2, 1, 1))?,
                stride,
                padding,
                activation,
            }
        };
        Ok(Self { run })
    }
}

impl Module for Conv2d {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        match &self.run {
            ConvImpl::Cpu(conv) => conv.forward(xs),
            ConvImpl::Device {
                weight,
                bias,
                stride,
                padding,
                activation,
            } => {
                let ys = xs
                    .conv2d(weight, *padding, *stride, 1, 1)?
                    .broadcast_add(bias)?;
                match activation {
                    Activation::Identity => Ok(ys),
                    Activation::Silu => ys.silu(),
                }
            }
        }
    }
}

/// Convolution + batch norm + SiLU (the `Conv` module of both references). Batch norm is
/// folded into the convolution at load time, so a checkpoint with a separate `bn` and an
/// export with the fold already done give the same network.
#[derive(Debug, Clone)]
pub struct ConvBnSilu {
    conv: Conv2d,
}

impl ConvBnSilu {
    /// Loads from `{prefix}.conv.*` and, when present, `{prefix}.bn.*`.
    pub fn load(w: &Weights, c1: usize, c2: usize, k: usize, s: usize, p: usize) -> Result<Self> {
        let conv_w = w.pp("conv");
        let mut weight = conv_w.get(&[c2, c1, k, k], "weight")?;
        let mut bias = if conv_w.contains("bias") || !w.contains("bn.weight") {
            conv_w.get(&[c2], "bias")?
        } else {
            Tensor::zeros(c2, candle_core::DType::F32, w.device())?
        };
        if w.contains("bn.weight") {
            let bn = w.pp("bn");
            let gamma = bn.get(&[c2], "weight")?;
            let beta = bn.get(&[c2], "bias")?;
            let mean = bn.get(&[c2], "running_mean")?;
            let var = bn.get(&[c2], "running_var")?;
            // y = gamma * (conv(x) + b - mean) / sqrt(var + eps) + beta
            let scale = (gamma / (var + BN_EPS)?.sqrt()?)?;
            bias = ((bias - &mean)? * &scale)?.add(&beta)?;
            weight = weight.broadcast_mul(&scale.reshape((c2, 1, 1, 1))?)?;
        }
        let conv = Conv2d::new(w.prefix(), weight, bias, s, p, Activation::Silu)?;
        Ok(Self { conv })
    }

    /// "Same" padding for odd kernels, as both references default to.
    pub fn load_auto(w: &Weights, c1: usize, c2: usize, k: usize, s: usize) -> Result<Self> {
        Self::load(w, c1, c2, k, s, k / 2)
    }
}

impl Module for ConvBnSilu {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        self.conv.forward(xs)
    }
}

/// Two convolutions with an optional residual connection.
#[derive(Debug, Clone)]
pub struct Bottleneck {
    cv1: ConvBnSilu,
    cv2: ConvBnSilu,
    residual: bool,
}

impl Bottleneck {
    /// `k1`, `k2`: kernel sizes of the two convolutions (1, 3 in YOLOv5; 3, 3 in YOLOv8).
    pub fn load(w: &Weights, c: usize, shortcut: bool, k1: usize, k2: usize) -> Result<Self> {
        Ok(Self {
            cv1: ConvBnSilu::load_auto(&w.pp("cv1"), c, c, k1, 1)?,
            cv2: ConvBnSilu::load_auto(&w.pp("cv2"), c, c, k2, 1)?,
            residual: shortcut,
        })
    }
}

impl Module for Bottleneck {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let ys = self.cv2.forward(&self.cv1.forward(xs)?)?;
        if self.residual {
            xs + ys
        } else {
            Ok(ys)
        }
    }
}

/// YOLOv5's CSP block with three convolutions.
#[derive(Debug, Clone)]
pub struct C3 {
    cv1: ConvBnSilu,
    cv2: ConvBnSilu,
    cv3: ConvBnSilu,
    m: Vec<Bottleneck>,
}

impl C3 {
    /// Loads a C3 block with `n` bottlenecks.
    pub fn load(w: &Weights, c1: usize, c2: usize, n: usize, shortcut: bool) -> Result<Self> {
        let c = c2 / 2;
        let cv1 = ConvBnSilu::load_auto(&w.pp("cv1"), c1, c, 1, 1)?;
        let cv2 = ConvBnSilu::load_auto(&w.pp("cv2"), c1, c, 1, 1)?;
        let cv3 = ConvBnSilu::load_auto(&w.pp("cv3"), 2 * c, c2, 1, 1)?;
        let m = (0..n)
            .map(|i| Bottleneck::load(&w.pp("m").pp(i), c, shortcut, 1, 3))
            .collect::<Result<_>>()?;
        Ok(Self { cv1, cv2, cv3, m })
    }
}

impl Module for C3 {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let mut ys = self.cv1.forward(xs)?;
        for m in &self.m {
            ys = m.forward(&ys)?;
        }
        let cat = Tensor::cat(&[ys, self.cv2.forward(xs)?], 1)?;
        self.cv3.forward(&cat)
    }
}

/// YOLOv8's faster CSP block: split, a chain of bottlenecks whose outputs are all kept,
/// then one convolution over the concatenation.
#[derive(Debug, Clone)]
pub struct C2f {
    cv1: ConvBnSilu,
    cv2: ConvBnSilu,
    m: Vec<Bottleneck>,
    hidden: usize,
}

impl C2f {
    /// Loads a C2f block with `n` bottlenecks.
    pub fn load(w: &Weights, c1: usize, c2: usize, n: usize, shortcut: bool) -> Result<Self> {
        let c = c2 / 2;
        let cv1 = ConvBnSilu::load_auto(&w.pp("cv1"), c1, 2 * c, 1, 1)?;
        let cv2 = ConvBnSilu::load_auto(&w.pp("cv2"), (2 + n) * c, c2, 1, 1)?;
        let m = (0..n)
            .map(|i| Bottleneck::load(&w.pp("m").pp(i), c, shortcut, 3, 3))
            .collect::<Result<_>>()?;
        Ok(Self {
            cv1,
            cv2,
            m,
            hidden: c,
        })
    }
}

impl Module for C2f {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let ys = self.cv1.forward(xs)?;
        let mut parts = vec![
            ys.narrow(1, 0, self.hidden)?,
            ys.narrow(1, self.hidden, self.hidden)?,
        ];
        for m in &self.m {
            let next = m.forward(&parts[parts.len() - 1])?;
            parts.push(next);
        }
        self.cv2.forward(&Tensor::cat(&parts, 1)?)
    }
}

/// Spatial pyramid pooling, fast variant: three chained 5x5 max pools.
#[derive(Debug, Clone)]
pub struct Sppf {
    cv1: ConvBnSilu,
    cv2: ConvBnSilu,
    k: usize,
}

impl Sppf {
    /// Loads an SPPF block with pool size `k`.
    pub fn load(w: &Weights, c1: usize, c2: usize, k: usize) -> Result<Self> {
        let c = c1 / 2;
        Ok(Self {
            cv1: ConvBnSilu::load_auto(&w.pp("cv1"), c1, c, 1, 1)?,
            cv2: ConvBnSilu::load_auto(&w.pp("cv2"), 4 * c, c2, 1, 1)?,
            k,
        })
    }
}

/// Max pool with stride 1 and "same" output size. Replicating the border is equivalent to
/// padding with -inf here: every window that reaches the padding also holds the edge value.
fn max_pool_same(xs: &Tensor, k: usize) -> candle_core::Result<Tensor> {
    let p = k / 2;
    xs.pad_with_same(D::Minus1, p, p)?
        .pad_with_same(D::Minus2, p, p)?
        .max_pool2d_with_stride(k, 1)
}

impl Module for Sppf {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let x = self.cv1.forward(xs)?;
        let y1 = max_pool_same(&x, self.k)?;
        let y2 = max_pool_same(&y1, self.k)?;
        let y3 = max_pool_same(&y2, self.k)?;
        self.cv2.forward(&Tensor::cat(&[&x, &y1, &y2, &y3], 1)?)
    }
}

/// Nearest-neighbour 2x upsampling.
pub fn upsample2(xs: &Tensor) -> candle_core::Result<Tensor> {
    let (_, _, h, w) = xs.dims4()?;
    xs.upsample_nearest2d(2 * h, 2 * w)
}

/// Logistic sigmoid.
pub fn sigmoid(xs: &Tensor) -> candle_core::Result<Tensor> {
    candle_nn::ops::sigmoid(xs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use std::collections::HashMap;

    #[test]
    fn channel_and_depth_scaling_match_the_reference_builders() {
        // yolov8s: width 0.5, max 1024
        assert_eq!(scale_channels(64, 0.5, 1024), 32);
        assert_eq!(scale_channels(1024, 0.5, 1024), 512);
        // yolov8m caps at 768 before scaling
        assert_eq!(scale_channels(1024, 0.75, 768), 576);
        // yolov8n: 0.25
        assert_eq!(scale_channels(64, 0.25, 1024), 16);
        assert_eq!(scale_depth(3, 0.33), 1);
        assert_eq!(scale_depth(6, 0.33), 2);
        assert_eq!(scale_depth(9, 0.33), 3);
        assert_eq!(scale_depth(1, 0.33), 1);
    }

    #[test]
    fn batch_norm_is_folded_into_the_convolution() {
        let dev = Device::Cpu;
        let x = Tensor::arange(0f32, 2. * 3. * 3., &dev)
            .unwrap()
            .reshape((1, 2, 3, 3))
            .unwrap();
        let mut t = HashMap::new();
        let w = Tensor::new(&[[[[0.5f32]], [[-1.0]]], [[[2.0]], [[0.25]]]], &dev).unwrap();
        t.insert("c.conv.weight".to_string(), w.clone());
        t.insert(
            "c.bn.weight".into(),
            Tensor::new(&[2f32, 0.5], &dev).unwrap(),
        );
        t.insert(
            "c.bn.bias".into(),
            Tensor::new(&[0.1f32, -0.2], &dev).unwrap(),
        );
        t.insert(
            "c.bn.running_mean".into(),
            Tensor::new(&[1f32, 3.], &dev).unwrap(),
        );
        t.insert(
            "c.bn.running_var".into(),
            Tensor::new(&[4f32, 0.25], &dev).unwrap(),
        );
        let weights = Weights::from_tensors(t, &dev, "test");
        let fused = ConvBnSilu::load(&weights.pp("c"), 2, 2, 1, 1, 0).unwrap();
        let got = fused.forward(&x).unwrap();

        // Unfused reference, computed step by step.
        let conv = x.conv2d(&w, 0, 1, 1, 1).unwrap();
        let mean = Tensor::new(&[1f32, 3.], &dev)
            .unwrap()
            .reshape((1, 2, 1, 1))
            .unwrap();
        let var = Tensor::new(&[4f32, 0.25], &dev)
            .unwrap()
            .reshape((1, 2, 1, 1))
            .unwrap();
        let gamma = Tensor::new(&[2f32, 0.5], &dev)
            .unwrap()
            .reshape((1, 2, 1, 1))
            .unwrap();
        let beta = Tensor::new(&[0.1f32, -0.2], &dev)
            .unwrap()
            .reshape((1, 2, 1, 1))
            .unwrap();
        let want = conv
            .broadcast_sub(&mean)
            .unwrap()
            .broadcast_div(&(var + BN_EPS).unwrap().sqrt().unwrap())
            .unwrap()
            .broadcast_mul(&gamma)
            .unwrap()
            .broadcast_add(&beta)
            .unwrap()
            .silu()
            .unwrap();
        let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-5);
    }

    #[test]
    fn same_max_pool_keeps_the_size_and_sees_the_border() {
        let dev = Device::Cpu;
        let x = Tensor::arange(0f32, 16., &dev)
            .unwrap()
            .reshape((1, 1, 4, 4))
            .unwrap();
        let y = max_pool_same(&x, 5).unwrap();
        assert_eq!(y.dims(), &[1, 1, 4, 4]);
        let v: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
        // top-left window covers rows 0..=2, cols 0..=2 -> max is 10
        assert_eq!(v[0], 10.);
        assert_eq!(v[15], 15.);
    }
}
