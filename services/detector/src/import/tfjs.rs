//! TF.js graph models (the YOLOv5 TensorFlow export) to tensors with checkpoint names.
//!
//! The export numbers its convolutions `conv2d`, `conv2d_1`, ... in the order the modules
//! were built, which is the order of the PyTorch module tree. So the importer builds our
//! network in recording mode to get the conventional names in that same order, then pairs
//! the i-th TF convolution with the i-th recorded one, checking every shape.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::manifest::{Manifest, Scale};
use crate::models::yolov5::YoloV5;
use crate::weights::{TensorSpec, Weights};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ModelJson {
    format: Option<String>,
    weights_manifest: Vec<WeightGroup>,
}

#[derive(Deserialize)]
struct WeightGroup {
    paths: Vec<String>,
    weights: Vec<WeightEntry>,
}

#[derive(Deserialize)]
struct WeightEntry {
    name: String,
    shape: Vec<usize>,
    dtype: String,
    #[serde(default)]
    quantization: Option<serde_json::Value>,
}

/// Raw float weights of a graph model, by TF name.
struct GraphWeights(BTreeMap<String, (Vec<usize>, Vec<f32>)>);

fn read_graph_weights(model_json: &Path) -> Result<GraphWeights> {
    let text = std::fs::read_to_string(model_json).map_err(|e| Error::io(model_json, e))?;
    let model: ModelJson = serde_json::from_str(&text)
        .map_err(|e| Error::import(model_json, format!("not a TF.js model.json: {e}")))?;
    if model.format.as_deref() != Some("graph-model") {
        return Err(Error::import(
            model_json,
            format!("expected format \"graph-model\", found {:?}", model.format),
        ));
    }
    let dir = model_json.parent().unwrap_or(Path::new("."));
    let mut out = BTreeMap::new();
    for group in &model.weights_manifest {
        let mut data = Vec::new();
        for p in &group.paths {
            data.extend(super::read(&dir.join(p))?);
        }
        let mut offset = 0usize;
        for w in &group.weights {
            if w.quantization.is_some() {
                return Err(Error::import(
                    model_json,
                    format!(
                        "weight {} is quantized; only float32 exports are supported",
                        w.name
                    ),
                ));
            }
            let count: usize = w.shape.iter().product();
            let width = match w.dtype.as_str() {
                "float32" | "int32" => 4,
                "bool" => 1,
                other => {
                    return Err(Error::import(
                        model_json,
                        format!("weight {} has unsupported dtype {other}", w.name),
                    ))
                }
            };
            let end = offset + count * width;
            let bytes = data.get(offset..end).ok_or_else(|| {
                Error::import(
                    model_json,
                    format!(
                        "weight data truncated: {} needs bytes {offset}..{end}, shards hold {}",
                        w.name,
                        data.len()
                    ),
                )
            })?;
            if w.dtype == "float32" {
                let values = bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                out.insert(w.name.clone(), (w.shape.clone(), values));
            }
            offset = end;
        }
        if offset != data.len() {
            return Err(Error::import(
                model_json,
                format!(
                    "shards hold {} bytes but the manifest describes {offset}",
                    data.len()
                ),
            ));
        }
    }
    Ok(GraphWeights(out))
}

/// The index `N` of a `.../conv2d_N/Conv2D/ReadVariableOp` name (`conv2d` alone is 0).
fn conv_index(name: &str, suffix: &str) -> Option<usize> {
    let layer = name.strip_suffix(suffix)?.rsplit('/').next()?;
    match layer.strip_prefix("conv2d")? {
        "" => Some(0),
        rest => rest.strip_prefix('_')?.parse().ok(),
    }
}

/// Imports a YOLOv5 TF.js graph model. `manifest` gives the name, scale, classes, anchors
/// and provenance; the returned tensors use checkpoint names (`model.0.conv.weight`, ...),
/// with batch norm already folded (as the export has it).
pub fn import_yolov5(model_json: &Path, manifest: &Manifest) -> Result<BTreeMap<String, Tensor>> {
    let graph = read_graph_weights(model_json)?;
    let mut kernels = BTreeMap::new();
    let mut biases = BTreeMap::new();
    for (name, tensor) in graph.0 {
        if let Some(i) = conv_index(&name, "/Conv2D/ReadVariableOp") {
            kernels.insert(i, (name, tensor));
        } else if let Some(i) = conv_index(&name, "/BiasAdd/ReadVariableOp") {
            biases.insert(i, tensor);
        }
    }
    let expected = recorded_yolov5(manifest.scale, manifest)?;
    let expected: Vec<&TensorSpec> = expected.iter().filter(|s| s.dims.len() == 4).collect();
    if kernels.len() != expected.len() {
        return Err(Error::import(
            model_json,
            format!(
                "found {} convolutions, yolov5{:?} has {}",
                kernels.len(),
                manifest.scale,
                expected.len()
            )
            .to_lowercase(),
        ));
    }
    let mut out = BTreeMap::new();
    for (spec, (index, (tf_name, (shape, values)))) in expected.iter().zip(kernels) {
        let (kh, kw, cin, cout) = match shape.as_slice() {
            &[kh, kw, cin, cout] => (kh, kw, cin, cout),
            _ => {
                return Err(Error::import(
                    model_json,
                    format!("{tf_name} is not a 4-d kernel: {shape:?}"),
                ))
            }
        };
        if spec.dims != [cout, cin, kh, kw] {
            return Err(Error::import(
                model_json,
                format!(
                    "{tf_name} has shape {shape:?} (HWIO) but {} needs {:?} (OIHW)",
                    spec.name, spec.dims
                ),
            ));
        }
        // TF stores kernels as HWIO; PyTorch and candle use OIHW.
        let kernel = Tensor::from_vec(values, (kh, kw, cin, cout), &Device::Cpu)?
            .permute((3, 2, 0, 1))?
            .contiguous()?;
        let (bias_shape, bias) = biases.remove(&index).ok_or_else(|| {
            Error::import(
                model_json,
                format!("{tf_name} has no bias (BiasAdd) weight"),
            )
        })?;
        if bias_shape != [cout] {
            return Err(Error::import(
                model_json,
                format!("bias of {tf_name} has shape {bias_shape:?}, expected [{cout}]"),
            ));
        }
        let base = spec.name.trim_end_matches(".weight");
        out.insert(spec.name.clone(), kernel);
        out.insert(
            format!("{base}.bias"),
            Tensor::from_vec(bias, cout, &Device::Cpu)?,
        );
    }
    Ok(out)
}

fn recorded_yolov5(scale: Scale, manifest: &Manifest) -> Result<Vec<TensorSpec>> {
    let w = Weights::recording("yolov5");
    YoloV5::load(
        &w,
        scale,
        manifest.class_names.len(),
        manifest.anchors.clone().unwrap_or_default(),
    )?;
    Ok(w.recorded())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{yolov5_default_anchors, Family};

    fn manifest() -> Manifest {
        Manifest {
            name: "tiny".into(),
            version: "1".into(),
            family: Family::Yolov5,
            scale: Scale::N,
            class_names: vec!["a".into()],
            input_size: 64,
            strides: vec![8, 16, 32],
            anchors: Some(yolov5_default_anchors()),
            weights: String::new(),
            weights_sha256: String::new(),
            license: "test".into(),
            source: "test".into(),
        }
    }

    /// Writes a synthetic graph model whose kernels follow the export's naming and
    /// HWIO layout, filled with each conv's index so the mapping can be checked.
    fn write_model(dir: &Path, truncate: usize) -> Vec<TensorSpec> {
        let specs: Vec<TensorSpec> = recorded_yolov5(Scale::N, &manifest())
            .unwrap()
            .into_iter()
            .filter(|s| s.dims.len() == 4)
            .collect();
        let mut weights = Vec::new();
        let mut data: Vec<u8> = Vec::new();
        // Reverse order: the manifest order must not matter, only the conv index.
        for (i, s) in specs.iter().enumerate().rev() {
            let layer = if i == 0 {
                "conv2d".to_string()
            } else {
                format!("conv2d_{i}")
            };
            let (o, c, h, w) = (s.dims[0], s.dims[1], s.dims[2], s.dims[3]);
            weights.push(serde_json::json!({
                "name": format!("m/x/{layer}/Conv2D/ReadVariableOp"),
                "shape": [h, w, c, o], "dtype": "float32"}));
            data.extend(
                (0..o * c * h * w).flat_map(|k| (i as f32 + k as f32 * 1e-6).to_le_bytes()),
            );
            weights.push(serde_json::json!({
                "name": format!("m/x/{layer}/BiasAdd/ReadVariableOp"),
                "shape": [o], "dtype": "float32"}));
            data.extend((0..o).flat_map(|_| (i as f32).to_le_bytes()));
        }
        weights.push(serde_json::json!({"name": "m/shape", "shape": [2], "dtype": "int32"}));
        data.extend([0u8; 8]);
        data.truncate(data.len() - truncate);
        std::fs::write(dir.join("shard1"), &data).unwrap();
        let json = serde_json::json!({
            "format": "graph-model",
            "weightsManifest": [{"paths": ["shard1"], "weights": weights}]
        });
        std::fs::write(dir.join("model.json"), json.to_string()).unwrap();
        specs
    }

    #[test]
    fn kernels_map_in_conv_order_and_transpose_to_oihw() {
        let dir = tempfile::tempdir().unwrap();
        let specs = write_model(dir.path(), 0);
        let tensors = import_yolov5(&dir.path().join("model.json"), &manifest()).unwrap();
        assert_eq!(tensors.len(), 2 * specs.len());
        for (i, s) in specs.iter().enumerate() {
            let t = &tensors[&s.name];
            assert_eq!(t.dims(), s.dims.as_slice());
            let first: f32 = t
                .flatten_all()
                .unwrap()
                .get(0)
                .unwrap()
                .to_scalar()
                .unwrap();
            assert_eq!(first, i as f32, "{}", s.name);
        }
        // HWIO -> OIHW: element [o=1, i=0, 0, 0] was at flat index 1 in HWIO.
        let k = &tensors["model.1.conv.weight"];
        let v: f32 = k
            .get(1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .get(0)
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!((v - (1.0 + 1e-6)).abs() < 1e-7);
    }

    #[test]
    fn truncated_shards_and_wrong_formats_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        write_model(dir.path(), 3);
        let err = import_yolov5(&dir.path().join("model.json"), &manifest())
            .unwrap_err()
            .to_string();
        assert!(err.contains("weight data truncated"), "{err}");

        std::fs::write(
            dir.path().join("model.json"),
            r#"{"format": "layers-model", "weightsManifest": []}"#,
        )
        .unwrap();
        let err = import_yolov5(&dir.path().join("model.json"), &manifest())
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected format \"graph-model\""), "{err}");

        std::fs::write(dir.path().join("model.json"), "{ nope").unwrap();
        let err = import_yolov5(&dir.path().join("model.json"), &manifest())
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a TF.js model.json"), "{err}");
    }

    #[test]
    fn conv_names_parse() {
        assert_eq!(
            conv_index("a/conv2d/Conv2D/ReadVariableOp", "/Conv2D/ReadVariableOp"),
            Some(0)
        );
        assert_eq!(
            conv_index(
                "a/conv2d_57/Conv2D/ReadVariableOp",
                "/Conv2D/ReadVariableOp"
            ),
            Some(57)
        );
        assert_eq!(
            conv_index("a/dense/Conv2D/ReadVariableOp", "/Conv2D/ReadVariableOp"),
            None
        );
    }
}
