//! ONNX initializers to tensors. The ONNX protobuf is decoded with a hand-written subset of
//! its schema (only the fields an initializer needs), so no protoc or ONNX runtime is needed.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};

/// `onnx.ModelProto`, reduced to the fields we read.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelProto {
    /// ONNX IR version.
    #[prost(int64, tag = "1")]
    pub ir_version: i64,
    /// Producer, e.g. `pytorch`.
    #[prost(string, tag = "2")]
    pub producer_name: String,
    /// The graph.
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
    /// Free-form metadata (Ultralytics stores class names and strides here).
    #[prost(message, repeated, tag = "14")]
    pub metadata_props: Vec<StringStringEntryProto>,
}

/// `onnx.StringStringEntryProto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StringStringEntryProto {
    /// Key.
    #[prost(string, tag = "1")]
    pub key: String,
    /// Value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `onnx.GraphProto`, reduced.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GraphProto {
    /// Graph name.
    #[prost(string, tag = "2")]
    pub name: String,
    /// Constant tensors: the weights.
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<TensorProto>,
}

/// `onnx.TensorProto`, reduced.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorProto {
    /// Shape.
    #[prost(int64, repeated, tag = "1")]
    pub dims: Vec<i64>,
    /// Element type (1 float, 10 float16, 11 double, 7 int64, ...).
    #[prost(int32, tag = "2")]
    pub data_type: i32,
    /// Float elements when not in `raw_data`.
    #[prost(float, repeated, tag = "4")]
    pub float_data: Vec<f32>,
    /// Name.
    #[prost(string, tag = "8")]
    pub name: String,
    /// Little-endian packed elements.
    #[prost(bytes = "vec", tag = "9")]
    pub raw_data: Vec<u8>,
    /// Double elements when not in `raw_data`.
    #[prost(double, repeated, tag = "10")]
    pub double_data: Vec<f64>,
    /// 0 default, 1 external file.
    #[prost(int32, tag = "14")]
    pub data_location: i32,
}

const FLOAT: i32 = 1;
const FLOAT16: i32 = 10;
const DOUBLE: i32 = 11;

/// What an ONNX file yields: float weights by name and the model's metadata.
#[derive(Debug)]
pub struct OnnxWeights {
    /// Float initializers under `model.`, as f32.
    pub tensors: HashMap<String, Tensor>,
    /// `metadata_props` as a map.
    pub metadata: HashMap<String, String>,
}

/// Reads the `model.*` float initializers of an ONNX file.
pub fn read_onnx(path: &Path) -> Result<OnnxWeights> {
    let bytes = super::read(path)?;
    let model = <ModelProto as prost::Message>::decode(bytes.as_slice())
        .map_err(|e| Error::import(path, format!("not an ONNX model: {e}")))?;
    let graph = model
        .graph
        .ok_or_else(|| Error::import(path, "ONNX model has no graph"))?;
    let mut tensors = HashMap::new();
    for init in graph.initializer {
        if !init.name.starts_with("model.") {
            continue; // exporter constants (shapes, split sizes), not weights
        }
        let t = to_tensor(&init).map_err(|reason| {
            Error::import(path, format!("initializer {}: {reason}", init.name))
        })?;
        tensors.insert(init.name, t);
    }
    if tensors.is_empty() {
        return Err(Error::import(
            path,
            "no initializers named model.* (not an Ultralytics export?)",
        ));
    }
    let metadata = model
        .metadata_props
        .into_iter()
        .map(|p| (p.key, p.value))
        .collect();
    Ok(OnnxWeights { tensors, metadata })
}

fn to_tensor(t: &TensorProto) -> Result<Tensor, String> {
    if t.data_location == 1 {
        return Err("external data files are not supported".into());
    }
    let dims: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("negative dimension {d}")))
        .collect::<Result<_, _>>()?;
    let count: usize = dims.iter().product();
    let values: Vec<f32> = match t.data_type {
        FLOAT if !t.raw_data.is_empty() => le_values(&t.raw_data, count, 4, |b| {
            f32::from_le_bytes([b[0], b[1], b[2], b[3]])
        })?,
        FLOAT => t.float_data.clone(),
        FLOAT16 => le_values(&t.raw_data, count, 2, |b| {
            half::f16::from_le_bytes([b[0], b[1]]).to_f32()
        })?,
        DOUBLE if !t.raw_data.is_empty() => le_values(&t.raw_data, count, 8, |b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            f64::from_le_bytes(a) as f32
        })?,
        DOUBLE => t.double_data.iter().map(|&v| v as f32).collect(),
        other => return Err(format!("unsupported element type {other}")),
    };
    if values.len() != count {
        return Err(format!(
            "holds {} values, shape {dims:?} needs {count}",
            values.len()
        ));
    }
    Tensor::from_vec(values, dims, &Device::Cpu).map_err(|e| e.to_string())
}

fn le_values(
    raw: &[u8],
    count: usize,
    width: usize,
    convert: impl Fn(&[u8]) -> f32,
) -> Result<Vec<f32>, String> {
    if raw.len() != count * width {
        return Err(format!(
            "raw data has {} bytes, expected {} ({count} x {width})",
            raw.len(),
            count * width
        ));
    }
    Ok(raw.chunks_exact(width).map(convert).collect())
}

/// Class names from Ultralytics metadata such as `{0: 'Normal', 1: 'Fall'}`.
pub fn parse_class_names(names: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = names.trim().strip_prefix('{')?.strip_suffix('}')?.trim();
    while !rest.is_empty() {
        let (index, after) = rest.split_once(':')?;
        if index.trim().parse::<usize>().ok()? != out.len() {
            return None;
        }
        let after = after.trim_start();
        let quote = after.chars().next().filter(|c| *c == '\'' || *c == '"')?;
        let end = after[1..].find(quote)? + 1;
        out.push(after[1..end].to_string());
        rest = after[end + 1..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn model_with(inits: Vec<TensorProto>) -> Vec<u8> {
        ModelProto {
            ir_version: 7,
            producer_name: "test".into(),
            graph: Some(GraphProto {
                name: "g".into(),
                initializer: inits,
            }),
            metadata_props: vec![StringStringEntryProto {
                key: "names".into(),
                value: "{0: 'a', 1: 'b'}".into(),
            }],
        }
        .encode_to_vec()
    }

    fn float_init(name: &str, dims: Vec<i64>, values: &[f32]) -> TensorProto {
        TensorProto {
            dims,
            data_type: FLOAT,
            name: name.into(),
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn round_trip_of_raw_half_and_repeated_floats() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.onnx");
        let half = TensorProto {
            dims: vec![2],
            data_type: FLOAT16,
            name: "model.1.bias".into(),
            raw_data: [1.5f32, -2.0]
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect(),
            ..Default::default()
        };
        let repeated = TensorProto {
            dims: vec![1],
            data_type: FLOAT,
            name: "model.2.bias".into(),
            float_data: vec![0.25],
            ..Default::default()
        };
        let bytes = model_with(vec![
            float_init("model.0.conv.weight", vec![1, 2, 1, 1], &[3.0, 4.0]),
            float_init("onnx::Split_1", vec![2], &[1.0, 1.0]),
            half,
            repeated,
        ]);
        std::fs::write(&path, bytes).unwrap();
        let w = read_onnx(&path).unwrap();
        assert_eq!(w.tensors.len(), 3, "exporter constants are skipped");
        let t = &w.tensors["model.0.conv.weight"];
        assert_eq!(t.dims(), &[1, 2, 1, 1]);
        assert_eq!(
            t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![3.0, 4.0]
        );
        assert_eq!(
            w.tensors["model.1.bias"].to_vec1::<f32>().unwrap(),
            vec![1.5, -2.0]
        );
        assert_eq!(
            w.tensors["model.2.bias"].to_vec1::<f32>().unwrap(),
            vec![0.25]
        );
        assert_eq!(
            parse_class_names(&w.metadata["names"]).unwrap(),
            vec!["a".to_string(), "b".to_string()]
        );
    }

    #[test]
    fn truncated_and_garbage_files_give_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.onnx");
        let bytes = model_with(vec![float_init(
            "model.0.conv.weight",
            vec![4],
            &[1.0, 2.0, 3.0, 4.0],
        )]);
        std::fs::write(&path, &bytes[..bytes.len() - 7]).unwrap();
        let err = read_onnx(&path).unwrap_err().to_string();
        assert!(
            err.starts_with("cannot import") && err.contains("not an ONNX model"),
            "{err}"
        );

        let short = model_with(vec![float_init(
            "model.0.conv.weight",
            vec![5],
            &[1.0, 2.0],
        )]);
        std::fs::write(&path, short).unwrap();
        let err = read_onnx(&path).unwrap_err().to_string();
        assert!(
            err.contains("initializer model.0.conv.weight: raw data has 8 bytes, expected 20"),
            "{err}"
        );

        std::fs::write(&path, model_with(vec![])).unwrap();
        let err = read_onnx(&path).unwrap_err().to_string();
        assert!(err.contains("no initializers named model.*"), "{err}");
    }

    #[test]
    fn class_names_parse_both_quote_styles() {
        assert_eq!(
            parse_class_names("{0: 'person', 1: \"traffic light\"}").unwrap(),
            vec!["person".to_string(), "traffic light".to_string()]
        );
        assert!(parse_class_names("{1: 'a'}").is_none());
        assert!(parse_class_names("not a dict").is_none());
    }
}
