//! The served models: loading with warm-up, lookup by name, and hot reload. A watcher polls
//! each model's manifest; when its version or weights change, the new model is loaded and
//! warmed up beside the old one, then swapped in. Frames already queued on the old model
//! finish there (its worker drains before it stops), so nothing in flight is dropped.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use visionfleet_detector::{Detector, DetectorOptions, Manifest, ModelStore};

use crate::batcher::Batcher;
use crate::config::Config;
use crate::error::Error;
use crate::metrics::Metrics;

/// Models by name; each lookup hands out the current version.
#[derive(Default)]
pub struct ModelRegistry {
    models: RwLock<HashMap<String, Arc<Batcher>>>,
}

impl ModelRegistry {
    /// The current batcher of `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Batcher>> {
        self.models.read().ok()?.get(name).cloned()
    }

    /// Served model names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .models
            .read()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        names.sort_unstable();
        names
    }

    /// Every current batcher.
    pub fn all(&self) -> Vec<Arc<Batcher>> {
        self.models
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Installs `batcher` under its model's name; returns the one it replaced.
    pub fn insert(&self, batcher: Batcher) -> Option<Arc<Batcher>> {
        let name = batcher.manifest().name.clone();
        self.models.write().ok()?.insert(name, Arc::new(batcher))
    }
}

fn options(config: &Config) -> DetectorOptions {
    DetectorOptions {
        conf_threshold: config.conf_threshold,
        ..DetectorOptions::default()
    }
}

/// Loads a model and runs warm-up passes off the async runtime: one frame, then a full
/// batch of `max_batch` frames. The first forward at a batch size allocates the detector's
/// scratch memory; doing it here keeps that latency off the first real frames and makes
/// the pod's resident memory after start-up its working set under load.
async fn load_warm(
    store: &ModelStore,
    name: &str,
    options: DetectorOptions,
    max_batch: usize,
) -> Result<Detector, Error> {
    let (store, name) = (store.clone(), name.to_string());
    tokio::task::spawn_blocking(move || {
        let detector = store.load(&name, &visionfleet_detector::default_device(), options)?;
        let blank = image::RgbImage::new(64, 64);
        detector.detect(&[(&blank).into()])?;
        if max_batch > 1 {
            detector.detect(&vec![(&blank).into(); max_batch])?;
        }
        Ok(detector)
    })
    .await
    .map_err(|e| Error::Io(std::io::Error::other(e)))?
}

fn set_info(metrics: &Metrics, m: &Manifest, value: i64) {
    let family = m.family.to_string();
    metrics
        .model_info
        .with_label_values(&[m.name.as_str(), m.version.as_str(), family.as_str()])
        .set(value);
}

/// Loads and warms up every configured model.
pub async fn load_all(config: &Config, metrics: &Arc<Metrics>) -> Result<ModelRegistry, Error> {
    let store = ModelStore::open(&config.models_dir)?;
    let registry = ModelRegistry::default();
    for name in &config.models {
        let max_batch = config.batch_policy(name).max_batch_size;
        let detector = load_warm(&store, name, options(config), max_batch).await?;
        set_info(metrics, detector.manifest(), 1);
        tracing::info!(model = %name, version = %detector.manifest().version, "model loaded");
        registry.insert(Batcher::start(
            detector,
            config.batch_policy(name),
            metrics.clone(),
        ));
    }
    Ok(registry)
}

/// Polls the manifests every `every` and swaps in changed models until the task is
/// dropped. A model that fails to load is logged and counted; the old one keeps serving.
pub async fn watch(
    config: Config,
    registry: Arc<ModelRegistry>,
    metrics: Arc<Metrics>,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Ok(store) = ModelStore::open(&config.models_dir) else {
            continue;
        };
        for name in registry.names() {
            let Some(current) = registry.get(&name) else {
                continue;
            };
            let on_disk = match Manifest::load(&store.manifest_path(&name)) {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(model = %name, error = %e, "cannot read manifest");
                    continue;
                }
            };
            let serving = current.manifest();
            if on_disk.version == serving.version
                && on_disk.weights_sha256 == serving.weights_sha256
            {
                continue;
            }
            let max_batch = config.batch_policy(&name).max_batch_size;
            match load_warm(&store, &name, options(&config), max_batch).await {
                Ok(detector) => {
                    let new_manifest = detector.manifest().clone();
                    let batcher =
                        Batcher::start(detector, config.batch_policy(&name), metrics.clone());
                    if let Some(old) = registry.insert(batcher) {
                        old.close(); // queued frames still run; new ones go to the new model
                        set_info(&metrics, old.manifest(), 0);
                    }
                    set_info(&metrics, &new_manifest, 1);
                    metrics.model_reloads.with_label_values(&["success"]).inc();
                    tracing::info!(model = %name, version = %new_manifest.version, "model reloaded");
                }
                Err(e) => {
                    metrics.model_reloads.with_label_values(&["failure"]).inc();
                    tracing::warn!(model = %name, error = %e, "reload failed; the old version keeps serving");
                }
            }
        }
    }
}
