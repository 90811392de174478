//! Leader election on a `coordination.k8s.io` Lease, so that of several operator replicas
//! only one reconciles (kube-runtime has no elector; kube-lease-manager renews the Lease
//! with server-side apply).

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Error;

/// A running election: the Lease is renewed in the background while this lives.
pub struct Election {
    leader: watch::Receiver<bool>,
    task:
        JoinHandle<Result<kube_lease_manager::LeaseManager, kube_lease_manager::LeaseManagerError>>,
}

/// Settings of the election.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// Lease name.
    pub name: String,
    /// Lease namespace.
    pub namespace: String,
    /// This replica's identity.
    pub identity: String,
    /// Seconds the Lease lasts without renewal.
    pub duration_seconds: u64,
    /// Seconds before expiry the holder renews.
    pub grace_seconds: u64,
}

impl Election {
    /// Joins the election (creating the Lease when it does not exist).
    pub async fn start(client: Client, s: &LeaseSettings) -> Result<Self, Error> {
        let manager = LeaseManagerBuilder::new(client, &s.name)
            .with_namespace(&s.namespace)
            .with_identity(&s.identity)
            .with_duration(s.duration_seconds)
            .with_grace(s.grace_seconds)
            .build()
            .await
            .map_err(|e| Error::Lease(e.to_string()))?;
        let (leader, task) = manager.watch().await;
        Ok(Self { leader, task })
    }

    /// Waits until this replica holds the Lease.
    pub async fn acquired(&mut self) -> Result<(), Error> {
        self.leader
            .wait_for(|&leader| leader)
            .await
            .map(|_| ())
            .map_err(|_| Error::Lease("the lease task stopped".into()))
    }

    /// Completes when this replica no longer holds the Lease.
    pub async fn lost(&mut self) {
        let _ = self.leader.wait_for(|&leader| !leader).await;
    }

    /// Releases the Lease so a standby replica takes over without waiting for it to expire.
    pub async fn release(self) {
        // Dropping the receiver closes the channel; the task then releases the Lease.
        drop(self.leader);
        match self.task.await {
            Ok(Ok(_)) => tracing::info!("lease released"),
            Ok(Err(e)) => tracing::warn!(error = %e, "releasing the lease failed"),
            Err(e) => tracing::warn!(error = %e, "the lease task panicked"),
        }
    }
}
