//! Pools for tests: a minimal valid spec and a pool as the API server returns it.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::crd::{InferencePool, InferencePoolSpec, Kafka};

/// The smallest valid spec: one model on CPU, one pod.
pub fn spec() -> InferencePoolSpec {
    InferencePoolSpec {
        models: vec!["coco-yolov5s".into()],
        image: "ghcr.io/visionfleet/inference:1.0".into(),
        image_pull_policy: None,
        models_dir: None,
        replicas: None,
        autoscaling: None,
        gpu: None,
        batching: None,
        kafka: Kafka {
            bootstrap: "kafka:9092".into(),
            topic: "visionfleet.detections.v1".into(),
            dead_letter_topic: None,
            options: BTreeMap::new(),
            secret_ref: None,
        },
        resources: None,
        tls: None,
        device_tokens_secret: None,
    }
}

/// Pool `cams` in namespace `vision`, generation 2, as stored by the API server.
pub fn pool(spec: InferencePoolSpec) -> InferencePool {
    let mut p = InferencePool::new("cams", spec);
    p.metadata = ObjectMeta {
        name: Some("cams".into()),
        namespace: Some("vision".into()),
        uid: Some("0b7e4c1a-uid".into()),
        generation: Some(2),
        ..ObjectMeta::default()
    };
    p
}
