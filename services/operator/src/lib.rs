//! The VisionFleet operator: turns `InferencePool` resources into the inference pods'
//! Deployment, Services, PodDisruptionBudget and HPA, and reports how the pods are doing in
//! the pool's status.
//!
//! Decisions are pure ([`desired`], [`status`], [`crd`] validation); [`controller`] only
//! moves objects between them and the API server.

pub mod config;
pub mod controller;
pub mod crd;
pub mod desired;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod status;

#[cfg(test)]
mod fixtures;

pub use config::Config;
pub use crd::{InferencePool, InferencePoolSpec, InferencePoolStatus};

/// Everything a reconciliation or the operator's start-up can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API server failed.
    #[error("kubernetes api: {0}")]
    Kube(#[from] kube::Error),
    /// An object from the API server lacks a field it always has there.
    #[error("object has no {0}")]
    MissingObjectKey(&'static str),
    /// The CRD could not be written as YAML.
    #[error("crd yaml: {0}")]
    Yaml(String),
    /// Leader election failed.
    #[error("leader election: {0}")]
    Lease(String),
    /// A listener failed.
    #[error("http server: {0}")]
    Http(#[from] std::io::Error),
}

/// The `InferencePool` CRD as YAML, as `visionfleet-operator crd` prints it.
pub fn crd_yaml() -> Result<String, Error> {
    use kube::CustomResourceExt;
    serde_saphyr::to_string(&InferencePool::crd()).map_err(|e| Error::Yaml(e.to_string()))
}

/// Runs the operator until `shutdown` completes: serves `/metrics` and `/healthz` on
/// `http`, waits for the leader Lease (unless leader election is off), then reconciles.
/// Losing the Lease ends it with an error, so the pod restarts as a standby instead of
/// reconciling next to the new leader. The client is a parameter so a test can point it at
/// any API server (`kube::Config::from_custom_kubeconfig`).
pub async fn run(
    config: Config,
    client: kube::Client,
    http: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    use std::sync::Arc;

    let metrics = Arc::new(metrics::Metrics::new());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|&s| s).await;
        }
    };
    let server = axum::serve(http, http::router(metrics.clone())).with_graceful_shutdown(stopped());
    let server = tokio::spawn(async move { server.await });

    let identity = config.identity();
    let ctx = Arc::new(controller::Context::new(
        client.clone(),
        metrics.clone(),
        identity.clone(),
    ));
    let namespace = config.watch_namespace.clone();
    let result = if config.leader_election {
        let settings = leader::LeaseSettings {
            name: config.lease_name.clone(),
            namespace: config
                .lease_namespace
                .clone()
                .unwrap_or_else(|| client.default_namespace().to_string()),
            identity,
            duration_seconds: config.lease_duration_seconds,
            grace_seconds: config.lease_grace_seconds,
        };
        let mut election = leader::Election::start(client, &settings).await?;
        tracing::info!(lease = %settings.name, namespace = %settings.namespace, "waiting for the leader lease");
        let result = tokio::select! {
            acquired = election.acquired() => match acquired {
                Ok(()) => {
                    tracing::info!("leading");
                    metrics.leader.set(1);
                    tokio::select! {
                        () = controller::run(ctx, namespace.as_deref(), stopped()) => Ok(()),
                        () = election.lost() => Err(Error::Lease("lost the leader lease".into())),
                    }
                }
                Err(e) => Err(e),
            },
            () = stopped() => Ok(()),
        };
        metrics.leader.set(0);
        election.release().await;
        result
    } else {
        controller::run(ctx, namespace.as_deref(), stopped()).await;
        Ok(())
    };
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "http server failed"),
        Err(e) => tracing::warn!(error = %e, "http server task panicked"),
    }
    result
}
