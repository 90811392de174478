//! The committed CRD must be the one the code generates, so `kubectl apply -f k8s/crds`
//! installs the schema the operator expects.

use kube::CustomResourceExt;
use visionfleet_operator::InferencePool;

#[test]
fn the_committed_crd_matches_the_generated_one() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../k8s/crds/inferencepools.visionfleet.io.yaml"
    );
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    let generated = visionfleet_operator::crd_yaml().expect("crd yaml");
    assert!(
        committed == generated,
        "{path} is out of date; run \
         `cargo run -p visionfleet-operator -- crd > k8s/crds/inferencepools.visionfleet.io.yaml`"
    );
}

#[test]
fn the_crd_has_the_names_and_subresources_kubectl_uses() {
    let crd = InferencePool::crd();
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("inferencepools.visionfleet.io")
    );
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.names.short_names, Some(vec!["ipool".to_string()]));
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    let sub = serde_json::to_value(&version.subresources).expect("json");
    assert_eq!(
        sub,
        serde_json::json!({
            "status": {},
            "scale": {
                "specReplicasPath": ".spec.replicas",
                "statusReplicasPath": ".status.replicas",
                "labelSelectorPath": ".status.selector",
            },
        })
    );
    let columns: Vec<_> = version
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| (c.name.as_str(), c.type_.as_str(), c.json_path.as_str()))
        .collect();
    assert_eq!(
        columns,
        vec![
            (
                "Ready",
                "string",
                ".status.conditions[?(@.type==\"Ready\")].status"
            ),
            ("Replicas", "integer", ".status.replicas"),
            ("Models", "string", ".spec.models"),
            ("Age", "date", ".metadata.creationTimestamp"),
        ]
    );
}

#[test]
fn the_schema_checks_minimums_and_enums() {
    let schema = serde_json::to_value(InferencePool::crd()).expect("json");
    let spec = &schema["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let props = &spec["properties"];
    assert_eq!(props["models"]["minItems"], 1);
    assert_eq!(props["replicas"]["minimum"], 0.0);
    assert_eq!(
        props["autoscaling"]["properties"]["minReplicas"]["minimum"],
        1.0
    );
    assert_eq!(props["gpu"]["properties"]["count"]["minimum"], 0.0);
    assert_eq!(
        props["gpu"]["properties"]["type"]["default"],
        "nvidia.com/gpu"
    );
    assert_eq!(
        props["batching"]["properties"]["maxBatchSize"]["minimum"],
        1.0
    );
    assert_eq!(
        props["imagePullPolicy"]["enum"],
        serde_json::json!(["Always", "IfNotPresent", "Never"])
    );
    assert_eq!(props["kafka"]["properties"]["bootstrap"]["minLength"], 1);
    assert_eq!(
        spec["required"],
        serde_json::json!(["image", "kafka", "models"])
    );
}
