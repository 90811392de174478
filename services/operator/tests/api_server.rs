//! The operator against a real Kubernetes API server (kube-apiserver 1.35 with etcd, built
//! from the published Go modules by `scripts/kube-apiserver.sh`, as controller-runtime's
//! envtest runs them), acting as the Helm chart's ServiceAccount through impersonation,
//! with nothing more than the chart's Role. No kubelet or controller-manager runs: no pod
//! starts and no garbage collector deletes owned objects, so the tests check what the API
//! server holds, and stand in for the Deployment controller by writing the Deployment's
//! status themselves (as the real one would once pods are ready).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;
use serde_json::json;
use visionfleet_operator::{Config, InferencePool};

const RELEASE: &str = "vf";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The API server shared by this file's tests; it stops (and its folder goes) when the
/// test process exits, through the script's owner-PID watchdog.
struct ApiServer {
    kubeconfig: PathBuf,
}

fn api_server() -> &'static ApiServer {
    static SERVER: OnceLock<ApiServer> = OnceLock::new();
    SERVER.get_or_init(start_server)
}

/// A second API server, which also serves the Prometheus operator's ServiceMonitor and
/// KEDA's ScaledObject (their real CRDs, from `scripts/k8s-crds.sh`), so that what the
/// other tests see does not depend on which test ran first.
fn api_server_with_crds() -> &'static ApiServer {
    static SERVER: OnceLock<ApiServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let server = start_server();
        let crds = root().join(".state/k8s-crds");
        for (file, name) in [
            (
                "monitoring.coreos.com_servicemonitors.yaml",
                "servicemonitors.monitoring.coreos.com",
            ),
            ("keda.sh_scaledobjects.yaml", "scaledobjects.keda.sh"),
        ] {
            let path = crds.join(file);
            assert!(
                path.exists(),
                "{} missing: run scripts/k8s-crds.sh install",
                path.display()
            );
            server.kubectl(&["apply", "--server-side", "-f", &path.display().to_string()]);
            server.kubectl(&[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                &format!("crd/{name}"),
            ]);
        }
        server
    })
}

fn start_server() -> ApiServer {
    {
        let dir = tempfile::Builder::new()
            .prefix("vf-apiserver-")
            .tempdir()
            .unwrap()
            .keep();
        let out = run(Command::new(root().join("scripts/kube-apiserver.sh"))
            .args(["start", "--dir"])
            .arg(&dir)
            .args(["--owner-pid", &std::process::id().to_string(), "--cleanup"]));
        let kubeconfig = out
            .lines()
            .find_map(|l| l.strip_prefix("kubeconfig="))
            .expect("the script prints kubeconfig=")
            .into();
        let server = ApiServer { kubeconfig };
        // The CRD, as every test needs it, through the real kubectl.
        server.kubectl(&[
            "apply",
            "--server-side",
            "-f",
            &root()
                .join("k8s/crds/inferencepools.visionfleet.io.yaml")
                .display()
                .to_string(),
        ]);
        server.kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/inferencepools.visionfleet.io",
        ]);
        server
    }
}

/// Runs a command, failing the test with its output when it fails; returns stdout.
fn run(cmd: &mut Command) -> String {
    let out: Output = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A tool from `scripts/k8s-tools.sh` (helm, kubectl).
fn tool(name: &str) -> PathBuf {
    root().join(".state/k8s-tools/bin").join(name)
}

impl ApiServer {
    fn kubectl(&self, args: &[&str]) -> String {
        run(Command::new(tool("kubectl"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args))
    }

    /// `kubectl auth can-i` as `user`: whether the API server allows it.
    fn can_i(&self, user: &str, args: &[&str]) -> bool {
        let out = Command::new(tool("kubectl"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["auth", "can-i", "--as", user])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    }

    /// A client: cluster-admin, or impersonating `service_account` (`ns:name`) with the
    /// groups the API server gives ServiceAccounts.
    async fn client(&self, service_account: Option<(&str, &str)>) -> Client {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).unwrap();
        let mut config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .unwrap();
        if let Some((ns, name)) = service_account {
            config.auth_info.impersonate = Some(format!("system:serviceaccount:{ns}:{name}"));
            config.auth_info.impersonate_groups = Some(vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{ns}"),
                "system:authenticated".into(),
            ]);
        }
        Client::try_from(config).unwrap()
    }
}

/// `helm template` of the chart with `args`.
fn helm_template(namespace: &str, args: &[&str]) -> String {
    run(Command::new(tool("helm"))
        .args(["template", RELEASE])
        .arg(root().join("helm/visionfleet"))
        .args(["--namespace", namespace])
        .args(args))
}

async fn create_namespace(client: &Client, name: &str) {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
}

/// Polls `f` every 200 ms until it returns Some, for at most `timeout`.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A running operator: its task, its stop signal and its metrics address.
struct Operator {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), visionfleet_operator::Error>>,
    http: std::net::SocketAddr,
}

async fn start_operator(client: Client, namespace: &str, identity: &str) -> Operator {
    let config = <Config as clap::Parser>::parse_from([
        "visionfleet-operator",
        "--watch-namespace",
        namespace,
        "--lease-namespace",
        namespace,
        "--identity",
        identity,
    ]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(visionfleet_operator::run(config, client, listener, async {
        let _ = stopped.await;
    }));
    Operator { stop, task, http }
}

impl Operator {
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the operator stops within 30 s")
            .unwrap()
            .unwrap();
    }
}

fn condition<'a>(pool: &'a InferencePool, kind: &str) -> Option<&'a str> {
    pool.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| c.status.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_reconciles_pools_as_the_charts_service_account() {
    let server = api_server();
    let ns = "vision-op";
    let admin = server.client(None).await;
    create_namespace(&admin, ns).await;
    // The chart's ServiceAccount and Role, exactly as rendered.
    let rbac = helm_template(
        ns,
        &[
            "--show-only",
            "templates/operator-serviceaccount.yaml",
            "--show-only",
            "templates/operator-rbac.yaml",
        ],
    );
    let rbac_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(rbac_file.path(), rbac).unwrap();
    server.kubectl(&[
        "apply",
        "--server-side",
        "-f",
        &rbac_file.path().display().to_string(),
    ]);
    let sa = format!("system:serviceaccount:{ns}:{RELEASE}-operator");
    // Least privilege: what the Role grants and nothing more.
    assert!(server.can_i(&sa, &["patch", "deployments", "-n", ns]));
    assert!(server.can_i(
        &sa,
        &["patch", "inferencepools", "--subresource=status", "-n", ns]
    ));
    assert!(!server.can_i(&sa, &["patch", "inferencepools", "-n", ns]));
    assert!(!server.can_i(&sa, &["get", "secrets", "-n", ns]));
    assert!(!server.can_i(&sa, &["delete", "deployments", "-n", ns]));
    assert!(!server.can_i(&sa, &["create", "deployments", "-n", "default"]));
    assert!(!server.can_i(&sa, &["list", "inferencepools", "--all-namespaces"]));

    let as_operator = server
        .client(Some((ns, &format!("{RELEASE}-operator"))))
        .await;
    let operator = start_operator(as_operator.clone(), ns, "operator-1").await;

    let pools: Api<InferencePool> = Api::namespaced(admin.clone(), ns);
    let pool: InferencePool = serde_json::from_value(json!({
        "apiVersion": "visionfleet.io/v1alpha1",
        "kind": "InferencePool",
        "metadata": {"name": "cams", "namespace": ns},
        "spec": {
            "models": ["coco-yolov5s"],
            "image": "ghcr.io/visionfleet/inference:0.1.0",
            "replicas": 2,
            "resources": {"requests": {"cpu": "2", "memory": "2Gi"}},
            "kafka": {"bootstrap": "kafka.kafka.svc:9092", "topic": "visionfleet.detections.v1"}
        }
    }))
    .unwrap();
    let created = pools.create(&PostParams::default(), &pool).await.unwrap();
    let uid = created.metadata.uid.clone().unwrap();

    // The objects appear, owned by the pool and applied by the operator's field manager.
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), ns);
    let deployment = eventually("the Deployment", Duration::from_secs(60), || async {
        deployments.get_opt("cams").await.unwrap()
    })
    .await;
    let owner = &deployment.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (
            owner.kind.as_str(),
            owner.name.as_str(),
            owner.uid.as_str(),
            owner.controller
        ),
        ("InferencePool", "cams", uid.as_str(), Some(true))
    );
    let managers: Vec<(String, String)> = deployment
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .map(|m| {
            (
                m.manager.clone().unwrap_or_default(),
                m.operation.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        managers.contains(&("visionfleet-operator".into(), "Apply".into())),
        "{managers:?}"
    );
    assert_eq!(deployment.spec.as_ref().unwrap().replicas, Some(2));
    let services: Api<Service> = Api::namespaced(admin.clone(), ns);
    let headless = eventually("the headless Service", Duration::from_secs(30), || async {
        services.get_opt("cams-headless").await.unwrap()
    })
    .await;
    assert_eq!(
        headless.spec.as_ref().unwrap().cluster_ip.as_deref(),
        Some("None")
    );
    assert!(services.get_opt("cams").await.unwrap().is_some());
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(admin.clone(), ns);
    assert!(pdbs.get_opt("cams").await.unwrap().is_some());
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(admin.clone(), ns);
    assert!(
        hpas.get_opt("cams").await.unwrap().is_none(),
        "no autoscaling asked for"
    );

    // No pods run here: the pool reports itself not ready, for the generation it saw.
    let pool = eventually(
        "a status for generation 1",
        Duration::from_secs(30),
        || async {
            let p = pools.get("cams").await.unwrap();
            let observed = p.status.as_ref().and_then(|s| s.observed_generation);
            (observed == p.metadata.generation && condition(&p, "Ready").is_some()).then_some(p)
        },
    )
    .await;
    assert_eq!(
        condition(&pool, "Ready"),
        Some("False"),
        "{:?}",
        pool.status
    );

    // Standing in for the Deployment controller: both pods ready.
    let ready_status = |generation: Option<i64>, n: i32| {
        json!({"status": {"observedGeneration": generation, "replicas": n, "readyReplicas": n,
            "availableReplicas": n, "updatedReplicas": n}})
    };
    deployments
        .patch_status(
            "cams",
            &PatchParams::default(),
            &Patch::Merge(ready_status(deployment.metadata.generation, 2)),
        )
        .await
        .unwrap();
    eventually("Ready=True", Duration::from_secs(30), || async {
        let p = pools.get("cams").await.unwrap();
        (condition(&p, "Ready") == Some("True")
            && p.status.as_ref().map(|s| s.ready_replicas) == Some(2))
        .then_some(())
    })
    .await;

    // A spec change: the Deployment follows and the status names the new generation.
    pools
        .patch(
            "cams",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    eventually("3 replicas", Duration::from_secs(30), || async {
        let d = deployments.get("cams").await.unwrap();
        (d.spec.as_ref().unwrap().replicas == Some(3)).then_some(())
    })
    .await;
    eventually("generation 2 observed", Duration::from_secs(30), || async {
        let p = pools.get("cams").await.unwrap();
        (p.status.as_ref().and_then(|s| s.observed_generation) == p.metadata.generation
            && p.metadata.generation == Some(2)
            && condition(&p, "Ready") == Some("False"))
        .then_some(())
    })
    .await;

    // The scale subresource, as `kubectl scale` uses it.
    server.kubectl(&["-n", ns, "scale", "inferencepool/cams", "--replicas=1"]);
    eventually("1 replica", Duration::from_secs(30), || async {
        let d = deployments.get("cams").await.unwrap();
        (d.spec.as_ref().unwrap().replicas == Some(1)).then_some(())
    })
    .await;

    // Autoscaling on (a fixed count goes: the HPA owns it then): an HPA with the bounds;
    // off again: the HPA goes.
    pools
        .patch(
            "cams",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {
                "replicas": null,
                "autoscaling": {"minReplicas": 2, "maxReplicas": 5}
            }})),
        )
        .await
        .unwrap();
    let hpa = eventually("the HPA", Duration::from_secs(30), || async {
        hpas.get_opt("cams").await.unwrap()
    })
    .await;
    let hpa_spec = hpa.spec.unwrap();
    assert_eq!((hpa_spec.min_replicas, hpa_spec.max_replicas), (Some(2), 5));
    assert_eq!(hpa_spec.scale_target_ref.name, "cams");
    pools
        .patch(
            "cams",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"autoscaling": null, "replicas": 2}})),
        )
        .await
        .unwrap();
    eventually("the HPA removed", Duration::from_secs(30), || async {
        hpas.get_opt("cams").await.unwrap().is_none().then_some(())
    })
    .await;

    // Events about the pool, from the operator.
    let events: Api<Event> = Api::namespaced(admin.clone(), ns);
    let about_pool = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("cams"))
        .count();
    assert!(about_pool > 0, "no events about the pool");

    // Its own metrics.
    let metrics = http_get(operator.http, "/metrics");
    assert!(
        metrics.contains("visionfleet_operator_reconciliations_total{result=\"ok\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("visionfleet_operator_leader 1"),
        "{metrics}"
    );

    // Restart in the middle of work: stop the operator right after a change, start a new
    // one (it takes the Lease over once the old one let it go), and it converges.
    pools
        .patch(
            "cams",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await
        .unwrap();
    operator.stop().await;
    let operator = start_operator(as_operator.clone(), ns, "operator-2").await;
    eventually(
        "4 replicas after the restart",
        Duration::from_secs(90),
        || async {
            let d = deployments.get("cams").await.unwrap();
            (d.spec.as_ref().unwrap().replicas == Some(4)).then_some(())
        },
    )
    .await;

    // Invalid specs never reach the operator: the CRD's schema refuses them.
    let bad: InferencePool = serde_json::from_value(json!({
        "apiVersion": "visionfleet.io/v1alpha1",
        "kind": "InferencePool",
        "metadata": {"name": "bad", "namespace": ns},
        "spec": {"models": [], "image": "x", "kafka": {"bootstrap": "k:9092", "topic": "t"}}
    }))
    .unwrap();
    let refused = pools
        .create(&PostParams::default(), &bad)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("models"), "{refused}");

    // Deleting the pool is not held up (no finalizer); the owned objects carry the owner
    // reference the garbage collector deletes them by (no controller-manager runs here).
    pools.delete("cams", &Default::default()).await.unwrap();
    eventually("the pool gone", Duration::from_secs(30), || async {
        pools.get_opt("cams").await.unwrap().is_none().then_some(())
    })
    .await;
    operator.stop().await;
}

/// The chart's ServiceAccount and Role in `ns`, exactly as rendered.
fn install_chart_rbac(server: &ApiServer, ns: &str) {
    let rbac = helm_template(
        ns,
        &[
            "--show-only",
            "templates/operator-serviceaccount.yaml",
            "--show-only",
            "templates/operator-rbac.yaml",
        ],
    );
    let rbac_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(rbac_file.path(), rbac).unwrap();
    server.kubectl(&[
        "apply",
        "--server-side",
        "-f",
        &rbac_file.path().display().to_string(),
    ]);
}

fn applied_by_the_operator(meta: &kube::api::ObjectMeta) -> bool {
    meta.managed_fields.iter().flatten().any(|m| {
        m.manager.as_deref() == Some("visionfleet-operator")
            && m.operation.as_deref() == Some("Apply")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_prometheus_operator_and_keda_crds_a_service_monitor_and_a_scaled_object() {
    let server = api_server_with_crds();
    let ns = "vision-mon";
    let admin = server.client(None).await;
    create_namespace(&admin, ns).await;
    install_chart_rbac(server, ns);
    let sa_name = format!("{RELEASE}-operator");
    let sa = format!("system:serviceaccount:{ns}:{sa_name}");
    assert!(server.can_i(
        &sa,
        &["create", "servicemonitors.monitoring.coreos.com", "-n", ns]
    ));
    assert!(!server.can_i(
        &sa,
        &["delete", "servicemonitors.monitoring.coreos.com", "-n", ns]
    ));
    assert!(server.can_i(&sa, &["delete", "scaledobjects.keda.sh", "-n", ns]));
    assert!(!server.can_i(&sa, &["list", "scaledobjects.keda.sh", "-n", ns]));
    let operator = start_operator(server.client(Some((ns, &sa_name))).await, ns, "mon-1").await;

    let pools: Api<InferencePool> = Api::namespaced(admin.clone(), ns);
    let pool: InferencePool = serde_json::from_value(json!({
        "apiVersion": "visionfleet.io/v1alpha1",
        "kind": "InferencePool",
        "metadata": {"name": "watched", "namespace": ns},
        "spec": {
            "models": ["coco-yolov5s"],
            "image": "ghcr.io/visionfleet/inference:0.1.0",
            "resources": {"requests": {"cpu": "2", "memory": "2Gi"}},
            "autoscaling": {"minReplicas": 2, "maxReplicas": 5},
            "kafka": {"bootstrap": "kafka.kafka.svc:9092", "topic": "visionfleet.detections.v1"}
        }
    }))
    .unwrap();
    let uid = pools
        .create(&PostParams::default(), &pool)
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();

    // The ServiceMonitor: owned, applied, selecting the pool's Service and not the headless one.
    let monitors: Api<DynamicObject> = Api::namespaced_with(
        admin.clone(),
        ns,
        &visionfleet_operator::desired::service_monitor_resource(),
    );
    let sm = eventually("the ServiceMonitor", Duration::from_secs(60), || async {
        monitors.get_opt("watched").await.unwrap()
    })
    .await;
    let owner = &sm.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("InferencePool", uid.as_str(), Some(true))
    );
    assert!(applied_by_the_operator(&sm.metadata), "{:?}", sm.metadata);
    assert_eq!(
        sm.data["spec"]["endpoints"],
        json!([{"port": "http", "path": "/metrics", "interval": "30s"}])
    );
    let services: Api<Service> = Api::namespaced(admin.clone(), ns);
    let selector = &sm.data["spec"]["selector"];
    let selected = |s: &Service| {
        let labels = s.metadata.labels.clone().unwrap_or_default();
        selector["matchLabels"]
            .as_object()
            .unwrap()
            .iter()
            .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str())
            && selector["matchExpressions"]
                .as_array()
                .unwrap()
                .iter()
                .all(|e| {
                    e["operator"] == "DoesNotExist"
                        && !labels.contains_key(e["key"].as_str().unwrap())
                })
    };
    let service = eventually("the Service", Duration::from_secs(30), || async {
        services.get_opt("watched").await.unwrap()
    })
    .await;
    assert!(
        selected(&service),
        "{selector} vs {:?}",
        service.metadata.labels
    );
    let headless = services.get("watched-headless").await.unwrap();
    assert!(!selected(&headless), "{:?}", headless.metadata.labels);

    // The default engine is an HPA, even where KEDA is installed.
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(admin.clone(), ns);
    let scaled: Api<DynamicObject> = Api::namespaced_with(
        admin.clone(),
        ns,
        &visionfleet_operator::desired::scaled_object_resource(),
    );
    eventually("the HPA", Duration::from_secs(30), || async {
        hpas.get_opt("watched").await.unwrap()
    })
    .await;
    assert!(scaled.get_opt("watched").await.unwrap().is_none());

    // engine: keda: a ScaledObject with the bounds and a cpu trigger, and the HPA goes.
    pools
        .patch(
            "watched",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"autoscaling": {
                "engine": "keda", "targetCPUUtilizationPercent": 80}}})),
        )
        .await
        .unwrap();
    let so = eventually("the ScaledObject", Duration::from_secs(30), || async {
        scaled.get_opt("watched").await.unwrap()
    })
    .await;
    assert_eq!(
        so.data["spec"]["scaleTargetRef"],
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "watched"})
    );
    assert_eq!(
        (
            &so.data["spec"]["minReplicaCount"],
            &so.data["spec"]["maxReplicaCount"]
        ),
        (&json!(2), &json!(5))
    );
    assert_eq!(
        so.data["spec"]["triggers"],
        json!([{"type": "cpu", "metricType": "Utilization", "metadata": {"value": "80"}}])
    );
    assert_eq!(so.metadata.owner_references.as_ref().unwrap()[0].uid, uid);
    assert!(applied_by_the_operator(&so.metadata));
    eventually("the HPA removed", Duration::from_secs(30), || async {
        hpas.get_opt("watched")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;

    // Autoscaling off: the ScaledObject goes, no HPA comes back, the ServiceMonitor stays.
    pools
        .patch(
            "watched",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"autoscaling": null, "replicas": 2}})),
        )
        .await
        .unwrap();
    eventually(
        "the ScaledObject removed",
        Duration::from_secs(30),
        || async {
            scaled
                .get_opt("watched")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), ns);
    eventually("2 replicas", Duration::from_secs(30), || async {
        let d = deployments.get("watched").await.unwrap();
        (d.spec.as_ref().unwrap().replicas == Some(2)).then_some(())
    })
    .await;
    assert!(hpas.get_opt("watched").await.unwrap().is_none());
    assert!(monitors.get_opt("watched").await.unwrap().is_some());
    operator.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rendered_chart_is_accepted_by_the_api_server() {
    let server = api_server();
    let admin = server.client(None).await;
    create_namespace(&admin, "visionfleet").await;
    for values in [None, Some("values-gpu.yaml")] {
        let mut args = vec![];
        let path;
        if let Some(v) = values {
            path = root()
                .join("helm/visionfleet")
                .join(v)
                .display()
                .to_string();
            args.extend(["-f", path.as_str()]);
        }
        let rendered = helm_template("visionfleet", &args);
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), &rendered).unwrap();
        let out = server.kubectl(&[
            "apply",
            "--server-side",
            "--dry-run=server",
            "-f",
            &file.path().display().to_string(),
        ]);
        for kind in [
            "deployment.apps",
            "role.rbac",
            "inferencepool.visionfleet.io",
        ] {
            assert!(out.contains(kind), "{values:?}: {out}");
        }
        assert!(out.contains("serverside-applied (server dry run)"), "{out}");
    }
}

/// A minimal HTTP/1.1 GET returning the whole response (blocking: one short local call).
fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}
