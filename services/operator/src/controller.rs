//! The controller: watches `InferencePool`s and the Deployments they own, server-side
//! applies the objects [`crate::desired`] builds, writes the status [`crate::status`]
//! computes, and records Events when a condition changes.
//!
//! No finalizer: every owned object carries a controller owner reference to its pool, so
//! the garbage collector deletes them with the pool and there is nothing else to clean up.
//!
//! Optional APIs (the Prometheus operator's ServiceMonitor, KEDA's ScaledObject) are
//! discovered on every reconciliation of a valid pool, before anything is applied: one GET of each
//! API group version (`/apis/monitoring.coreos.com/v1`, `/apis/keda.sh/v1alpha1`), which
//! every authenticated user may read (the default `system:discovery` role), so no RBAC
//! grant is needed and no cache can go stale when a CRD is installed or removed. The cost
//! is two cheap discovery reads per reconciliation (at most one per pool every 30 s when
//! nothing changes).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;

use crate::crd::{InferencePool, InferencePoolStatus};
use crate::desired::{self, Served, MANAGER};
use crate::metrics::{Metrics, Outcome};
use crate::status::{self, Observed, DEGRADED, PROGRESSING, READY};
use crate::Error;

/// How often a settled pool is re-applied anyway, which repairs drift in objects the
/// controller does not watch (Services, PDB, HPA).
const RESYNC: Duration = Duration::from_secs(300);
/// How often a pool that is rolling out or not ready is looked at, so `Degraded` turns
/// true on time even when the Deployment reports nothing new.
const RECHECK: Duration = Duration::from_secs(30);
/// Back-off after a failed reconciliation.
const RETRY: Duration = Duration::from_secs(15);

/// What every reconciliation shares.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Publishes Events about pools.
    pub recorder: Recorder,
    /// The operator's metrics.
    pub metrics: Arc<Metrics>,
}

impl Context {
    /// A context whose Events name `identity` as the reporting instance.
    pub fn new(client: Client, metrics: Arc<Metrics>, identity: String) -> Self {
        let reporter = Reporter {
            controller: MANAGER.to_string(),
            instance: Some(identity),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
        }
    }
}

/// Runs the controller until `stop` completes. `namespace` limits it to one namespace.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<&str>,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let (pools, deployments) = match namespace {
        Some(ns) => (
            Api::<InferencePool>::namespaced(ctx.client.clone(), ns),
            Api::<Deployment>::namespaced(ctx.client.clone(), ns),
        ),
        None => (
            Api::<InferencePool>::all(ctx.client.clone()),
            Api::<Deployment>::all(ctx.client.clone()),
        ),
    };
    // Only Deployments the operator made: it needs no view of the others.
    let owned =
        watcher::Config::default().labels("app.kubernetes.io/managed-by=visionfleet-operator");
    Controller::new(pools, watcher::Config::default())
        .owns(deployments, owned)
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((pool, _)) => tracing::debug!(pool = %pool, "reconciled"),
                Err(e) => tracing::warn!(error = %e, "reconcile failed"),
            }
        })
        .await;
}

/// One reconciliation, timed and counted.
pub async fn reconcile(pool: Arc<InferencePool>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = apply_pool(&pool, &ctx).await;
    let outcome = match &result {
        Ok((outcome, _)) => *outcome,
        Err(_) => Outcome::Error,
    };
    ctx.metrics
        .observe(outcome, started.elapsed().as_secs_f64());
    result.map(|(_, action)| action)
}

fn error_policy(pool: Arc<InferencePool>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(pool = %pool.name_any(), error = %error, "reconcile failed, retrying");
    Action::requeue(RETRY)
}

async fn apply_pool(pool: &InferencePool, ctx: &Context) -> Result<(Outcome, Action), Error> {
    let name = pool.name_any();
    let ns = pool
        .namespace()
        .ok_or(Error::MissingObjectKey("namespace"))?;
    let client = &ctx.client;
    let pools: Api<InferencePool> = Api::namespaced(client.clone(), &ns);
    let now = k8s_openapi::jiff::Timestamp::now();
    let previous = pool.status.as_ref();

    if let Err(errors) = pool.spec.validate() {
        let observed = Observed {
            pool: &name,
            generation: pool.metadata.generation,
            deployment: None,
            previous,
            now,
        };
        let new = status::invalid(observed, &errors);
        write_status(&pools, &name, previous, &new).await?;
        publish(ctx, pool, previous, &new).await;
        tracing::info!(pool = %name, namespace = %ns, errors = ?errors, "invalid spec");
        // A fixed spec is a new generation, which triggers the next reconciliation.
        return Ok((Outcome::Invalid, Action::await_change()));
    }

    let served = served(client).await?;
    let want = desired::desired_for(pool, served)?;
    let params = PatchParams::apply(MANAGER).force();
    let deployment = apply(
        &Api::<Deployment>::namespaced(client.clone(), &ns),
        &want.deployment,
        &params,
    )
    .await?;
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    apply(&services, &want.service, &params).await?;
    apply(&services, &want.headless, &params).await?;
    apply(
        &Api::<PodDisruptionBudget>::namespaced(client.clone(), &ns),
        &want.pdb,
        &params,
    )
    .await?;
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), &ns);
    match &want.hpa {
        Some(hpa) => {
            apply(&hpas, hpa, &params).await?;
        }
        None => delete_owned(&hpas, pool, &name, "HPA").await?,
    }
    if served.scaled_object {
        let scaled: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &ns, &desired::scaled_object_resource());
        match &want.scaled_object {
            Some(so) => {
                apply(&scaled, so, &params).await?;
            }
            None => delete_owned(&scaled, pool, &name, "ScaledObject").await?,
        }
    } else if pool
        .spec
        .autoscaling
        .as_ref()
        .is_some_and(|a| a.engine == crate::crd::AutoscalingEngine::Keda)
    {
        tracing::warn!(pool = %name, namespace = %ns,
            "autoscaling.engine is keda but keda.sh/v1alpha1 is not served: using an HPA");
    }
    if let Some(sm) = &want.service_monitor {
        let monitors: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &ns, &desired::service_monitor_resource());
        apply(&monitors, sm, &params).await?;
    }

    let observed = Observed {
        pool: &name,
        generation: pool.metadata.generation,
        deployment: Some(&deployment),
        previous,
        now,
    };
    let new = status::status(observed);
    write_status(&pools, &name, previous, &new).await?;
    publish(ctx, pool, previous, &new).await;
    let settled = status::find(&new.conditions, READY).is_some_and(|c| c.status == "True")
        && status::find(&new.conditions, PROGRESSING).is_some_and(|c| c.status == "False");
    Ok((
        Outcome::Ok,
        Action::requeue(if settled { RESYNC } else { RECHECK }),
    ))
}

/// Server-side applies `object` and returns what the API server stored.
async fn apply<K>(api: &Api<K>, object: &K, params: &PatchParams) -> Result<K, Error>
where
    K: Resource + Clone + Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = object
        .meta()
        .name
        .clone()
        .ok_or(Error::MissingObjectKey("metadata.name"))?;
    Ok(api.patch(&name, params, &Patch::Apply(object)).await?)
}

/// Which optional APIs the cluster serves, by API discovery.
async fn served(client: &Client) -> Result<Served, Error> {
    Ok(Served {
        service_monitor: serves(client, "monitoring.coreos.com/v1", "servicemonitors").await?,
        scaled_object: serves(client, "keda.sh/v1alpha1", "scaledobjects").await?,
    })
}

/// Whether `group_version` is served and lists `plural` (a 404 means it is not).
async fn serves(client: &Client, group_version: &str, plural: &str) -> Result<bool, Error> {
    match client.list_api_group_resources(group_version).await {
        Ok(list) => Ok(list.resources.iter().any(|r| r.name == plural)),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Removes the object `name` (the HPA after `spec.autoscaling` is dropped or KEDA takes
/// over, the ScaledObject after autoscaling or the `keda` engine is dropped), but only one
/// this pool owns.
async fn delete_owned<K>(
    api: &Api<K>,
    pool: &InferencePool,
    name: &str,
    what: &str,
) -> Result<(), Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let Some(object) = api.get_opt(name).await? else {
        return Ok(());
    };
    let ours = desired::owner_reference(pool)
        .is_some_and(|o| object.owner_references().iter().any(|r| r.uid == o.uid));
    if ours {
        api.delete(name, &DeleteParams::default()).await?;
        tracing::info!(pool = %name, "{what} no longer wanted, deleted");
    }
    Ok(())
}

/// Writes the status subresource when it changed.
async fn write_status(
    pools: &Api<InferencePool>,
    name: &str,
    previous: Option<&InferencePoolStatus>,
    new: &InferencePoolStatus,
) -> Result<(), Error> {
    if previous == Some(new) {
        return Ok(());
    }
    let patch = serde_json::json!({
        "apiVersion": InferencePool::api_version(&()),
        "kind": InferencePool::kind(&()),
        "status": new,
    });
    pools
        .patch_status(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    Ok(())
}

/// Records an Event for each condition that changed; a failure to record is logged, not
/// retried (Events are best effort).
async fn publish(
    ctx: &Context,
    pool: &InferencePool,
    previous: Option<&InferencePoolStatus>,
    new: &InferencePoolStatus,
) {
    let reference = pool.object_ref(&());
    for event in events(previous, new) {
        if let Err(e) = ctx.recorder.publish(&event, &reference).await {
            tracing::warn!(pool = %pool.name_any(), error = %e, reason = %event.reason, "recording an event failed");
        }
    }
}

/// The Events for the conditions whose status differs from `previous`: `Ready` and
/// `Progressing` changes are Normal, `Degraded` turning true and `Ready` turning false
/// are Warnings. Conditions that changed for the same reason (`InvalidSpec` turns all three)
/// make one Event, the Warning if there is one: the recorder would fold them into one
/// series anyway.
pub fn events(previous: Option<&InferencePoolStatus>, new: &InferencePoolStatus) -> Vec<Event> {
    let before = previous.map(|p| p.conditions.as_slice()).unwrap_or(&[]);
    let mut out: Vec<Event> = Vec::new();
    for event in condition_events(before, new) {
        match out.iter_mut().find(|e| e.reason == event.reason) {
            Some(seen) if seen.type_ == EventType::Normal && event.type_ == EventType::Warning => {
                *seen = event;
            }
            Some(_) => {}
            None => out.push(event),
        }
    }
    out
}

fn condition_events<'a>(
    before: &'a [k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    new: &'a InferencePoolStatus,
) -> impl Iterator<Item = Event> + 'a {
    new.conditions
        .iter()
        .filter(|c| status::find(before, &c.type_).is_none_or(|b| b.status != c.status))
        // Progressing turning false after a rollout says nothing Ready does not.
        .filter(|c| !(c.type_ == PROGRESSING && c.status == "False" && c.reason == "RolledOut"))
        // Nothing to say for a pool that was never degraded.
        .filter(|c| {
            !(c.type_ == DEGRADED
                && c.status == "False"
                && status::find(before, DEGRADED).is_none())
        })
        .map(|c| {
            let warning = (c.type_ == DEGRADED && c.status == "True")
                || (c.type_ == READY
                    && c.status == "False"
                    && status::find(before, READY).is_some());
            Event {
                type_: if warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: c.reason.clone(),
                note: Some(format!("{}={}: {}", c.type_, c.status, c.message)),
                action: "Reconcile".to_string(),
                secondary: None,
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use k8s_openapi::jiff::Timestamp;

    fn with(conditions: &[(&str, &str, &str)]) -> InferencePoolStatus {
        InferencePoolStatus {
            conditions: conditions
                .iter()
                .map(|(t, s, r)| Condition {
                    type_: t.to_string(),
                    status: s.to_string(),
                    reason: r.to_string(),
                    message: "m".into(),
                    observed_generation: Some(1),
                    last_transition_time: Time(Timestamp::UNIX_EPOCH),
                })
                .collect(),
            ..InferencePoolStatus::default()
        }
    }

    fn summary(events: &[Event]) -> Vec<(EventType, &str)> {
        events
            .iter()
            .map(|e| (e.type_, e.reason.as_str()))
            .collect()
    }

    #[test]
    fn a_new_pool_records_that_it_is_being_created() {
        let new = with(&[
            ("Ready", "False", "DeploymentMissing"),
            ("Progressing", "True", "Creating"),
            ("Degraded", "False", "AsExpected"),
        ]);
        let events = events(None, &new);
        assert_eq!(
            summary(&events),
            vec![
                (EventType::Normal, "DeploymentMissing"),
                (EventType::Normal, "Creating")
            ]
        );
        assert_eq!(events[1].note.as_deref(), Some("Progressing=True: m"));
        assert_eq!(events[1].action, "Reconcile");
    }

    #[test]
    fn an_invalid_spec_is_one_warning() {
        let new = with(&[
            ("Ready", "False", "InvalidSpec"),
            ("Progressing", "False", "InvalidSpec"),
            ("Degraded", "True", "InvalidSpec"),
        ]);
        let events = events(None, &new);
        assert_eq!(summary(&events), vec![(EventType::Warning, "InvalidSpec")]);
        assert_eq!(events[0].note.as_deref(), Some("Degraded=True: m"));
    }

    #[test]
    fn only_changed_conditions_record_events() {
        let before = with(&[
            ("Ready", "True", "PodsReady"),
            ("Progressing", "True", "RollingOut"),
            ("Degraded", "False", "AsExpected"),
        ]);
        assert!(events(Some(&before), &before).is_empty());
        let rolled_out = with(&[
            ("Ready", "True", "PodsReady"),
            ("Progressing", "False", "RolledOut"),
            ("Degraded", "False", "AsExpected"),
        ]);
        assert!(events(Some(&before), &rolled_out).is_empty());
        let broken = with(&[
            ("Ready", "False", "PodsNotReady"),
            ("Progressing", "False", "ProgressDeadlineExceeded"),
            ("Degraded", "True", "ProgressDeadlineExceeded"),
        ]);
        assert_eq!(
            summary(&events(Some(&before), &broken)),
            vec![
                (EventType::Warning, "PodsNotReady"),
                (EventType::Warning, "ProgressDeadlineExceeded"),
            ]
        );
        let recovered = with(&[
            ("Ready", "True", "PodsReady"),
            ("Progressing", "False", "RolledOut"),
            ("Degraded", "False", "AsExpected"),
        ]);
        assert_eq!(
            summary(&events(Some(&broken), &recovered)),
            vec![
                (EventType::Normal, "PodsReady"),
                (EventType::Normal, "AsExpected")
            ]
        );
    }

    mod against_a_mock_api_server {
        use std::pin::pin;

        use super::*;
        use crate::fixtures::{pool, spec};
        use http::{Request, Response};
        use kube::client::Body;

        type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

        /// One expected call and how to answer it.
        struct Call {
            method: &'static str,
            path: &'static str,
            answer: Answer,
        }

        enum Answer {
            /// The request body back, as the API server answers an apply.
            Echo,
            /// This JSON with this status code.
            Json(u16, serde_json::Value),
        }

        fn status_json(code: u16, reason: &str) -> serde_json::Value {
            serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "message": reason, "reason": reason, "code": code})
        }

        /// Answers `calls` in order, checking each request; returns the bodies received.
        async fn serve(handle: Handle, calls: Vec<Call>) -> Vec<serde_json::Value> {
            let mut handle = pin!(handle);
            let mut bodies = Vec::new();
            for call in calls {
                let (request, send) = handle.next_request().await.expect("a request");
                assert_eq!(request.method().as_str(), call.method, "{}", request.uri());
                assert_eq!(request.uri().path(), call.path);
                if call.method == "PATCH" {
                    let query = request.uri().query().unwrap_or_default();
                    assert!(
                        query.contains("fieldManager=visionfleet-operator")
                            && query.contains("force=true"),
                        "{query}"
                    );
                    assert_eq!(
                        request.headers()[http::header::CONTENT_TYPE],
                        "application/apply-patch+yaml"
                    );
                }
                let body = request.into_body().collect_bytes().await.expect("body");
                let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                bodies.push(json);
                let response = match call.answer {
                    Answer::Echo => Response::new(Body::from(body.to_vec())),
                    Answer::Json(code, value) => Response::builder()
                        .status(code)
                        .body(Body::from(serde_json::to_vec(&value).expect("json")))
                        .expect("response"),
                };
                send.send_response(response);
            }
            bodies
        }

        fn context() -> (Arc<Context>, Handle) {
            let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
            let client = Client::new(service, "default");
            let ctx = Context::new(client, Arc::new(Metrics::new()), "test-0".into());
            (Arc::new(ctx), handle)
        }

        const NS: &str = "/namespaces/vision";

        #[tokio::test]
        async fn a_new_pool_is_applied_and_its_status_written() {
            let (ctx, handle) = context();
            let p = pool(spec());
            let stored = serde_json::to_value(&p).expect("json");
            let path = |p: &str| Box::leak(p.replace("{ns}", NS).into_boxed_str()) as &str;
            let calls = vec![
                Call {
                    method: "GET",
                    path: "/apis/monitoring.coreos.com/v1",
                    answer: Answer::Json(404, status_json(404, "NotFound")),
                },
                Call {
                    method: "GET",
                    path: "/apis/keda.sh/v1alpha1",
                    answer: Answer::Json(404, status_json(404, "NotFound")),
                },
                Call {
                    method: "PATCH",
                    path: path("/apis/apps/v1{ns}/deployments/cams"),
                    answer: Answer::Echo,
                },
                Call {
                    method: "PATCH",
                    path: path("/api/v1{ns}/services/cams"),
                    answer: Answer::Echo,
                },
                Call {
                    method: "PATCH",
                    path: path("/api/v1{ns}/services/cams-headless"),
                    answer: Answer::Echo,
                },
                Call {
                    method: "PATCH",
                    path: path("/apis/policy/v1{ns}/poddisruptionbudgets/cams"),
                    answer: Answer::Echo,
                },
                Call {
                    method: "GET",
                    path: path("/apis/autoscaling/v2{ns}/horizontalpodautoscalers/cams"),
                    answer: Answer::Json(404, status_json(404, "NotFound")),
                },
                Call {
                    method: "PATCH",
                    path: path("/apis/visionfleet.io/v1alpha1{ns}/inferencepools/cams/status"),
                    answer: Answer::Json(200, stored),
                },
                Call {
                    method: "POST",
                    path: path("/apis/events.k8s.io/v1{ns}/events"),
                    answer: Answer::Echo,
                },
                Call {
                    method: "POST",
                    path: path("/apis/events.k8s.io/v1{ns}/events"),
                    answer: Answer::Echo,
                },
            ];
            let server = tokio::spawn(serve(handle, calls));
            let action =
                tokio::time::timeout(Duration::from_secs(10), reconcile(Arc::new(p), ctx.clone()))
                    .await
                    .expect("reconcile finished")
                    .expect("reconcile succeeded");
            assert_eq!(action, Action::requeue(RECHECK));
            let bodies = server.await.expect("server");
            assert_eq!(bodies[2]["kind"], "Deployment");
            assert_eq!(
                bodies[2]["metadata"]["ownerReferences"][0]["kind"],
                "InferencePool"
            );
            let status = &bodies[7];
            assert_eq!(status["apiVersion"], "visionfleet.io/v1alpha1");
            assert_eq!(status["status"]["observedGeneration"], 2);
            let conditions: Vec<_> = status["status"]["conditions"]
                .as_array()
                .expect("conditions")
                .iter()
                .map(|c| {
                    (
                        c["type"].as_str(),
                        c["status"].as_str(),
                        c["reason"].as_str(),
                    )
                })
                .collect();
            assert_eq!(
                conditions,
                vec![
                    (Some("Ready"), Some("False"), Some("PodsNotReady")),
                    (Some("Progressing"), Some("True"), Some("RollingOut")),
                    (Some("Degraded"), Some("False"), Some("AsExpected")),
                ]
            );
            assert_eq!(bodies[8]["reason"], "PodsNotReady");
            assert_eq!(bodies[8]["reportingController"], "visionfleet-operator");
            assert_eq!(bodies[9]["reason"], "RollingOut");
            assert!(ctx
                .metrics
                .render()
                .contains("visionfleet_operator_reconciliations_total{result=\"ok\"} 1"));
        }

        #[tokio::test]
        async fn an_api_error_fails_the_reconciliation() {
            let (ctx, handle) = context();
            let calls = vec![
                Call {
                    method: "GET",
                    path: "/apis/monitoring.coreos.com/v1",
                    answer: Answer::Json(404, status_json(404, "NotFound")),
                },
                Call {
                    method: "GET",
                    path: "/apis/keda.sh/v1alpha1",
                    answer: Answer::Json(404, status_json(404, "NotFound")),
                },
                Call {
                    method: "PATCH",
                    path: "/apis/apps/v1/namespaces/vision/deployments/cams",
                    answer: Answer::Json(403, status_json(403, "Forbidden")),
                },
            ];
            let server = tokio::spawn(serve(handle, calls));
            let result = tokio::time::timeout(
                Duration::from_secs(10),
                reconcile(Arc::new(pool(spec())), ctx.clone()),
            )
            .await
            .expect("reconcile finished");
            assert!(matches!(result, Err(Error::Kube(_))), "{result:?}");
            server.await.expect("server");
            assert!(ctx
                .metrics
                .render()
                .contains("visionfleet_operator_reconciliations_total{result=\"error\"} 1"));
        }

        #[tokio::test]
        async fn an_invalid_pool_only_gets_its_status() {
            let (ctx, handle) = context();
            let mut s = spec();
            s.models.clear();
            let p = pool(s);
            let stored = serde_json::to_value(&p).expect("json");
            let calls = vec![
                Call {
                    method: "PATCH",
                    path:
                        "/apis/visionfleet.io/v1alpha1/namespaces/vision/inferencepools/cams/status",
                    answer: Answer::Json(200, stored),
                },
                Call {
                    method: "POST",
                    path: "/apis/events.k8s.io/v1/namespaces/vision/events",
                    answer: Answer::Echo,
                },
            ];
            let server = tokio::spawn(serve(handle, calls));
            let action =
                tokio::time::timeout(Duration::from_secs(10), reconcile(Arc::new(p), ctx.clone()))
                    .await
                    .expect("reconcile finished")
                    .expect("reconcile succeeded");
            assert_eq!(action, Action::await_change());
            let bodies = server.await.expect("server");
            assert_eq!(
                bodies[0]["status"]["conditions"][2]["message"],
                "spec.models: name at least one model"
            );
            assert_eq!(bodies.len(), 2);
            assert_eq!(bodies[1]["type"], "Warning");
            assert_eq!(bodies[1]["reason"], "InvalidSpec");
            assert!(ctx
                .metrics
                .render()
                .contains("visionfleet_operator_reconciliations_total{result=\"invalid\"} 1"));
        }
    }
}
