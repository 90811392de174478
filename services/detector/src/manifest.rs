//! The model manifest: the small JSON file beside a safetensors file that says which
//! architecture the weights belong to, what the classes are called and where they came from.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The detector architecture family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// Anchor-based YOLOv5 (v6.x heads, SPPF).
    Yolov5,
    /// Anchor-free YOLOv8 with a DFL box head.
    Yolov8,
}

impl Family {
    /// The IoU threshold the reference implementation uses for NMS.
    pub fn default_iou(self) -> f32 {
        match self {
            Family::Yolov5 => 0.45,
            Family::Yolov8 => 0.7,
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Family::Yolov5 => "yolov5",
            Family::Yolov8 => "yolov8",
        })
    }
}

/// The model scale, from nano to extra large.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scale {
    N,
    S,
    M,
    L,
    X,
}

impl std::str::FromStr for Scale {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "n" => Ok(Scale::N),
            "s" => Ok(Scale::S),
            "m" => Ok(Scale::M),
            "l" => Ok(Scale::L),
            "x" => Ok(Scale::X),
            other => Err(format!(
                "unknown scale {other:?} (expected n, s, m, l or x)"
            )),
        }
    }
}

impl std::str::FromStr for Family {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "yolov5" => Ok(Family::Yolov5),
            "yolov8" => Ok(Family::Yolov8),
            other => Err(format!(
                "unknown family {other:?} (expected yolov5 or yolov8)"
            )),
        }
    }
}

/// Describes one model: architecture, classes, input geometry and provenance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The name clients ask for, e.g. `coco-yolov5s`.
    pub name: String,
    /// A version string; bumped when the weights change.
    #[serde(default = "default_version")]
    pub version: String,
    /// Architecture family.
    pub family: Family,
    /// Architecture scale.
    pub scale: Scale,
    /// Class names, indexed by class id.
    pub class_names: Vec<String>,
    /// Side of the square network input in pixels.
    pub input_size: usize,
    /// Output strides of the detection levels, smallest first.
    #[serde(default = "default_strides")]
    pub strides: Vec<usize>,
    /// YOLOv5 only: anchor (width, height) pairs in input pixels, one list per level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchors: Option<Vec<Vec<[f32; 2]>>>,
    /// The safetensors file, relative to the manifest.
    pub weights: String,
    /// SHA-256 of the safetensors file, hex encoded.
    pub weights_sha256: String,
    /// Licence of the weights.
    pub license: String,
    /// Where the weights came from.
    pub source: String,
}

fn default_version() -> String {
    "1".to_string()
}

fn default_strides() -> Vec<usize> {
    vec![8, 16, 32]
}

impl Manifest {
    /// Reads and validates a manifest file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let manifest: Manifest = serde_json::from_str(&text).map_err(|e| Error::Manifest {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        manifest.validate().map_err(|reason| Error::Manifest {
            path: path.to_path_buf(),
            reason,
        })?;
        Ok(manifest)
    }

    /// Checks that the manifest describes a model this crate can build.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() {
            return Err("name is empty".into());
        }
        if self.class_names.is_empty() {
            return Err("class_names is empty".into());
        }
        if self.strides != [8, 16, 32] {
            return Err(format!(
                "strides must be [8, 16, 32], got {:?}",
                self.strides
            ));
        }
        if self.input_size == 0 || !self.input_size.is_multiple_of(32) {
            return Err(format!(
                "input_size must be a positive multiple of 32, got {}",
                self.input_size
            ));
        }
        match (self.family, &self.anchors) {
            (Family::Yolov5, None) => return Err("yolov5 needs anchors".into()),
            (Family::Yolov5, Some(levels)) => {
                if levels.len() != self.strides.len() {
                    return Err(format!(
                        "anchors has {} levels, strides has {}",
                        levels.len(),
                        self.strides.len()
                    ));
                }
                let per_level = levels[0].len();
                if per_level == 0 || levels.iter().any(|l| l.len() != per_level) {
                    return Err("every anchor level needs the same, non-zero count".into());
                }
            }
            (Family::Yolov8, Some(_)) => return Err("yolov8 is anchor-free: drop anchors".into()),
            (Family::Yolov8, None) => {}
        }
        Ok(())
    }

    /// Writes the manifest as pretty JSON.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::Manifest {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        std::fs::write(path, text + "\n").map_err(|e| Error::io(path, e))
    }

    /// Anchors per level, or zero for anchor-free models.
    pub fn anchors_per_level(&self) -> usize {
        self.anchors
            .as_ref()
            .and_then(|a| a.first())
            .map_or(0, Vec::len)
    }
}

/// The anchors YOLOv5 v6 was trained with on COCO, in input pixels.
pub fn yolov5_default_anchors() -> Vec<Vec<[f32; 2]>> {
    vec![
        vec![[10., 13.], [16., 30.], [33., 23.]],
        vec![[30., 61.], [62., 45.], [59., 119.]],
        vec![[116., 90.], [156., 198.], [373., 326.]],
    ]
}

/// The 80 COCO class names in the order the YOLO models use.
pub const COCO_CLASSES: [&str; 80] = [
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn v5() -> Manifest {
        Manifest {
            name: "m".into(),
            version: "1".into(),
            family: Family::Yolov5,
            scale: Scale::N,
            class_names: vec!["a".into()],
            input_size: 640,
            strides: vec![8, 16, 32],
            anchors: Some(yolov5_default_anchors()),
            weights: "m.safetensors".into(),
            weights_sha256: String::new(),
            license: "test".into(),
            source: "test".into(),
        }
    }

    #[test]
    fn validation_names_the_problem() {
        assert!(v5().validate().is_ok());
        let mut m = v5();
        m.anchors = None;
        assert_eq!(m.validate().unwrap_err(), "yolov5 needs anchors");
        let mut m = v5();
        m.input_size = 630;
        assert_eq!(
            m.validate().unwrap_err(),
            "input_size must be a positive multiple of 32, got 630"
        );
        let mut m = v5();
        m.family = Family::Yolov8;
        assert_eq!(
            m.validate().unwrap_err(),
            "yolov8 is anchor-free: drop anchors"
        );
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.json");
        let mut value = serde_json::to_value(v5()).unwrap();
        value["colour"] = "blue".into();
        std::fs::write(&path, value.to_string()).unwrap();
        let err = Manifest::load(&path).unwrap_err().to_string();
        assert!(err.contains("unknown field `colour`"), "{err}");
    }
}
