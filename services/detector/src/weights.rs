//! Named weight lookup for building a model, with dotted prefixes in the PyTorch style
//! (`model.2.cv1.conv.weight`). A recording mode builds a model from zeros and remembers
//! which tensors it asked for, in order: the importers use it to map foreign weight lists
//! onto our names.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};

use crate::error::{Error, Result};

/// One requested tensor: its full name and shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// Dotted name, e.g. `model.0.conv.weight`.
    pub name: String,
    /// Dimensions.
    pub dims: Vec<usize>,
}

enum Source {
    Tensors(HashMap<String, Tensor>),
    /// Hands out zeros and logs every request.
    Recording(Mutex<Vec<TensorSpec>>),
}

/// A view of a weight collection under a name prefix.
#[derive(Clone)]
pub struct Weights {
    source: Arc<Source>,
    prefix: String,
    device: Device,
    family: String,
}

impl Weights {
    /// Wraps loaded tensors, moving them to `device` as f32 on first use.
    pub fn from_tensors(tensors: HashMap<String, Tensor>, device: &Device, family: &str) -> Self {
        Self {
            source: Arc::new(Source::Tensors(tensors)),
            prefix: String::new(),
            device: device.clone(),
            family: family.to_string(),
        }
    }

    /// A source that returns zeros of the requested shape and records each request.
    pub fn recording(family: &str) -> Self {
        Self {
            source: Arc::new(Source::Recording(Mutex::new(Vec::new()))),
            prefix: String::new(),
            device: Device::Cpu,
            family: family.to_string(),
        }
    }

    /// The tensors requested so far from a recording source, in request order.
    pub fn recorded(&self) -> Vec<TensorSpec> {
        match self.source.as_ref() {
            Source::Recording(log) => log.lock().map(|l| l.clone()).unwrap_or_default(),
            Source::Tensors(_) => Vec::new(),
        }
    }

    /// A view one level deeper: `pp("cv1")` turns `model.2` into `model.2.cv1`.
    pub fn pp(&self, name: impl std::fmt::Display) -> Self {
        let prefix = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{}", self.prefix, name)
        };
        Self {
            prefix,
            ..self.clone()
        }
    }

    /// The dotted prefix of this view (`model.2.cv1`), empty at the root.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The device tensors are placed on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    fn full_name(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{}", self.prefix, name)
        }
    }

    /// Whether a tensor exists under this prefix (always false when recording, so that the
    /// recorded list describes the fused, bias-carrying form).
    pub fn contains(&self, name: &str) -> bool {
        match self.source.as_ref() {
            Source::Tensors(map) => map.contains_key(&self.full_name(name)),
            Source::Recording(_) => false,
        }
    }

    /// Fetches a tensor and checks its shape.
    pub fn get(&self, dims: &[usize], name: &str) -> Result<Tensor> {
        let full = self.full_name(name);
        match self.source.as_ref() {
            Source::Recording(log) => {
                if let Ok(mut log) = log.lock() {
                    log.push(TensorSpec {
                        name: full,
                        dims: dims.to_vec(),
                    });
                }
                Ok(Tensor::zeros(dims, DType::F32, &self.device)?)
            }
            Source::Tensors(map) => {
                let tensor = map.get(&full).ok_or_else(|| Error::WeightMismatch {
                    family: self.family.clone(),
                    reason: format!("missing tensor {full}"),
                })?;
                if tensor.dims() != dims {
                    return Err(Error::WeightMismatch {
                        family: self.family.clone(),
                        reason: format!(
                            "tensor {full} has shape {:?}, expected {:?}",
                            tensor.dims(),
                            Shape::from(dims).dims()
                        ),
                    });
                }
                Ok(tensor.to_dtype(DType::F32)?.to_device(&self.device)?)
            }
        }
    }
}
