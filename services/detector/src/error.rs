//! The detector crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong while loading, importing or running a detector.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A model, manifest or weight file could not be read or written.
    #[error("cannot access {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A manifest is not valid JSON or does not describe a usable model.
    #[error("invalid manifest {path}: {reason}")]
    Manifest { path: PathBuf, reason: String },
    /// The weights do not fit the architecture named in the manifest.
    #[error("weights do not match the {family} architecture: {reason}")]
    WeightMismatch { family: String, reason: String },
    /// A weight file is corrupt, truncated, or of a kind we do not read.
    #[error("cannot import {path}: {reason}")]
    Import { path: PathBuf, reason: String },
    /// No model of that name is in the store.
    #[error("unknown model {name:?} (available: {available})")]
    UnknownModel { name: String, available: String },
    /// The input image or tensor cannot be used.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The tensor library failed.
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn import(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Import {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
