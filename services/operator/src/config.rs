//! The operator's settings: flags with `VF_*` environment variables, checked once at
//! start-up with errors that name the flag.

use std::net::SocketAddr;

/// Operator configuration.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "visionfleet-operator",
    version,
    about = "VisionFleet operator (`visionfleet-operator crd` prints the CRD)"
)]
pub struct Config {
    /// HTTP listen address for /metrics and /healthz.
    #[arg(long, env = "VF_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    /// Watch InferencePools in this namespace only (all namespaces when unset).
    #[arg(long, env = "VF_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// Elect a leader on a Lease, so only one replica reconciles.
    #[arg(long, env = "VF_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// Name of the leader Lease.
    #[arg(long, env = "VF_LEASE_NAME", default_value = "visionfleet-operator")]
    pub lease_name: String,
    /// Namespace of the leader Lease (the client's namespace, in a pod its own, when unset).
    #[arg(long, env = "VF_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Seconds a leader's Lease lasts without renewal.
    #[arg(long, env = "VF_LEASE_DURATION_SECONDS", default_value_t = 15)]
    pub lease_duration_seconds: u64,
    /// Seconds before expiry that the leader renews its Lease.
    #[arg(long, env = "VF_LEASE_GRACE_SECONDS", default_value_t = 5)]
    pub lease_grace_seconds: u64,
    /// This replica's identity in the Lease and in Events (the pod name; the host name when
    /// unset).
    #[arg(long, env = "VF_POD_NAME")]
    pub identity: Option<String>,
    /// Log format: text or json.
    #[arg(long, env = "VF_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
}

impl Config {
    /// Checks every setting; the error names the flag.
    pub fn validate(&self) -> Result<(), String> {
        if self.lease_name.is_empty() {
            return Err("--lease-name: must not be empty".into());
        }
        if self.lease_grace_seconds == 0 || self.lease_grace_seconds >= self.lease_duration_seconds
        {
            return Err(format!(
                "--lease-grace-seconds: must be within 1..--lease-duration-seconds ({})",
                self.lease_duration_seconds
            ));
        }
        if self.log_format != "text" && self.log_format != "json" {
            return Err(format!(
                "--log-format: expected text or json, got {:?}",
                self.log_format
            ));
        }
        Ok(())
    }

    /// This replica's identity: `--identity`, else the host name, else a fixed name.
    pub fn identity(&self) -> String {
        self.identity
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "visionfleet-operator".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Config {
        let mut all = vec!["visionfleet-operator"];
        all.extend_from_slice(args);
        Config::try_parse_from(all).unwrap()
    }

    #[test]
    fn defaults_are_valid() {
        let c = parse(&[]);
        c.validate().unwrap();
        assert!(c.leader_election);
        assert_eq!(c.http_addr.port(), 8080);
        assert!(!parse(&["--leader-election", "false"]).leader_election);
    }

    #[test]
    fn bad_settings_are_named() {
        assert_eq!(
            parse(&["--lease-grace-seconds", "15"])
                .validate()
                .unwrap_err(),
            "--lease-grace-seconds: must be within 1..--lease-duration-seconds (15)"
        );
        assert_eq!(
            parse(&["--log-format", "xml"]).validate().unwrap_err(),
            "--log-format: expected text or json, got \"xml\""
        );
    }
}
