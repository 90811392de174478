//! The model store: a folder of manifests (`<name>.json`) beside their safetensors files.

use std::path::{Path, PathBuf};

use candle_core::Device;
use sha2::{Digest, Sha256};

use crate::detector::{Detector, DetectorOptions};
use crate::error::{Error, Result};
use crate::manifest::Manifest;

/// Hex SHA-256 of a byte slice.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A folder of models.
#[derive(Debug, Clone)]
pub struct ModelStore {
    dir: PathBuf,
}

impl ModelStore {
    /// Opens the store at `dir` (it must exist).
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        std::fs::metadata(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(Self { dir })
    }

    /// The store's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every valid manifest in the store, sorted by name. Files that are not manifests
    /// are skipped; a manifest that fails validation is an error.
    pub fn list(&self) -> Result<Vec<Manifest>> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        let mut out = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| Error::io(&self.dir, e))?.path();
            if path.extension().is_some_and(|e| e == "json") {
                out.push(Manifest::load(&path)?);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Path of a model's manifest.
    pub fn manifest_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// Loads a model by name.
    pub fn load(&self, name: &str, device: &Device, options: DetectorOptions) -> Result<Detector> {
        let path = self.manifest_path(name);
        if !path.exists() {
            let available = self
                .list()
                .map(|l| l.into_iter().map(|m| m.name).collect::<Vec<_>>().join(", "))
                .unwrap_or_default();
            return Err(Error::UnknownModel {
                name: name.to_string(),
                available,
            });
        }
        Detector::load(&path, device, options)
    }
}
