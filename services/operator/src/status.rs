//! The pool's status from what its Deployment reports: replica counts and the `Ready`,
//! `Progressing` and `Degraded` conditions, computed without I/O from the observed
//! Deployment, the previous conditions and the clock.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::crd::{FieldError, InferencePoolStatus};
use crate::desired::selector_string;

/// How long a pool may stay not ready before it counts as degraded: long enough for a cold
/// GPU node to pull the image and warm the models up.
pub const DEGRADED_AFTER: SignedDuration = SignedDuration::from_secs(15 * 60);

/// Condition type: every desired pod is ready.
pub const READY: &str = "Ready";
/// Condition type: a rollout (or scale) is under way.
pub const PROGRESSING: &str = "Progressing";
/// Condition type: the pool cannot reach its desired state without help.
pub const DEGRADED: &str = "Degraded";

/// Everything the status is computed from.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// Name of the pool (for the selector).
    pub pool: &'a str,
    /// The pool's `metadata.generation`.
    pub generation: Option<i64>,
    /// The pool's Deployment, when it exists.
    pub deployment: Option<&'a Deployment>,
    /// The status the pool had before, for transition times.
    pub previous: Option<&'a InferencePoolStatus>,
    /// Now.
    pub now: Timestamp,
}

/// The status of a pool whose spec passed validation.
pub fn status(o: Observed<'_>) -> InferencePoolStatus {
    let Some(d) = o.deployment else {
        return finish(
            o,
            0,
            0,
            [
                (
                    READY,
                    false,
                    "DeploymentMissing",
                    "the Deployment is not created yet".into(),
                ),
                (
                    PROGRESSING,
                    true,
                    "Creating",
                    "creating the Deployment".into(),
                ),
                (DEGRADED, false, "AsExpected", String::new()),
            ],
        );
    };
    let s = d.status.clone().unwrap_or_default();
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let replicas = s.replicas.unwrap_or(0);
    let ready = s.ready_replicas.unwrap_or(0);
    let updated = s.updated_replicas.unwrap_or(0);
    let available = s.available_replicas.unwrap_or(0);
    let seen = match (s.observed_generation, d.metadata.generation) {
        (Some(seen), Some(generation)) => seen >= generation,
        (_, None) => true,
        (None, Some(_)) => false,
    };
    let deployment_condition = |type_: &str| {
        s.conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == type_)
            .cloned()
    };

    let is_ready = ready >= desired;
    let ready_condition = if desired == 0 {
        (
            READY,
            true,
            "ScaledToZero",
            "the pool has no pods".to_string(),
        )
    } else if is_ready {
        (
            READY,
            true,
            "PodsReady",
            format!("{ready}/{desired} pods ready"),
        )
    } else {
        (
            READY,
            false,
            "PodsNotReady",
            format!("{ready}/{desired} pods ready"),
        )
    };

    let deadline_exceeded = deployment_condition("Progressing")
        .filter(|c| c.status == "False")
        .filter(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded"));
    let rolled_out = seen && updated == desired && replicas == desired && available == desired;
    let progressing = if let Some(c) = &deadline_exceeded {
        (
            PROGRESSING,
            false,
            "ProgressDeadlineExceeded",
            c.message.clone().unwrap_or_default(),
        )
    } else if rolled_out {
        (
            PROGRESSING,
            false,
            "RolledOut",
            format!("{desired} pods up to date"),
        )
    } else {
        (
            PROGRESSING,
            true,
            "RollingOut",
            format!("{updated}/{desired} pods updated, {replicas} pods in all"),
        )
    };

    let failure = deployment_condition("ReplicaFailure").filter(|c| c.status == "True");
    let not_ready_since = o
        .previous
        .and_then(|p| find(&p.conditions, READY))
        .filter(|c| c.status == "False")
        .map(|c| c.last_transition_time.0);
    let long_unready = !is_ready
        && not_ready_since.is_some_and(|since| o.now.duration_since(since) >= DEGRADED_AFTER);
    let degraded = if let Some(c) = failure {
        (
            DEGRADED,
            true,
            "ReplicaFailure",
            c.message.unwrap_or_default(),
        )
    } else if let Some(c) = deadline_exceeded {
        (
            DEGRADED,
            true,
            "ProgressDeadlineExceeded",
            c.message.unwrap_or_default(),
        )
    } else if long_unready {
        (
            DEGRADED,
            true,
            "Unavailable",
            format!(
                "{ready}/{desired} pods ready for more than {} minutes",
                DEGRADED_AFTER.as_secs() / 60
            ),
        )
    } else {
        (DEGRADED, false, "AsExpected", String::new())
    };
    finish(o, replicas, ready, [ready_condition, progressing, degraded])
}

/// The status of a pool whose spec failed validation: nothing was applied.
pub fn invalid(o: Observed<'_>, errors: &[FieldError]) -> InferencePoolStatus {
    let message = errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    let previous = o.previous.cloned().unwrap_or_default();
    finish(
        o,
        previous.replicas,
        previous.ready_replicas,
        [
            (READY, false, "InvalidSpec", message.clone()),
            (PROGRESSING, false, "InvalidSpec", message.clone()),
            (DEGRADED, true, "InvalidSpec", message),
        ],
    )
}

fn finish(
    o: Observed<'_>,
    replicas: i32,
    ready_replicas: i32,
    conditions: [(&str, bool, &str, String); 3],
) -> InferencePoolStatus {
    let previous = o.previous.map(|p| p.conditions.as_slice()).unwrap_or(&[]);
    InferencePoolStatus {
        observed_generation: o.generation,
        replicas,
        ready_replicas,
        selector: Some(selector_string(o.pool)),
        conditions: conditions
            .into_iter()
            .map(|(type_, status, reason, message)| {
                let status = if status { "True" } else { "False" }.to_string();
                // The transition time moves only when the status does.
                let last_transition_time = find(previous, type_)
                    .filter(|c| c.status == status)
                    .map_or(Time(o.now), |c| c.last_transition_time.clone());
                Condition {
                    type_: type_.to_string(),
                    status,
                    reason: reason.to_string(),
                    message,
                    observed_generation: o.generation,
                    last_transition_time,
                }
            })
            .collect(),
    }
}

/// The condition of `type_`.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentSpec, DeploymentStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    /// A Deployment of `desired` pods at generation 3 with this status.
    fn deployment(desired: i32, status: DeploymentStatus) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                generation: Some(3),
                ..ObjectMeta::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(desired),
                ..DeploymentSpec::default()
            }),
            status: Some(status),
        }
    }

    fn counts(replicas: i32, ready: i32, updated: i32, available: i32) -> DeploymentStatus {
        DeploymentStatus {
            observed_generation: Some(3),
            replicas: Some(replicas),
            ready_replicas: Some(ready),
            updated_replicas: Some(updated),
            available_replicas: Some(available),
            ..DeploymentStatus::default()
        }
    }

    fn observe<'a>(
        d: Option<&'a Deployment>,
        previous: Option<&'a InferencePoolStatus>,
        now: Timestamp,
    ) -> InferencePoolStatus {
        status(Observed {
            pool: "cams",
            generation: Some(7),
            deployment: d,
            previous,
            now,
        })
    }

    /// (type, status, reason, message) of each condition.
    fn summary(s: &InferencePoolStatus) -> Vec<(String, String, String, String)> {
        s.conditions
            .iter()
            .map(|c| {
                (
                    c.type_.clone(),
                    c.status.clone(),
                    c.reason.clone(),
                    c.message.clone(),
                )
            })
            .collect()
    }

    fn row(t: &str, s: &str, r: &str, m: &str) -> (String, String, String, String) {
        (t.into(), s.into(), r.into(), m.into())
    }

    #[test]
    fn a_rolled_out_pool_is_ready() {
        let d = deployment(3, counts(3, 3, 3, 3));
        let s = observe(Some(&d), None, t(0));
        assert_eq!(
            summary(&s),
            vec![
                row("Ready", "True", "PodsReady", "3/3 pods ready"),
                row("Progressing", "False", "RolledOut", "3 pods up to date"),
                row("Degraded", "False", "AsExpected", ""),
            ]
        );
        assert_eq!((s.replicas, s.ready_replicas), (3, 3));
        assert_eq!(s.observed_generation, Some(7));
        assert_eq!(
            s.selector.as_deref(),
            Some("app.kubernetes.io/instance=cams,app.kubernetes.io/name=visionfleet-inference")
        );
        assert!(s
            .conditions
            .iter()
            .all(|c| c.observed_generation == Some(7) && c.last_transition_time.0 == t(0)));
    }

    #[test]
    fn a_rollout_is_progressing_until_every_pod_is_updated() {
        // A surge pod is up, old pods not yet gone.
        let d = deployment(3, counts(4, 3, 1, 3));
        assert_eq!(
            summary(&observe(Some(&d), None, t(0))),
            vec![
                row("Ready", "True", "PodsReady", "3/3 pods ready"),
                row(
                    "Progressing",
                    "True",
                    "RollingOut",
                    "1/3 pods updated, 4 pods in all"
                ),
                row("Degraded", "False", "AsExpected", ""),
            ]
        );
        // The Deployment controller has not seen the new template yet.
        let mut stale = counts(3, 3, 3, 3);
        stale.observed_generation = Some(2);
        let d = deployment(3, stale);
        assert_eq!(
            summary(&observe(Some(&d), None, t(0)))[1],
            row(
                "Progressing",
                "True",
                "RollingOut",
                "3/3 pods updated, 3 pods in all"
            )
        );
    }

    #[test]
    fn a_missing_deployment_is_being_created() {
        let s = observe(None, None, t(0));
        assert_eq!(
            summary(&s),
            vec![
                row(
                    "Ready",
                    "False",
                    "DeploymentMissing",
                    "the Deployment is not created yet"
                ),
                row("Progressing", "True", "Creating", "creating the Deployment"),
                row("Degraded", "False", "AsExpected", ""),
            ]
        );
        assert_eq!((s.replicas, s.ready_replicas), (0, 0));
    }

    #[test]
    fn zero_replicas_is_ready() {
        let d = deployment(0, counts(0, 0, 0, 0));
        assert_eq!(
            summary(&observe(Some(&d), None, t(0)))[0],
            row("Ready", "True", "ScaledToZero", "the pool has no pods")
        );
    }

    #[test]
    fn replica_failure_degrades_the_pool() {
        let mut st = counts(0, 0, 0, 0);
        st.conditions = Some(vec![DeploymentCondition {
            type_: "ReplicaFailure".into(),
            status: "True".into(),
            reason: Some("FailedCreate".into()),
            message: Some("exceeded quota: gpu".into()),
            ..DeploymentCondition::default()
        }]);
        let d = deployment(2, st);
        assert_eq!(
            summary(&observe(Some(&d), None, t(0))),
            vec![
                row("Ready", "False", "PodsNotReady", "0/2 pods ready"),
                row(
                    "Progressing",
                    "True",
                    "RollingOut",
                    "0/2 pods updated, 0 pods in all"
                ),
                row("Degraded", "True", "ReplicaFailure", "exceeded quota: gpu"),
            ]
        );
    }

    #[test]
    fn a_missed_progress_deadline_stops_progressing_and_degrades() {
        let mut st = counts(3, 2, 1, 2);
        st.conditions = Some(vec![DeploymentCondition {
            type_: "Progressing".into(),
            status: "False".into(),
            reason: Some("ProgressDeadlineExceeded".into()),
            message: Some("ReplicaSet \"cams-5d9\" has timed out progressing.".into()),
            ..DeploymentCondition::default()
        }]);
        let d = deployment(2, st);
        let msg = "ReplicaSet \"cams-5d9\" has timed out progressing.";
        assert_eq!(
            summary(&observe(Some(&d), None, t(0)))[1..],
            [
                row("Progressing", "False", "ProgressDeadlineExceeded", msg),
                row("Degraded", "True", "ProgressDeadlineExceeded", msg),
            ]
        );
    }

    #[test]
    fn unready_past_the_threshold_is_degraded_and_transition_times_hold() {
        let d = deployment(2, counts(2, 1, 2, 1));
        let first = observe(Some(&d), None, t(0));
        assert_eq!(
            summary(&first)[2],
            row("Degraded", "False", "AsExpected", "")
        );
        // Still unready 14 minutes later: not yet degraded, and no time moved.
        let later = observe(Some(&d), Some(&first), t(14 * 60));
        assert_eq!(
            summary(&later)[2],
            row("Degraded", "False", "AsExpected", "")
        );
        assert_eq!(later, first);
        // 15 minutes: degraded, with its own transition time; Ready's stays.
        let degraded = observe(Some(&d), Some(&later), t(15 * 60));
        assert_eq!(
            summary(&degraded)[2],
            row(
                "Degraded",
                "True",
                "Unavailable",
                "1/2 pods ready for more than 15 minutes"
            )
        );
        let times: Vec<_> = degraded
            .conditions
            .iter()
            .map(|c| c.last_transition_time.0)
            .collect();
        assert_eq!(times, vec![t(0), t(0), t(15 * 60)]);
        // Recovered: degraded turns false again.
        let d = deployment(2, counts(2, 2, 2, 2));
        let ok = observe(Some(&d), Some(&degraded), t(16 * 60));
        assert_eq!(summary(&ok)[2], row("Degraded", "False", "AsExpected", ""));
        assert_eq!(ok.conditions[0].last_transition_time.0, t(16 * 60));
    }

    #[test]
    fn an_invalid_spec_is_reported_with_the_fields() {
        let previous = InferencePoolStatus {
            replicas: 2,
            ready_replicas: 2,
            ..InferencePoolStatus::default()
        };
        let errors = [
            FieldError {
                field: "spec.models".into(),
                message: "name at least one model".into(),
            },
            FieldError {
                field: "spec.kafka.topic".into(),
                message: "must not be empty".into(),
            },
        ];
        let s = invalid(
            Observed {
                pool: "cams",
                generation: Some(8),
                deployment: None,
                previous: Some(&previous),
                now: t(0),
            },
            &errors,
        );
        let msg = "spec.models: name at least one model; spec.kafka.topic: must not be empty";
        assert_eq!(
            summary(&s),
            vec![
                row("Ready", "False", "InvalidSpec", msg),
                row("Progressing", "False", "InvalidSpec", msg),
                row("Degraded", "True", "InvalidSpec", msg),
            ]
        );
        assert_eq!(
            (s.replicas, s.ready_replicas, s.observed_generation),
            (2, 2, Some(8))
        );
    }
}
