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
