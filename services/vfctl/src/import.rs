//! `vfctl import`: convert TF.js graph models and ONNX exports into the model store.

use std::path::PathBuf;

use anyhow::Context;
use visionfleet_detector::import::{onnx, tfjs, write_model};
use visionfleet_detector::manifest::{yolov5_default_anchors, COCO_CLASSES};
use visionfleet_detector::{Family, Manifest, Scale};

/// Fields every import needs.
#[derive(clap::Args)]
pub struct Common {
    /// Name of the imported model.
    #[arg(long)]
    name: String,
    /// Architecture scale: n, s, m, l or x.
    #[arg(long)]
    scale: Scale,
    /// Comma-separated class names, or `coco` for the 80 COCO classes.
    #[arg(long)]
    classes: Option<String>,
    /// Network input size.
    #[arg(long, default_value_t = 640)]
    input_size: usize,
    /// Licence of the weights.
    #[arg(long)]
    license: String,
    /// Where the weights came from.
    #[arg(long)]
    source: String,
    /// Output folder (the model store).
    #[arg(long, default_value = "models")]
    out: PathBuf,
}

/// `vfctl import` subcommands.
#[derive(clap::Subcommand)]
pub enum ImportCommand {
    /// A YOLOv5 TF.js graph model (model.json plus shards).
    Tfjs {
        #[command(flatten)]
        common: Common,
        /// The model.json file.
        model_json: PathBuf,
    },
    /// An Ultralytics ONNX export (YOLOv8); class names default to the file's metadata.
    Onnx {
        #[command(flatten)]
        common: Common,
        /// Architecture family.
        #[arg(long, default_value = "yolov8")]
        family: Family,
        /// The .onnx file.
        file: PathBuf,
    },
}

fn class_list(spec: &str) -> Vec<String> {
    if spec == "coco" {
        COCO_CLASSES.iter().map(|s| s.to_string()).collect()
    } else {
        spec.split(',').map(|s| s.trim().to_string()).collect()
    }
}

fn manifest(common: &Common, family: Family, class_names: Vec<String>) -> Manifest {
    Manifest {
        name: common.name.clone(),
        version: "1".into(),
        family,
        scale: common.scale,
        class_names,
        input_size: common.input_size,
        strides: vec![8, 16, 32],
        anchors: (family == Family::Yolov5).then(yolov5_default_anchors),
        weights: String::new(),
        weights_sha256: String::new(),
        license: common.license.clone(),
        source: common.source.clone(),
    }
}

/// Runs a `vfctl import` subcommand.
pub fn run(command: ImportCommand) -> anyhow::Result<()> {
    let written = match command {
        ImportCommand::Tfjs { common, model_json } => {
            let classes = class_list(common.classes.as_deref().unwrap_or("coco"));
            let m = manifest(&common, Family::Yolov5, classes);
            let tensors = tfjs::import_yolov5(&model_json, &m)?;
            write_model(&common.out, m, tensors.into_iter().collect())?
        }
        ImportCommand::Onnx {
            common,
            family,
            file,
        } => {
            let weights = onnx::read_onnx(&file)?;
            let classes = match &common.classes {
                Some(spec) => class_list(spec),
                None => weights
                    .metadata
                    .get("names")
                    .and_then(|n| onnx::parse_class_names(n))
                    .context("the ONNX file has no class names in its metadata: pass --classes")?,
            };
            let m = manifest(&common, family, classes);
            write_model(&common.out, m, weights.tensors)?
        }
    };
    println!(
        "imported {} ({} {:?}, {} classes) -> {}",
        written.name,
        written.family,
        written.scale,
        written.class_names.len(),
        written.weights
    );
    Ok(())
}
