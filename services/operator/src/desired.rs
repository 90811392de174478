//! What an `InferencePool` should look like in the cluster: the Deployment, the two
//! Services, the PodDisruptionBudget, the HPA or KEDA ScaledObject and the ServiceMonitor,
//! built without any I/O so each decision is unit-tested. Which optional APIs the cluster
//! serves ([`Served`]) is an input: the controller discovers it.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec,
    MetricIdentifier, MetricSpec, MetricTarget, PodsMetricSource, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, KeyToPath, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, SecretKeySelector, SecretVolumeSource, SecurityContext,
    Service, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Resource, ResourceExt};

use crate::crd::{AutoscalingEngine, CpuMemory, InferencePool, DEFAULT_TARGET_CPU_PERCENT};
use crate::Error;

/// The inference pod's gRPC port (ingest, KServe v2, grpc.health.v1).
pub const GRPC_PORT: i32 = 50051;
/// The inference pod's HTTP port (/metrics, /healthz, /readyz).
pub const HTTP_PORT: i32 = 9090;
/// The field manager of every server-side apply.
pub const MANAGER: &str = "visionfleet-operator";
/// Name of the inference container.
pub const CONTAINER: &str = "inference";
/// The user the pods run as (the distroless `nonroot` user).
pub const RUN_AS_USER: i64 = 65532;

const TLS_DIR: &str = "/etc/visionfleet/tls";
const CLIENT_CA_DIR: &str = "/etc/visionfleet/client-ca";
const TOKENS_DIR: &str = "/etc/visionfleet/tokens";
/// Seconds the pod's HTTP port may stay closed at start: it opens only once every model is
/// loaded and warmed up and Kafka has answered, which on a cold GPU node takes minutes.
const STARTUP_SECONDS: i32 = 600;
const STARTUP_PERIOD: i32 = 5;

/// Every object one pool owns.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// The pods.
    pub deployment: Deployment,
    /// The load-balanced Service (`<pool>`).
    pub service: Service,
    /// The headless Service (`<pool>-headless`) for client-side balancing over pod IPs.
    pub headless: Service,
    /// At most one pod down by voluntary disruption.
    pub pdb: PodDisruptionBudget,
    /// Present when `spec.autoscaling` is set, unless a ScaledObject replaces it.
    pub hpa: Option<HorizontalPodAutoscaler>,
    /// Present when `spec.autoscaling.engine` is `keda` and the cluster serves KEDA.
    pub scaled_object: Option<DynamicObject>,
    /// Present when the cluster serves the Prometheus operator's ServiceMonitor.
    pub service_monitor: Option<DynamicObject>,
}

/// The optional APIs the cluster serves, as the controller discovered them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Served {
    /// `monitoring.coreos.com/v1` `servicemonitors`.
    pub service_monitor: bool,
    /// `keda.sh/v1alpha1` `scaledobjects`.
    pub scaled_object: bool,
}

/// The Prometheus operator's ServiceMonitor (`monitoring.coreos.com/v1`).
pub fn service_monitor_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monitoring.coreos.com", "v1", "ServiceMonitor"),
        "servicemonitors",
    )
}

/// KEDA's ScaledObject (`keda.sh/v1alpha1`).
pub fn scaled_object_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("keda.sh", "v1alpha1", "ScaledObject"),
        "scaledobjects",
    )
}

/// The label only the headless Service carries, so that a ServiceMonitor can select the
/// load-balanced Service alone (selecting both would scrape every pod twice).
pub const HEADLESS_LABEL: &str = "visionfleet.io/headless";

/// The labels of every owned object; the first two also select the pods.
pub fn labels(pool: &str) -> BTreeMap<String, String> {
    let mut l = selector_labels(pool);
    l.insert(
        "app.kubernetes.io/managed-by".into(),
        "visionfleet-operator".into(),
    );
    l
}

/// The labels that select a pool's pods.
pub fn selector_labels(pool: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            "visionfleet-inference".to_string(),
        ),
        ("app.kubernetes.io/instance".to_string(), pool.to_string()),
    ])
}

/// [`selector_labels`] as a label selector string, for the scale subresource.
pub fn selector_string(pool: &str) -> String {
    selector_labels(pool)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Name of the headless Service.
pub fn headless_name(pool: &str) -> String {
    format!("{pool}-headless")
}

/// Builds every object for `pool`; the pool must come from the API server (name,
/// namespace and uid set) and have passed [`crate::crd::InferencePoolSpec::validate`].
/// Nothing optional is served: no ServiceMonitor, and an HPA for autoscaling.
pub fn desired(pool: &InferencePool) -> Result<Desired, Error> {
    desired_for(pool, Served::default())
}

/// Builds every object for `pool` in a cluster that serves `served`.
pub fn desired_for(pool: &InferencePool, served: Served) -> Result<Desired, Error> {
    let owner = pool
        .controller_owner_ref(&())
        .ok_or_else(|| Error::MissingObjectKey("metadata.uid"))?;
    let name = pool.name_any();
    let namespace = pool
        .namespace()
        .ok_or(Error::MissingObjectKey("namespace"))?;
    let meta = |object_name: String| ObjectMeta {
        name: Some(object_name),
        namespace: Some(namespace.clone()),
        labels: Some(labels(&name)),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    };
    let mut headless_meta = meta(headless_name(&name));
    if let Some(l) = headless_meta.labels.as_mut() {
        l.insert(HEADLESS_LABEL.into(), "true".into());
    }
    let keda = served.scaled_object
        && pool
            .spec
            .autoscaling
            .as_ref()
            .is_some_and(|a| a.engine == AutoscalingEngine::Keda);
    Ok(Desired {
        deployment: deployment(pool, meta(name.clone())),
        service: service(&name, meta(name.clone()), false),
        headless: service(&name, headless_meta, true),
        pdb: pdb(&name, meta(name.clone())),
        hpa: if keda {
            None
        } else {
            hpa(pool, meta(name.clone()))
        },
        scaled_object: if keda {
            scaled_object(pool, meta(name.clone()))
        } else {
            None
        },
        service_monitor: served
            .service_monitor
            .then(|| service_monitor(&name, meta(name.clone()))),
    })
}

/// The owner reference every owned object carries (garbage collection deletes them with
/// the pool, so the operator needs no finalizer).
pub fn owner_reference(pool: &InferencePool) -> Option<OwnerReference> {
    pool.controller_owner_ref(&())
}

fn deployment(pool: &InferencePool, meta: ObjectMeta) -> Deployment {
    let spec = &pool.spec;
    let name = pool.name_any();
    let gpus = spec.gpu_count();
    let gpu = spec.gpu.as_ref().filter(|_| gpus > 0);
    let mut volumes = vec![Volume {
        name: "tmp".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }];
    let mut mounts = vec![VolumeMount {
        name: "tmp".into(),
        mount_path: "/tmp".into(),
        ..VolumeMount::default()
    }];
    let mut secret_volume =
        |volume: &str, secret: &str, dir: &str, items: Option<Vec<KeyToPath>>| {
            volumes.push(Volume {
                name: volume.into(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(secret.into()),
                    items,
                    default_mode: Some(0o440),
                    ..SecretVolumeSource::default()
                }),
                ..Volume::default()
            });
            // A whole-volume mount (not subPath), so rotated secrets reach the pod, which
            // re-reads the token file.
            mounts.push(VolumeMount {
                name: volume.into(),
                mount_path: dir.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            });
        };
    let key = |k: &str| {
        Some(vec![KeyToPath {
            key: k.into(),
            path: k.into(),
            mode: None,
        }])
    };
    if let Some(tls) = &spec.tls {
        secret_volume("tls", &tls.secret_name, TLS_DIR, None);
        if let Some(ca) = &tls.client_ca_secret_name {
            secret_volume("client-ca", ca, CLIENT_CA_DIR, key("ca.crt"));
        }
    }
    if let Some(tokens) = &spec.device_tokens_secret {
        secret_volume("device-tokens", tokens, TOKENS_DIR, key("tokens"));
    }

    let http_probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Probe::default()
    };
    let container = Container {
        name: CONTAINER.into(),
        image: Some(spec.image.clone()),
        image_pull_policy: spec.image_pull_policy.map(|p| p.as_str().to_string()),
        args: Some(args(pool)),
        env: env(pool),
        ports: Some(vec![
            ContainerPort {
                name: Some("grpc".into()),
                container_port: GRPC_PORT,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("http".into()),
                container_port: HTTP_PORT,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
        ]),
        startup_probe: Some(http_probe(
            "/healthz",
            STARTUP_PERIOD,
            STARTUP_SECONDS / STARTUP_PERIOD,
        )),
        readiness_probe: Some(http_probe("/readyz", 5, 2)),
        liveness_probe: Some(http_probe("/healthz", 10, 3)),
        resources: resources(pool),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(mounts),
        ..Container::default()
    };
    let pod = PodSpec {
        containers: vec![container],
        volumes: Some(volumes),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS_USER),
            run_as_group: Some(RUN_AS_USER),
            fs_group: Some(RUN_AS_USER),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            }),
            ..PodSecurityContext::default()
        }),
        // The pod drains for up to 30 s (--shutdown-grace-seconds) and then flushes Kafka.
        termination_grace_period_seconds: Some(45),
        node_selector: gpu
            .filter(|g| !g.node_selector.is_empty())
            .map(|g| g.node_selector.clone()),
        tolerations: gpu
            .filter(|g| !g.tolerations.is_empty())
            .map(|g| g.tolerations.clone()),
        runtime_class_name: gpu.and_then(|g| g.runtime_class_name.clone()),
        ..PodSpec::default()
    };
    // A GPU pool rarely has a spare GPU to surge onto, so it replaces one pod at a time;
    // a CPU pool adds the new pod first and never drops below its count.
    let (surge, unavailable) = if gpus > 0 { (0, 1) } else { (1, 0) };
    Deployment {
        metadata: meta,
        spec: Some(DeploymentSpec {
            // With autoscaling the HPA owns the count: leaving it out of the applied
            // object keeps every apply from resetting what the HPA chose.
            replicas: if spec.autoscaling.is_some() {
                None
            } else {
                Some(spec.replicas.unwrap_or(1))
            },
            selector: LabelSelector {
                match_labels: Some(selector_labels(&name)),
                match_expressions: None,
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(surge)),
                    max_unavailable: Some(IntOrString::Int(unavailable)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(&name)),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

/// Environment variables holding the SASL credentials; `args` refers to them as `$(NAME)`,
/// which the kubelet expands, so the secret never appears in the pod spec.
const SASL_USERNAME_ENV: &str = "VF_KAFKA_SASL_USERNAME";
const SASL_PASSWORD_ENV: &str = "VF_KAFKA_SASL_PASSWORD";

/// The inference pod's flags (see `services/inference/src/config.rs`).
pub fn args(pool: &InferencePool) -> Vec<String> {
    let spec = &pool.spec;
    let mut a = vec![
        format!("--grpc-addr=0.0.0.0:{GRPC_PORT}"),
        format!("--http-addr=0.0.0.0:{HTTP_PORT}"),
        "--log-format=json".to_string(),
        format!("--models={}", spec.models.join(",")),
    ];
    if let Some(dir) = &spec.models_dir {
        a.push(format!("--models-dir={dir}"));
    }
    a.push(format!("--kafka-bootstrap={}", spec.kafka.bootstrap));
    a.push(format!("--topic={}", spec.kafka.topic));
    if let Some(dlq) = &spec.kafka.dead_letter_topic {
        a.push(format!("--dead-letter-topic={dlq}"));
    }
    for (k, v) in &spec.kafka.options {
        a.push(format!("--kafka-opt={k}={v}"));
    }
    if spec.kafka.secret_ref.is_some() {
        a.push(format!("--kafka-opt=sasl.username=$({SASL_USERNAME_ENV})"));
        a.push(format!("--kafka-opt=sasl.password=$({SASL_PASSWORD_ENV})"));
    }
    if let Some(b) = &spec.batching {
        if let Some(n) = b.max_batch_size {
            a.push(format!("--max-batch-size={n}"));
        }
        if let Some(ms) = b.max_queue_delay_ms {
            a.push(format!("--max-queue-delay-ms={ms}"));
        }
    }
    if let Some(tls) = &spec.tls {
        a.push(format!("--tls-cert={TLS_DIR}/tls.crt"));
        a.push(format!("--tls-key={TLS_DIR}/tls.key"));
        if tls.client_ca_secret_name.is_some() {
            a.push(format!("--tls-client-ca={CLIENT_CA_DIR}/ca.crt"));
        }
    }
    if spec.device_tokens_secret.is_some() {
        a.push(format!("--device-tokens={TOKENS_DIR}/tokens"));
    }
    a
}

fn env(pool: &InferencePool) -> Option<Vec<EnvVar>> {
    let s = pool.spec.kafka.secret_ref.as_ref()?;
    let from = |env: &str, key: &str| EnvVar {
        name: env.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: s.name.clone(),
                key: key.into(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
    };
    Some(vec![
        from(SASL_USERNAME_ENV, &s.username_key),
        from(SASL_PASSWORD_ENV, &s.password_key),
    ])
}

fn resources(pool: &InferencePool) -> Option<ResourceRequirements> {
    let spec = &pool.spec;
    let r = spec.resources.clone().unwrap_or_default();
    let to_map = |cm: Option<CpuMemory>| {
        let cm = cm.unwrap_or_default();
        let mut m = BTreeMap::new();
        if let Some(cpu) = cm.cpu {
            m.insert("cpu".to_string(), cpu);
        }
        if let Some(memory) = cm.memory {
            m.insert("memory".to_string(), memory);
        }
        m
    };
    let mut requests = to_map(r.requests);
    let mut limits = to_map(r.limits);
    if let Some(g) = spec.gpu.as_ref().filter(|g| g.count > 0) {
        // Extended resources must have requests equal to limits.
        let n = Quantity(g.count.to_string());
        requests.insert(g.resource.clone(), n.clone());
        limits.insert(g.resource.clone(), n);
    }
    if requests.is_empty() && limits.is_empty() {
        return None;
    }
    Some(ResourceRequirements {
        requests: Some(requests).filter(|m| !m.is_empty()),
        limits: Some(limits).filter(|m| !m.is_empty()),
        ..ResourceRequirements::default()
    })
}

fn service(pool: &str, meta: ObjectMeta, headless: bool) -> Service {
    let port = |name: &str, number: i32| ServicePort {
        name: Some(name.into()),
        port: number,
        target_port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    };
    Service {
        metadata: meta,
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(pool)),
            ports: Some(vec![port("grpc", GRPC_PORT), port("http", HTTP_PORT)]),
            cluster_ip: headless.then(|| "None".to_string()),
            type_: (!headless).then(|| "ClusterIP".to_string()),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// `maxUnavailable: 1` whatever the count: it follows the HPA without being re-applied,
/// lets a node drain proceed for a one-pod pool (which accepts that downtime), and keeps
/// all but one pod of a larger pool serving.
fn pdb(pool: &str, meta: ObjectMeta) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta,
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(pool)),
                match_expressions: None,
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }
}

/// Scrapes the pods' `/metrics` through the load-balanced Service's `http` port every 30 s.
fn service_monitor(pool: &str, meta: ObjectMeta) -> DynamicObject {
    let mut object = DynamicObject::new(pool, &service_monitor_resource());
    object.metadata = meta;
    object.data = serde_json::json!({
        "spec": {
            "selector": {
                "matchLabels": labels(pool),
                "matchExpressions": [{"key": HEADLESS_LABEL, "operator": "DoesNotExist"}],
            },
            "endpoints": [{"port": "http", "path": "/metrics", "interval": "30s"}],
        }
    });
    object
}

/// A KEDA ScaledObject with the pool's bounds and a `cpu` trigger (the target, or
/// [`DEFAULT_TARGET_CPU_PERCENT`]). `metric` does not map onto a KEDA trigger (those name
/// their own source); validation refuses it with the `keda` engine.
fn scaled_object(pool: &InferencePool, meta: ObjectMeta) -> Option<DynamicObject> {
    let a = pool.spec.autoscaling.as_ref()?;
    let target = a
        .target_cpu_utilization_percent
        .unwrap_or(DEFAULT_TARGET_CPU_PERCENT);
    let mut object = DynamicObject::new(&pool.name_any(), &scaled_object_resource());
    object.metadata = meta;
    object.data = serde_json::json!({
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": pool.name_any()},
            "minReplicaCount": a.min_replicas,
            "maxReplicaCount": a.max_replicas,
            "triggers": [{"type": "cpu", "metricType": "Utilization",
                "metadata": {"value": target.to_string()}}],
        }
    });
    Some(object)
}

fn hpa(pool: &InferencePool, meta: ObjectMeta) -> Option<HorizontalPodAutoscaler> {
    let a = pool.spec.autoscaling.as_ref()?;
    let mut metrics = Vec::new();
    let cpu = match (a.target_cpu_utilization_percent, &a.metric) {
        (Some(t), _) => Some(t),
        (None, None) => Some(DEFAULT_TARGET_CPU_PERCENT),
        (None, Some(_)) => None,
    };
    if let Some(t) = cpu {
        metrics.push(MetricSpec {
            type_: "Resource".into(),
            resource: Some(ResourceMetricSource {
                name: "cpu".into(),
                target: MetricTarget {
                    type_: "Utilization".into(),
                    average_utilization: Some(t),
                    ..MetricTarget::default()
                },
            }),
            ..MetricSpec::default()
        });
    }
    if let Some(m) = &a.metric {
        metrics.push(MetricSpec {
            type_: "Pods".into(),
            pods: Some(PodsMetricSource {
                metric: MetricIdentifier {
                    name: m.name.clone(),
                    selector: None,
                },
                target: MetricTarget {
                    type_: "AverageValue".into(),
                    average_value: Some(m.average_value.clone()),
                    ..MetricTarget::default()
                },
            }),
            ..MetricSpec::default()
        });
    }
    Some(HorizontalPodAutoscaler {
        metadata: meta,
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: pool.name_any(),
            },
            min_replicas: Some(a.min_replicas),
            max_replicas: a.max_replicas,
            metrics: Some(metrics),
            behavior: None,
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{
        Autoscaling, Batching, ComputeResources, Gpu, ImagePullPolicy, KafkaSecretRef,
        MetricTarget as PoolMetric, Tls,
    };
    use crate::fixtures::{pool, spec};
    use k8s_openapi::api::core::v1::Toleration;
    use serde_json::json;

    fn pod(d: &Deployment) -> &PodSpec {
        d.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
    }

    fn container(d: &Deployment) -> &Container {
        &pod(d).containers[0]
    }

    fn gpu_spec() -> crate::crd::InferencePoolSpec {
        let mut s = spec();
        s.gpu = Some(Gpu {
            count: 2,
            resource: "nvidia.com/gpu".into(),
            node_selector: BTreeMap::from([("gpu".to_string(), "h100".to_string())]),
            tolerations: vec![Toleration {
                key: Some("nvidia.com/gpu".into()),
                operator: Some("Exists".into()),
                effect: Some("NoSchedule".into()),
                ..Toleration::default()
            }],
            runtime_class_name: Some("nvidia".into()),
        });
        s
    }

    #[test]
    fn every_object_is_labelled_and_owned_by_the_pool() {
        let d = desired(&pool(spec())).unwrap();
        let expected_owner = OwnerReference {
            api_version: "visionfleet.io/v1alpha1".into(),
            kind: "InferencePool".into(),
            name: "cams".into(),
            uid: "0b7e4c1a-uid".into(),
            controller: Some(true),
            block_owner_deletion: None,
        };
        let mut s = spec();
        s.autoscaling = Some(Autoscaling {
            min_replicas: 1,
            max_replicas: 2,
            target_cpu_utilization_percent: None,
            metric: None,
            engine: AutoscalingEngine::Keda,
        });
        let all = desired_for(
            &pool(s),
            Served {
                service_monitor: true,
                scaled_object: true,
            },
        )
        .unwrap();
        let metas = [
            &d.deployment.metadata,
            &d.service.metadata,
            &d.pdb.metadata,
            &all.service_monitor.as_ref().unwrap().metadata,
            &all.scaled_object.as_ref().unwrap().metadata,
        ];
        let expected_labels = json!({
            "app.kubernetes.io/instance": "cams",
            "app.kubernetes.io/managed-by": "visionfleet-operator",
            "app.kubernetes.io/name": "visionfleet-inference",
        });
        for m in metas {
            assert_eq!(m.name.as_deref(), Some("cams"));
            assert_eq!(m.namespace.as_deref(), Some("vision"));
            assert_eq!(m.owner_references, Some(vec![expected_owner.clone()]));
            assert_eq!(serde_json::to_value(&m.labels).unwrap(), expected_labels);
        }
        // The headless Service also says it is the headless one.
        let h = &d.headless.metadata;
        assert_eq!(h.owner_references, Some(vec![expected_owner.clone()]));
        let mut headless_labels = expected_labels.clone();
        headless_labels["visionfleet.io/headless"] = json!("true");
        assert_eq!(serde_json::to_value(&h.labels).unwrap(), headless_labels);
        assert!(d.service_monitor.is_none() && d.scaled_object.is_none());
        assert_eq!(d.deployment.metadata.name.as_deref(), Some("cams"));
        assert_eq!(d.headless.metadata.name.as_deref(), Some("cams-headless"));
        assert!(d.hpa.is_none());
        assert_eq!(
            selector_string("cams"),
            "app.kubernetes.io/instance=cams,app.kubernetes.io/name=visionfleet-inference"
        );
    }

    #[test]
    fn a_pool_without_a_uid_is_refused() {
        let mut p = pool(spec());
        p.metadata.uid = None;
        assert!(matches!(
            desired(&p),
            Err(Error::MissingObjectKey("metadata.uid"))
        ));
    }

    #[test]
    fn the_minimal_deployment() {
        let d = desired(&pool(spec())).unwrap().deployment;
        let ds = d.spec.as_ref().unwrap();
        assert_eq!(ds.replicas, Some(1));
        assert_eq!(
            serde_json::to_value(&ds.selector).unwrap(),
            json!({"matchLabels": {
                "app.kubernetes.io/instance": "cams",
                "app.kubernetes.io/name": "visionfleet-inference",
            }})
        );
        assert_eq!(
            serde_json::to_value(&ds.strategy).unwrap(),
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}})
        );
        let c = container(&d);
        assert_eq!(
            c.image.as_deref(),
            Some("ghcr.io/visionfleet/inference:1.0")
        );
        assert_eq!(c.image_pull_policy, None);
        assert_eq!(
            c.args.clone().unwrap(),
            vec![
                "--grpc-addr=0.0.0.0:50051",
                "--http-addr=0.0.0.0:9090",
                "--log-format=json",
                "--models=coco-yolov5s",
                "--kafka-bootstrap=kafka:9092",
                "--topic=visionfleet.detections.v1",
            ]
        );
        assert_eq!(c.env, None);
        assert_eq!(c.resources, None);
        assert_eq!(
            serde_json::to_value(&c.ports).unwrap(),
            json!([
                {"name": "grpc", "containerPort": 50051, "protocol": "TCP"},
                {"name": "http", "containerPort": 9090, "protocol": "TCP"},
            ])
        );
        assert_eq!(
            serde_json::to_value(&c.startup_probe).unwrap(),
            json!({"httpGet": {"path": "/healthz", "port": "http"},
                   "periodSeconds": 5, "failureThreshold": 120, "timeoutSeconds": 2})
        );
        assert_eq!(
            serde_json::to_value(&c.readiness_probe).unwrap(),
            json!({"httpGet": {"path": "/readyz", "port": "http"},
                   "periodSeconds": 5, "failureThreshold": 2, "timeoutSeconds": 2})
        );
        assert_eq!(
            serde_json::to_value(&c.liveness_probe).unwrap(),
            json!({"httpGet": {"path": "/healthz", "port": "http"},
                   "periodSeconds": 10, "failureThreshold": 3, "timeoutSeconds": 2})
        );
        assert_eq!(
            serde_json::to_value(&c.security_context).unwrap(),
            json!({"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                   "runAsNonRoot": true, "capabilities": {"drop": ["ALL"]}})
        );
        let p = pod(&d);
        assert_eq!(
            serde_json::to_value(&p.security_context).unwrap(),
            json!({"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
                   "fsGroup": 65532, "seccompProfile": {"type": "RuntimeDefault"}})
        );
        assert_eq!(
            serde_json::to_value(&p.volumes).unwrap(),
            json!([{"name": "tmp", "emptyDir": {}}])
        );
        assert_eq!(p.node_selector, None);
        assert_eq!(p.tolerations, None);
        assert_eq!(p.runtime_class_name, None);
        assert_eq!(p.termination_grace_period_seconds, Some(45));
    }

    #[test]
    fn every_setting_maps_to_a_flag() {
        let mut s = spec();
        s.models = vec!["a".into(), "b".into()];
        s.models_dir = Some("/models".into());
        s.image_pull_policy = Some(ImagePullPolicy::IfNotPresent);
        s.replicas = Some(3);
        s.batching = Some(Batching {
            max_batch_size: Some(16),
            max_queue_delay_ms: Some(10),
        });
        s.kafka.dead_letter_topic = Some("dlq".into());
        s.kafka.options = BTreeMap::from([
            ("security.protocol".to_string(), "SASL_SSL".to_string()),
            ("sasl.mechanism".to_string(), "SCRAM-SHA-512".to_string()),
        ]);
        s.kafka.secret_ref = Some(KafkaSecretRef {
            name: "kafka-user".into(),
            username_key: "user".into(),
            password_key: "password".into(),
        });
        s.tls = Some(Tls {
            secret_name: "cams-tls".into(),
            client_ca_secret_name: Some("edge-ca".into()),
        });
        s.device_tokens_secret = Some("cams-tokens".into());
        let d = desired(&pool(s)).unwrap().deployment;
        assert_eq!(d.spec.as_ref().unwrap().replicas, Some(3));
        let c = container(&d);
        assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
        assert_eq!(
            c.args.clone().unwrap(),
            vec![
                "--grpc-addr=0.0.0.0:50051",
                "--http-addr=0.0.0.0:9090",
                "--log-format=json",
                "--models=a,b",
                "--models-dir=/models",
                "--kafka-bootstrap=kafka:9092",
                "--topic=visionfleet.detections.v1",
                "--dead-letter-topic=dlq",
                "--kafka-opt=sasl.mechanism=SCRAM-SHA-512",
                "--kafka-opt=security.protocol=SASL_SSL",
                "--kafka-opt=sasl.username=$(VF_KAFKA_SASL_USERNAME)",
                "--kafka-opt=sasl.password=$(VF_KAFKA_SASL_PASSWORD)",
                "--max-batch-size=16",
                "--max-queue-delay-ms=10",
                "--tls-cert=/etc/visionfleet/tls/tls.crt",
                "--tls-key=/etc/visionfleet/tls/tls.key",
                "--tls-client-ca=/etc/visionfleet/client-ca/ca.crt",
                "--device-tokens=/etc/visionfleet/tokens/tokens",
            ]
        );
        assert_eq!(
            serde_json::to_value(&c.env).unwrap(),
            json!([
                {"name": "VF_KAFKA_SASL_USERNAME", "valueFrom": {"secretKeyRef":
                    {"name": "kafka-user", "key": "user", "optional": false}}},
                {"name": "VF_KAFKA_SASL_PASSWORD", "valueFrom": {"secretKeyRef":
                    {"name": "kafka-user", "key": "password", "optional": false}}},
            ])
        );
        assert_eq!(
            serde_json::to_value(&c.volume_mounts).unwrap(),
            json!([
                {"name": "tmp", "mountPath": "/tmp"},
                {"name": "tls", "mountPath": "/etc/visionfleet/tls", "readOnly": true},
                {"name": "client-ca", "mountPath": "/etc/visionfleet/client-ca", "readOnly": true},
                {"name": "device-tokens", "mountPath": "/etc/visionfleet/tokens", "readOnly": true},
            ])
        );
        assert_eq!(
            serde_json::to_value(&pod(&d).volumes).unwrap(),
            json!([
                {"name": "tmp", "emptyDir": {}},
                {"name": "tls", "secret": {"secretName": "cams-tls", "defaultMode": 288}},
                {"name": "client-ca", "secret": {"secretName": "edge-ca", "defaultMode": 288,
                    "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"name": "device-tokens", "secret": {"secretName": "cams-tokens", "defaultMode": 288,
                    "items": [{"key": "tokens", "path": "tokens"}]}},
            ])
        );
    }

    #[test]
    fn gpus_are_requested_and_scheduled_for() {
        let mut s = gpu_spec();
        s.resources = Some(ComputeResources {
            requests: Some(CpuMemory {
                cpu: Some(Quantity("2".into())),
                memory: Some(Quantity("8Gi".into())),
            }),
            limits: Some(CpuMemory {
                cpu: None,
                memory: Some(Quantity("16Gi".into())),
            }),
        });
        let d = desired(&pool(s)).unwrap().deployment;
        assert_eq!(
            serde_json::to_value(&container(&d).resources).unwrap(),
            json!({
                "requests": {"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": "2"},
                "limits": {"memory": "16Gi", "nvidia.com/gpu": "2"},
            })
        );
        let p = pod(&d);
        assert_eq!(
            p.node_selector,
            Some(BTreeMap::from([("gpu".to_string(), "h100".to_string())]))
        );
        assert_eq!(
            serde_json::to_value(&p.tolerations).unwrap(),
            json!([{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}])
        );
        assert_eq!(p.runtime_class_name.as_deref(), Some("nvidia"));
        assert_eq!(
            serde_json::to_value(&d.spec.as_ref().unwrap().strategy).unwrap(),
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}})
        );
    }

    #[test]
    fn zero_gpus_ignore_the_gpu_scheduling_settings() {
        let mut s = gpu_spec();
        if let Some(g) = s.gpu.as_mut() {
            g.count = 0;
        }
        let d = desired(&pool(s)).unwrap().deployment;
        let p = pod(&d);
        assert_eq!(container(&d).resources, None);
        assert_eq!(
            (&p.node_selector, &p.tolerations, &p.runtime_class_name),
            (&None, &None, &None)
        );
    }

    #[test]
    fn services_expose_grpc_and_http() {
        let d = desired(&pool(spec())).unwrap();
        let ports = json!([
            {"name": "grpc", "port": 50051, "targetPort": "grpc", "protocol": "TCP"},
            {"name": "http", "port": 9090, "targetPort": "http", "protocol": "TCP"},
        ]);
        let selector = json!({
            "app.kubernetes.io/instance": "cams",
            "app.kubernetes.io/name": "visionfleet-inference",
        });
        assert_eq!(
            serde_json::to_value(&d.service.spec).unwrap(),
            json!({"type": "ClusterIP", "ports": ports, "selector": selector})
        );
        assert_eq!(
            serde_json::to_value(&d.headless.spec).unwrap(),
            json!({"clusterIP": "None", "ports": ports, "selector": selector})
        );
    }

    #[test]
    fn the_pdb_allows_one_pod_down() {
        let d = desired(&pool(spec())).unwrap();
        assert_eq!(
            serde_json::to_value(&d.pdb.spec).unwrap(),
            json!({"maxUnavailable": 1, "selector": {"matchLabels": {
                "app.kubernetes.io/instance": "cams",
                "app.kubernetes.io/name": "visionfleet-inference",
            }}})
        );
    }

    #[test]
    fn autoscaling_hands_the_count_to_an_hpa() {
        let mut s = spec();
        s.autoscaling = Some(Autoscaling {
            min_replicas: 2,
            max_replicas: 8,
            target_cpu_utilization_percent: None,
            metric: None,
            engine: AutoscalingEngine::Hpa,
        });
        let d = desired(&pool(s.clone())).unwrap();
        assert_eq!(d.deployment.spec.as_ref().unwrap().replicas, None);
        let hpa = d.hpa.unwrap();
        assert_eq!(hpa.metadata.name.as_deref(), Some("cams"));
        assert_eq!(
            serde_json::to_value(&hpa.spec).unwrap(),
            json!({
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "cams"},
                "minReplicas": 2,
                "maxReplicas": 8,
                "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 70}}}],
            })
        );

        s.autoscaling = Some(Autoscaling {
            min_replicas: 1,
            max_replicas: 4,
            target_cpu_utilization_percent: None,
            metric: Some(PoolMetric {
                name: "visionfleet_inference_queue_depth".into(),
                average_value: Quantity("16".into()),
            }),
            engine: AutoscalingEngine::Hpa,
        });
        let hpa = desired(&pool(s)).unwrap().hpa.unwrap();
        assert_eq!(
            serde_json::to_value(&hpa.spec.unwrap().metrics).unwrap(),
            json!([{"type": "Pods", "pods": {
                "metric": {"name": "visionfleet_inference_queue_depth"},
                "target": {"type": "AverageValue", "averageValue": "16"}}}])
        );
    }

    fn autoscaled(engine: AutoscalingEngine) -> crate::crd::InferencePoolSpec {
        let mut s = spec();
        s.autoscaling = Some(Autoscaling {
            min_replicas: 2,
            max_replicas: 6,
            target_cpu_utilization_percent: Some(60),
            metric: None,
            engine,
        });
        s
    }

    const ALL: Served = Served {
        service_monitor: true,
        scaled_object: true,
    };

    #[test]
    fn a_service_monitor_scrapes_the_load_balanced_service_when_served() {
        assert!(desired(&pool(spec())).unwrap().service_monitor.is_none());
        let d = desired_for(&pool(spec()), ALL).unwrap();
        let sm = d.service_monitor.unwrap();
        let value = serde_json::to_value(&sm).unwrap();
        assert_eq!(value["apiVersion"], "monitoring.coreos.com/v1");
        assert_eq!(value["kind"], "ServiceMonitor");
        assert_eq!(
            value["spec"],
            json!({
                "selector": {
                    "matchLabels": {
                        "app.kubernetes.io/instance": "cams",
                        "app.kubernetes.io/managed-by": "visionfleet-operator",
                        "app.kubernetes.io/name": "visionfleet-inference",
                    },
                    "matchExpressions": [
                        {"key": "visionfleet.io/headless", "operator": "DoesNotExist"}
                    ],
                },
                "endpoints": [{"port": "http", "path": "/metrics", "interval": "30s"}],
            })
        );
        // It selects the Service (its labels match) but not the headless one.
        let matches = |labels: &BTreeMap<String, String>| {
            value["spec"]["selector"]["matchLabels"]
                .as_object()
                .unwrap()
                .iter()
                .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str())
                && !labels.contains_key(HEADLESS_LABEL)
        };
        assert!(matches(d.service.metadata.labels.as_ref().unwrap()));
        assert!(!matches(d.headless.metadata.labels.as_ref().unwrap()));
    }

    #[test]
    fn the_keda_engine_makes_a_scaled_object_instead_of_an_hpa() {
        let d = desired_for(&pool(autoscaled(AutoscalingEngine::Keda)), ALL).unwrap();
        assert!(d.hpa.is_none());
        assert_eq!(d.deployment.spec.as_ref().unwrap().replicas, None);
        let value = serde_json::to_value(d.scaled_object.unwrap()).unwrap();
        assert_eq!(value["apiVersion"], "keda.sh/v1alpha1");
        assert_eq!(value["kind"], "ScaledObject");
        assert_eq!(
            value["spec"],
            json!({
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "cams"},
                "minReplicaCount": 2,
                "maxReplicaCount": 6,
                "triggers": [{"type": "cpu", "metricType": "Utilization",
                    "metadata": {"value": "60"}}],
            })
        );
        // No target: the default.
        let mut s = autoscaled(AutoscalingEngine::Keda);
        if let Some(a) = s.autoscaling.as_mut() {
            a.target_cpu_utilization_percent = None;
        }
        let value =
            serde_json::to_value(desired_for(&pool(s), ALL).unwrap().scaled_object).unwrap();
        assert_eq!(value["spec"]["triggers"][0]["metadata"]["value"], "70");
    }

    #[test]
    fn keda_is_used_only_when_asked_for_and_served() {
        // The default engine keeps the HPA even where KEDA is installed.
        let d = desired_for(&pool(autoscaled(AutoscalingEngine::Hpa)), ALL).unwrap();
        assert!(d.hpa.is_some() && d.scaled_object.is_none());
        // KEDA asked for but not served: the HPA, so the pool still scales.
        let d = desired_for(
            &pool(autoscaled(AutoscalingEngine::Keda)),
            Served {
                service_monitor: true,
                scaled_object: false,
            },
        )
        .unwrap();
        assert!(d.hpa.is_some() && d.scaled_object.is_none());
        // No autoscaling: neither.
        let d = desired_for(&pool(spec()), ALL).unwrap();
        assert!(d.hpa.is_none() && d.scaled_object.is_none());
    }
}
