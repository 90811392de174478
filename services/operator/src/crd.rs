//! The `InferencePool` custom resource (`visionfleet.io/v1alpha1`): its spec, its status,
//! the schema the API server checks, and the checks a schema cannot express.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Toleration;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The GPU resource requested when `gpu.type` is not given.
pub const DEFAULT_GPU_RESOURCE: &str = "nvidia.com/gpu";
/// The CPU utilisation the HPA aims for when autoscaling names no target.
pub const DEFAULT_TARGET_CPU_PERCENT: i32 = 70;

/// A set of identical inference pods serving the same models and publishing to one topic.
// Each `printcolumn(...)` repeats `type_`, which clippy takes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "visionfleet.io",
    version = "v1alpha1",
    kind = "InferencePool",
    namespaced,
    shortname = "ipool",
    doc = "A pool of VisionFleet inference pods serving the same models and publishing detections to one Kafka topic",
    status = "InferencePoolStatus",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".status.replicas"),
    printcolumn(name = "Models", type_ = "string", json_path = ".spec.models"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct InferencePoolSpec {
    /// Models to serve; the first is the default for frames that name none.
    #[schemars(length(min = 1))]
    pub models: Vec<String>,
    /// The inference pod's image.
    #[schemars(length(min = 1))]
    pub image: String,
    /// When the kubelet pulls the image (the cluster's default when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<ImagePullPolicy>,
    /// Folder of the model store inside the image (the pod's default, `models`, when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models_dir: Option<String>,
    /// Fixed number of pods; must be unset when `autoscaling` is set (the HPA owns the
    /// count then). One pod when neither is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,
    /// Horizontal autoscaling of the pool's Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,
    /// GPUs per pod and where such pods may run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<Gpu>,
    /// Batching policy of every served model (the pod's defaults when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batching: Option<Batching>,
    /// Where detections go.
    pub kafka: Kafka,
    /// CPU and memory per pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ComputeResources>,
    /// TLS (and optionally mutual TLS) on the gRPC port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
    /// Secret whose `tokens` key holds the allowed device tokens (`DEVICE_ID TOKEN` a line);
    /// when set, clients must send `authorization: Bearer <token>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_tokens_secret: Option<String>,
}

/// Kubernetes' image pull policies.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ImagePullPolicy {
    /// Pull on every start.
    Always,
    /// Pull when the node lacks the image.
    IfNotPresent,
    /// Never pull.
    Never,
}

impl ImagePullPolicy {
    /// The name Kubernetes uses.
    pub fn as_str(self) -> &'static str {
        match self {
            ImagePullPolicy::Always => "Always",
            ImagePullPolicy::IfNotPresent => "IfNotPresent",
            ImagePullPolicy::Never => "Never",
        }
    }
}

/// HPA bounds and target. With neither target set, the HPA aims for
/// [`DEFAULT_TARGET_CPU_PERCENT`] CPU utilisation.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Autoscaling {
    /// Fewest pods.
    #[schemars(range(min = 1))]
    pub min_replicas: i32,
    /// Most pods.
    #[schemars(range(min = 1))]
    pub max_replicas: i32,
    /// Average CPU utilisation to aim for, percent of the CPU request.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "targetCPUUtilizationPercent"
    )]
    #[schemars(range(min = 1))]
    pub target_cpu_utilization_percent: Option<i32>,
    /// A per-pod metric (from a custom metrics adapter) to aim for, such as the queue depth.
    /// Only with the `hpa` engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<MetricTarget>,
    /// What scales the Deployment: `hpa` (default) an `autoscaling/v2` HPA the operator
    /// owns; `keda` a KEDA `ScaledObject` (KEDA then makes and owns the HPA), used when the
    /// cluster serves `keda.sh/v1alpha1` and falling back to an HPA while it does not.
    #[serde(default, skip_serializing_if = "AutoscalingEngine::is_default")]
    pub engine: AutoscalingEngine,
}

/// Which autoscaler drives a pool.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AutoscalingEngine {
    /// A HorizontalPodAutoscaler made by the operator.
    #[default]
    Hpa,
    /// A KEDA ScaledObject made by the operator (KEDA makes the HPA).
    Keda,
}

impl AutoscalingEngine {
    fn is_default(&self) -> bool {
        *self == AutoscalingEngine::Hpa
    }
}

/// A per-pod custom metric and the average value to hold it at.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricTarget {
    /// Metric name as the custom metrics API serves it.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Average value across the pods.
    pub average_value: Quantity,
}

/// GPUs per pod and the scheduling constraints of GPU nodes.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Gpu {
    /// GPUs per pod; 0 runs on CPU and ignores the other GPU settings.
    #[schemars(range(min = 0))]
    pub count: i32,
    /// The extended resource name of the GPU.
    #[serde(rename = "type", default = "default_gpu_resource")]
    pub resource: String,
    /// Node labels the pods require.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the pods tolerate (GPU nodes are often tainted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Runtime class that exposes the GPU (e.g. `nvidia`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_class_name: Option<String>,
}

fn default_gpu_resource() -> String {
    DEFAULT_GPU_RESOURCE.to_string()
}

/// The pod's batching flags.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Batching {
    /// Most frames per forward pass (`--max-batch-size`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_batch_size: Option<u32>,
    /// How long a queued frame waits for more (`--max-queue-delay-ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_queue_delay_ms: Option<u64>,
}

/// The Kafka cluster and topics the pods publish to.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Kafka {
    /// Bootstrap servers, comma separated.
    #[schemars(length(min = 1))]
    pub bootstrap: String,
    /// Topic of the detection events.
    #[schemars(length(min = 1))]
    pub topic: String,
    /// Topic of frames that can never succeed (the pod's default when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_topic: Option<String>,
    /// Extra librdkafka producer settings (`security.protocol`, `sasl.mechanism`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
    /// Secret holding the SASL user name and password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<KafkaSecretRef>,
}

/// Where the SASL credentials are.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaSecretRef {
    /// Secret name, in the pool's namespace.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Key of the user name.
    #[serde(default = "default_username_key")]
    pub username_key: String,
    /// Key of the password.
    #[serde(default = "default_password_key")]
    pub password_key: String,
}

fn default_username_key() -> String {
    "username".to_string()
}

fn default_password_key() -> String {
    "password".to_string()
}

/// CPU and memory requests and limits of the inference container.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComputeResources {
    /// What the scheduler reserves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<CpuMemory>,
    /// The most the container may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<CpuMemory>,
}

/// A CPU and a memory quantity.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CpuMemory {
    /// CPU (`500m`, `2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,
    /// Memory (`4Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
}

/// TLS secrets of the gRPC port.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tls {
    /// A `kubernetes.io/tls` Secret (`tls.crt`, `tls.key`).
    #[schemars(length(min = 1))]
    pub secret_name: String,
    /// Secret whose `ca.crt` signs the client certificates; enables mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_secret_name: Option<String>,
}

/// What the operator last saw of the pool's pods.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InferencePoolStatus {
    /// The `metadata.generation` these fields describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pods of the Deployment (the scale subresource's status replicas).
    #[serde(default)]
    pub replicas: i32,
    /// Pods that pass their readiness probe.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Label selector of the pods, for the scale subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// `Ready`, `Progressing` and `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// One problem in a spec, naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// JSON path of the field, from `spec`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// librdkafka settings the pod fixes itself (it refuses to start when they are given).
const FIXED_KAFKA_OPTIONS: [&str; 2] = ["enable.idempotence", "acks"];

impl InferencePoolSpec {
    /// Checks what the schema cannot: cross-field rules and the pod's own refusals, so a
    /// bad pool is reported in its status instead of as crash-looping pods.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut bad = |field: &str, message: String| {
            errors.push(FieldError {
                field: field.to_string(),
                message,
            })
        };
        if self.models.is_empty() {
            bad("spec.models", "name at least one model".into());
        }
        for (i, m) in self.models.iter().enumerate() {
            if m.is_empty() || m.contains(',') || m.contains(char::is_whitespace) {
                bad(
                    &format!("spec.models[{i}]"),
                    format!("{m:?} is not a model name (empty, comma or space)"),
                );
            }
            if self.models[..i].contains(m) {
                bad(&format!("spec.models[{i}]"), format!("{m} is listed twice"));
            }
        }
        if self.image.trim().is_empty() {
            bad("spec.image", "must not be empty".into());
        }
        if let Some(r) = self.replicas {
            if r < 0 {
                bad("spec.replicas", "must be at least 0".into());
            }
            if self.autoscaling.is_some() {
                bad(
                    "spec.replicas",
                    "must not be set together with spec.autoscaling (the HPA owns the count)"
                        .into(),
                );
            }
        }
        if let Some(a) = &self.autoscaling {
            if a.min_replicas < 1 {
                bad("spec.autoscaling.minReplicas", "must be at least 1".into());
            }
            if a.max_replicas < a.min_replicas {
                bad(
                    "spec.autoscaling.maxReplicas",
                    format!("must be at least minReplicas ({})", a.min_replicas),
                );
            }
            if a.engine == AutoscalingEngine::Keda && a.metric.is_some() {
                bad(
                    "spec.autoscaling.metric",
                    "not supported with engine keda (a KEDA trigger needs its own source, \
                     such as a Prometheus query); use targetCPUUtilizationPercent or engine hpa"
                        .into(),
                );
            }
            if a.target_cpu_utilization_percent.is_some_and(|t| t < 1) {
                bad(
                    "spec.autoscaling.targetCPUUtilizationPercent",
                    "must be at least 1".into(),
                );
            }
            if a.metric.as_ref().is_some_and(|m| m.name.is_empty()) {
                bad("spec.autoscaling.metric.name", "must not be empty".into());
            }
            // Utilisation is a share of the request: without one the HPA has nothing to
            // compute and never scales.
            let cpu_target = a.target_cpu_utilization_percent.is_some() || a.metric.is_none();
            let cpu_request = self
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .is_some_and(|r| r.cpu.is_some());
            if cpu_target && !cpu_request {
                bad(
                    "spec.resources.requests.cpu",
                    "required when autoscaling on CPU utilisation".into(),
                );
            }
        }
        if let Some(g) = &self.gpu {
            if g.count < 0 {
                bad("spec.gpu.count", "must be at least 0".into());
            }
            if g.resource.is_empty() {
                bad("spec.gpu.type", "must not be empty".into());
            }
        }
        if let Some(b) = &self.batching {
            if b.max_batch_size == Some(0) {
                bad("spec.batching.maxBatchSize", "must be at least 1".into());
            }
        }
        let k = &self.kafka;
        if k.bootstrap.trim().is_empty() {
            bad("spec.kafka.bootstrap", "must not be empty".into());
        }
        if k.topic.is_empty() {
            bad("spec.kafka.topic", "must not be empty".into());
        }
        match &k.dead_letter_topic {
            Some(d) if d.is_empty() => {
                bad("spec.kafka.deadLetterTopic", "must not be empty".into())
            }
            Some(d) if *d == k.topic => bad(
                "spec.kafka.deadLetterTopic",
                "must differ from spec.kafka.topic".into(),
            ),
            _ => {}
        }
        for (key, value) in &k.options {
            let field = format!("spec.kafka.options.{key}");
            if FIXED_KAFKA_OPTIONS.contains(&key.as_str()) {
                bad(
                    &field,
                    "is fixed by the pod (idempotent producer, acks=all)".into(),
                );
            }
            // The pod splits --kafka-opt on commas.
            if key.is_empty() || key.contains([',', '=']) || value.contains(',') {
                bad(&field, "keys and values must not contain commas".into());
            }
        }
        if let Some(s) = &k.secret_ref {
            if s.name.is_empty() {
                bad("spec.kafka.secretRef.name", "must not be empty".into());
            }
        }
        if let Some(t) = &self.tls {
            if t.secret_name.is_empty() {
                bad("spec.tls.secretName", "must not be empty".into());
            }
            if t.client_ca_secret_name.as_deref() == Some("") {
                bad("spec.tls.clientCaSecretName", "must not be empty".into());
            }
        }
        if self.device_tokens_secret.as_deref() == Some("") {
            bad("spec.deviceTokensSecret", "must not be empty".into());
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// GPUs per pod (0 without a `gpu` section).
    pub fn gpu_count(&self) -> i32 {
        self.gpu.as_ref().map_or(0, |g| g.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::spec;

    fn fields(spec: &InferencePoolSpec) -> Vec<String> {
        spec.validate()
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn the_fixture_is_valid() {
        spec().validate().unwrap();
    }

    #[test]
    fn errors_name_the_field() {
        let mut s = spec();
        s.models = vec![];
        s.kafka.topic = String::new();
        assert_eq!(
            fields(&s),
            vec![
                "spec.models: name at least one model",
                "spec.kafka.topic: must not be empty"
            ]
        );

        let mut s = spec();
        s.models = vec!["a".into(), "b,c".into(), "a".into()];
        assert_eq!(
            fields(&s),
            vec![
                "spec.models[1]: \"b,c\" is not a model name (empty, comma or space)",
                "spec.models[2]: a is listed twice"
            ]
        );
    }

    #[test]
    fn fixed_replicas_and_autoscaling_conflict() {
        let mut s = spec();
        s.replicas = Some(3);
        s.resources = Some(ComputeResources {
            requests: Some(CpuMemory {
                cpu: Some(Quantity("1".into())),
                memory: None,
            }),
            limits: None,
        });
        s.autoscaling = Some(Autoscaling {
            min_replicas: 4,
            max_replicas: 2,
            target_cpu_utilization_percent: Some(0),
            metric: None,
            engine: AutoscalingEngine::Hpa,
        });
        assert_eq!(
            fields(&s),
            vec![
                "spec.replicas: must not be set together with spec.autoscaling (the HPA owns the count)",
                "spec.autoscaling.maxReplicas: must be at least minReplicas (4)",
                "spec.autoscaling.targetCPUUtilizationPercent: must be at least 1",
            ]
        );
    }

    #[test]
    fn cpu_autoscaling_needs_a_cpu_request() {
        let mut s = spec();
        s.autoscaling = Some(Autoscaling {
            min_replicas: 1,
            max_replicas: 3,
            target_cpu_utilization_percent: None,
            metric: None,
            engine: AutoscalingEngine::Hpa,
        });
        assert_eq!(
            fields(&s),
            vec!["spec.resources.requests.cpu: required when autoscaling on CPU utilisation"]
        );
        // A custom metric alone needs no CPU request.
        if let Some(a) = s.autoscaling.as_mut() {
            a.metric = Some(MetricTarget {
                name: "visionfleet_inference_queue_depth".into(),
                average_value: Quantity("16".into()),
            });
        }
        s.validate().unwrap();
    }

    #[test]
    fn kafka_settings_the_pod_refuses_are_caught() {
        let mut s = spec();
        s.kafka.dead_letter_topic = Some(s.kafka.topic.clone());
        s.kafka.options.insert("acks".into(), "1".into());
        s.kafka.options.insert("client.id".into(), "a,b".into());
        assert_eq!(
            fields(&s),
            vec![
                "spec.kafka.deadLetterTopic: must differ from spec.kafka.topic",
                "spec.kafka.options.acks: is fixed by the pod (idempotent producer, acks=all)",
                "spec.kafka.options.client.id: keys and values must not contain commas",
            ]
        );
    }

    #[test]
    fn gpu_type_defaults_to_nvidia() {
        let gpu: Gpu = serde_json::from_value(serde_json::json!({"count": 1})).unwrap();
        assert_eq!(gpu.resource, "nvidia.com/gpu");
        assert!(gpu.node_selector.is_empty() && gpu.tolerations.is_empty());
    }

    #[test]
    fn the_keda_engine_takes_no_custom_metric() {
        let mut s = spec();
        s.autoscaling = Some(Autoscaling {
            min_replicas: 1,
            max_replicas: 3,
            target_cpu_utilization_percent: None,
            metric: Some(MetricTarget {
                name: "visionfleet_inference_queue_depth".into(),
                average_value: Quantity("16".into()),
            }),
            engine: AutoscalingEngine::Keda,
        });
        assert_eq!(
            fields(&s),
            vec!["spec.autoscaling.metric: not supported with engine keda (a KEDA trigger needs its own source, such as a Prometheus query); use targetCPUUtilizationPercent or engine hpa"]
        );
        let json = serde_json::to_value(s.autoscaling.as_ref()).unwrap();
        assert_eq!(json["engine"], "keda");
        let parsed: Autoscaling =
            serde_json::from_value(serde_json::json!({"minReplicas": 1, "maxReplicas": 2}))
                .unwrap();
        assert_eq!(parsed.engine, AutoscalingEngine::Hpa);
    }
}
