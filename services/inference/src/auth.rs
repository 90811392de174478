//! Device authentication for the ingest and KServe services: the interceptor that checks
//! each call's bearer token, the per-frame check that a device-bound token only carries its
//! own device's frames, and the watcher that reloads the token file when it changes.
//!
//! `grpc.health.v1` and reflection are mounted without the interceptor, so kubelet probes
//! need no token. Refusals are counted in `vf_auth_failures_total{reason}`; token values
//! are never logged.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::config::Config;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::tokens::{Binding, TokenSet};

/// Who a call's token says the caller is; the [`Authenticator`] puts it into every request
/// it lets through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Device tokens are off: frames of any device are accepted.
    Anyone,
    /// A token allowed for `binding`.
    Token(Binding),
}

/// The interceptor in front of the protected services.
#[derive(Clone)]
pub struct Authenticator {
    /// The current tokens; `None` when `--device-tokens` is not set.
    tokens: Option<watch::Receiver<Arc<TokenSet>>>,
    metrics: Arc<Metrics>,
}

impl Authenticator {
    /// Lets every call through as [`Caller::Anyone`].
    pub fn open(metrics: Arc<Metrics>) -> Self {
        Self {
            tokens: None,
            metrics,
        }
    }

    /// Checks calls against the latest value of `tokens`.
    pub fn new(tokens: watch::Receiver<Arc<TokenSet>>, metrics: Arc<Metrics>) -> Self {
        Self {
            tokens: Some(tokens),
            metrics,
        }
    }

    fn refuse(&self, reason: &str, error: Error, request: &Request<()>) -> Status {
        self.metrics
            .auth_failures
            .with_label_values(&[reason])
            .inc();
        tracing::warn!(reason, peer = ?request.remote_addr(), error = %error, "call refused");
        error.into()
    }
}

impl Interceptor for Authenticator {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let caller = match &self.tokens {
            None => Caller::Anyone,
            Some(tokens) => {
                let Some(token) = bearer_token(request.metadata()) else {
                    return Err(self.refuse("missing", Error::MissingToken, &request));
                };
                // Cloned out so the watch lock is not held while the request goes on.
                let binding = tokens.borrow().lookup(token).cloned();
                match binding {
                    Some(binding) => Caller::Token(binding),
                    None => return Err(self.refuse("unknown", Error::UnknownToken, &request)),
                }
            }
        };
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

/// The token of an `authorization: Bearer <token>` header (the scheme is case-insensitive,
/// RFC 7235); `None` for no header, another scheme or an empty token.
fn bearer_token(metadata: &tonic::metadata::MetadataMap) -> Option<&str> {
    let value = metadata.get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Checks that the call may carry frames of `device_id`. A call without a [`Caller`] never
/// passed the interceptor and is refused rather than trusted.
pub fn check_frame(
    caller: Option<&Caller>,
    device_id: &str,
    metrics: &Metrics,
) -> Result<(), Error> {
    let refused = match caller {
        Some(Caller::Anyone | Caller::Token(Binding::Fleet)) => return Ok(()),
        Some(Caller::Token(Binding::Device(bound))) if bound == device_id => return Ok(()),
        Some(Caller::Token(Binding::Device(bound))) => Error::WrongDevice {
            bound: bound.clone(),
            device: device_id.to_string(),
        },
        None => Error::MissingToken,
    };
    let reason = match refused {
        Error::WrongDevice { .. } => "wrong_device",
        _ => "missing",
    };
    metrics.auth_failures.with_label_values(&[reason]).inc();
    tracing::warn!(reason, error = %refused, "frame refused");
    Err(refused)
}

/// Reads and parses the token file; the error names the flag, the file and the line.
pub fn load(path: &Path) -> Result<TokenSet, Error> {
    let bad = |why: String| Error::Config(format!("--device-tokens: {}: {why}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    TokenSet::parse(&text).map_err(|e| bad(e.to_string()))
}

/// The interceptor for `config`, and the token file's watcher task to spawn when it is to be
/// polled. The file is read here, so a missing or malformed one is a start-up error.
pub fn start(
    config: &Config,
    metrics: Arc<Metrics>,
) -> Result<(Authenticator, Option<impl std::future::Future<Output = ()>>), Error> {
    let Some(path) = config.device_tokens.clone() else {
        return Ok((Authenticator::open(metrics), None));
    };
    let seen = fingerprint(&path).ok();
    let tokens = load(&path)?;
    warn_if_empty(&path, &tokens);
    tracing::info!(tokens = tokens.len(), file = %path.display(), "device tokens loaded");
    let (tx, rx) = watch::channel(Arc::new(tokens));
    let every = Duration::from_secs(config.device_tokens_poll_seconds);
    let watcher = (!every.is_zero()).then(|| watch_file(path, seen, tx, metrics.clone(), every));
    Ok((Authenticator::new(rx, metrics), watcher))
}

fn warn_if_empty(path: &Path, tokens: &TokenSet) {
    if tokens.is_empty() {
        tracing::warn!(file = %path.display(), "the device token file lists no token: every ingest and KServe call is refused");
    }
}

/// What tells a changed file from the one last read: Kubernetes swaps a Secret's files by
/// renaming a new folder in (a new inode), an editor may rewrite in place (a new mtime or
/// length).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn fingerprint(path: &Path) -> std::io::Result<Fingerprint> {
    let meta = std::fs::metadata(path)?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Ok(Fingerprint {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode,
    })
}

async fn current_fingerprint(path: &Path) -> Option<Fingerprint> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || fingerprint(&path).ok())
        .await
        .ok()
        .flatten()
}

/// Polls the file every `every` until dropped; a changed file that parses replaces the
/// tokens, one that does not is logged and counted and the old tokens stay in force.
async fn watch_file(
    path: PathBuf,
    mut seen: Option<Fingerprint>,
    tokens: watch::Sender<Arc<TokenSet>>,
    metrics: Arc<Metrics>,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let now = current_fingerprint(&path).await;
        if now == seen {
            continue;
        }
        let result = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || load(&path)).await
        };
        // A file still being written (in place, not renamed in) may have parsed with a
        // truncated token; it is read again on the next tick.
        if current_fingerprint(&path).await != now {
            continue;
        }
        seen = now;
        match result {
            Ok(Ok(new)) => {
                warn_if_empty(&path, &new);
                tracing::info!(tokens = new.len(), file = %path.display(), "device tokens reloaded");
                tokens.send_replace(Arc::new(new));
                metrics
                    .device_token_reloads
                    .with_label_values(&["success"])
                    .inc();
            }
            Ok(Err(e)) => {
                metrics
                    .device_token_reloads
                    .with_label_values(&["failure"])
                    .inc();
                tracing::warn!(error = %e, "device token reload failed; the previous tokens stay in force");
            }
            Err(e) => tracing::warn!(error = %e, "device token reload task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authenticator(text: &str) -> (Authenticator, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new());
        let (tx, rx) = watch::channel(Arc::new(TokenSet::parse(text).unwrap()));
        // The sender may go: the receiver keeps the last tokens.
        drop(tx);
        (Authenticator::new(rx, metrics.clone()), metrics)
    }

    fn call(auth: &mut Authenticator, authorization: Option<&str>) -> Result<Caller, Status> {
        let mut request = Request::new(());
        if let Some(value) = authorization {
            request
                .metadata_mut()
                .insert("authorization", value.parse().unwrap());
        }
        let passed = auth.call(request)?;
        Ok(passed.extensions().get::<Caller>().unwrap().clone())
    }

    fn failures(metrics: &Metrics, reason: &str) -> u64 {
        metrics.auth_failures.with_label_values(&[reason]).get()
    }

    #[test]
    fn known_tokens_pass_with_their_binding() {
        let (mut auth, metrics) = authenticator("cam-1 t1\n* fleet\n");
        assert_eq!(
            call(&mut auth, Some("Bearer t1")).unwrap(),
            Caller::Token(Binding::Device("cam-1".into()))
        );
        assert_eq!(
            call(&mut auth, Some("bearer fleet")).unwrap(),
            Caller::Token(Binding::Fleet)
        );
        assert_eq!(
            failures(&metrics, "missing") + failures(&metrics, "unknown"),
            0
        );
        let mut open = Authenticator::open(metrics);
        assert_eq!(call(&mut open, None).unwrap(), Caller::Anyone);
    }

    #[test]
    fn missing_and_unknown_tokens_are_unauthenticated() {
        let (mut auth, metrics) = authenticator("cam-1 t1\n");
        for header in [None, Some("Bearer "), Some("Basic dTpw"), Some("t1")] {
            let status = call(&mut auth, header).unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unauthenticated, "{header:?}");
            assert_eq!(status.message(), "missing bearer token");
        }
        let status = call(&mut auth, Some("Bearer t2")).unwrap_err();
        assert_eq!(
            (status.code(), status.message()),
            (tonic::Code::Unauthenticated, "unknown device token")
        );
        assert_eq!(failures(&metrics, "missing"), 4);
        assert_eq!(failures(&metrics, "unknown"), 1);
    }

    #[test]
    fn device_bound_tokens_carry_only_their_device() {
        let metrics = Metrics::new();
        let cam1 = Caller::Token(Binding::Device("cam-1".into()));
        check_frame(Some(&cam1), "cam-1", &metrics).unwrap();
        check_frame(Some(&Caller::Token(Binding::Fleet)), "cam-9", &metrics).unwrap();
        check_frame(Some(&Caller::Anyone), "cam-9", &metrics).unwrap();
        let status: Status = check_frame(Some(&cam1), "cam-2", &metrics)
            .unwrap_err()
            .into();
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert_eq!(
            status.message(),
            "token is bound to device \"cam-1\", not \"cam-2\""
        );
        assert_eq!(failures(&metrics, "wrong_device"), 1);
        let status: Status = check_frame(None, "cam-1", &metrics).unwrap_err().into();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn a_malformed_file_names_the_flag_the_file_and_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "cam-1 t1\ncam-2 t2 t3\n").unwrap();
        assert_eq!(
            load(&path).unwrap_err().to_string(),
            format!(
                "invalid configuration: --device-tokens: {}: line 2: expected `DEVICE_ID TOKEN` \
                 or `* TOKEN`, found 3 fields",
                path.display()
            )
        );
        let missing = dir.path().join("missing");
        assert_eq!(
            load(&missing).unwrap_err().to_string(),
            format!(
                "invalid configuration: --device-tokens: {}: cannot read: No such file or \
                 directory (os error 2)",
                missing.display()
            )
        );
    }
}
