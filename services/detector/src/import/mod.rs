//! Importers: turn weight formats users already have into our safetensors + manifest form,
//! with the conventional (PyTorch checkpoint) tensor names.
//!
//! Every importer ends the same way ([`write_model`]): the tensors are checked by building
//! the network from them, then saved, then the manifest records the file's checksum.

pub mod onnx;
pub mod tfjs;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};
use crate::manifest::Manifest;
use crate::models::Network;
use crate::weights::Weights;

/// Saves `tensors` as `<dir>/<name>.safetensors` and the manifest as `<dir>/<name>.json`,
/// after proving the tensors build the manifest's network. Returns the final manifest.
pub fn write_model(
    dir: &Path,
    mut manifest: Manifest,
    tensors: HashMap<String, Tensor>,
) -> Result<Manifest> {
    manifest.validate().map_err(|reason| Error::Manifest {
        path: dir.join(&manifest.name),
        reason,
    })?;
    let weights =
        Weights::from_tensors(tensors.clone(), &Device::Cpu, &manifest.family.to_string());
    Network::build(&manifest, &weights)?;

    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let weights_file = format!("{}.safetensors", manifest.name);
    let weights_path = dir.join(&weights_file);
    candle_core::safetensors::save(&tensors, &weights_path)?;
    let bytes = std::fs::read(&weights_path).map_err(|e| Error::io(&weights_path, e))?;
    manifest.weights = weights_file;
    manifest.weights_sha256 = crate::store::sha256_hex(&bytes);
    manifest.save(&dir.join(format!("{}.json", manifest.name)))?;
    Ok(manifest)
}

/// Reads a whole file, naming it in the error.
fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}
