//! How the agent reaches a pod: the endpoint list (failover), TLS with server verification
//! (the system's roots or a given CA), an optional client certificate (mTLS), and the
//! device's bearer token sent with every call.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use visionfleet_proto::v1::ingest_client::IngestClient;

/// A secret string: never printed by `Debug` (configs are logged).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// TLS settings for the uplink.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// CA bundle (PEM) the server's certificate must chain to; `None`: the system's roots.
    pub ca: Option<PathBuf>,
    /// Client certificate and key (PEM) for mTLS.
    pub client_identity: Option<(PathBuf, PathBuf)>,
    /// Name to verify in the server's certificate instead of the endpoint's host.
    pub domain: Option<String>,
}

/// Everything needed to open a connection.
#[derive(Debug, Clone)]
pub struct Transport {
    /// Pod addresses, tried in order; a failed one hands over to the next.
    pub endpoints: Vec<String>,
    /// TLS, for `https://` endpoints.
    pub tls: Option<TlsSettings>,
    /// Bearer token sent as `authorization` metadata.
    pub token: Option<Secret>,
    /// Largest gRPC message either way.
    pub max_message_bytes: usize,
}

/// Adds the bearer token to every request.
#[derive(Clone)]
pub struct BearerToken(Option<MetadataValue<tonic::metadata::Ascii>>);

impl Interceptor for BearerToken {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// The ingest client the uplinks use.
pub type Client = IngestClient<InterceptedService<Channel, BearerToken>>;

fn read_pem(what: &str, path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| anyhow::anyhow!("{what} {}: {e}", path.display()))
}

impl Transport {
    /// Checks the settings without connecting: endpoint URLs, TLS files readable, token
    /// usable as a header value. Errors name the setting.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.endpoints.is_empty() {
            anyhow::bail!("--endpoint: at least one endpoint is required");
        }
        for url in &self.endpoints {
            let uri: tonic::codegen::http::Uri = url
                .parse()
                .map_err(|e| anyhow::anyhow!("--endpoint {url:?}: not a URL: {e}"))?;
            match uri.scheme_str() {
                Some("http") if self.tls.is_some() => anyhow::bail!(
                    "--endpoint {url:?}: TLS settings are given, so the endpoint must be https://"
                ),
                Some("http") | Some("https") => {}
                _ => anyhow::bail!("--endpoint {url:?}: the scheme must be http:// or https://"),
            }
        }
        if let Some(tls) = &self.tls {
            if let Some(ca) = &tls.ca {
                read_pem("--tls-ca", ca)?;
            }
            if let Some((cert, key)) = &tls.client_identity {
                read_pem("--tls-cert", cert)?;
                read_pem("--tls-key", key)?;
            }
        }
        if let Some(t) = &self.token {
            bearer(t)?;
        }
        Ok(())
    }

    /// Connects to endpoint `index` (modulo the list): a short connect timeout (the caller
    /// retries with back-off) and HTTP/2 keepalive so a dead link is noticed while idle.
    pub async fn connect(&self, index: usize) -> anyhow::Result<Client> {
        let url = &self.endpoints[index % self.endpoints.len()];
        let mut endpoint = Endpoint::from_shared(url.clone())?
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        if url.starts_with("https://") {
            endpoint = endpoint.tls_config(self.client_tls()?)?;
        }
        let channel = endpoint.connect().await?;
        let token = self.token.as_ref().map(bearer).transpose()?;
        Ok(IngestClient::with_interceptor(channel, BearerToken(token))
            .max_encoding_message_size(self.max_message_bytes)
            .max_decoding_message_size(self.max_message_bytes))
    }

    fn client_tls(&self) -> anyhow::Result<ClientTlsConfig> {
        let tls = self.tls.clone().unwrap_or_default();
        let mut cfg = ClientTlsConfig::new();
        cfg = match &tls.ca {
            Some(ca) => cfg.ca_certificate(Certificate::from_pem(read_pem("--tls-ca", ca)?)),
            None => cfg.with_native_roots(),
        };
        if let Some((cert, key)) = &tls.client_identity {
            cfg = cfg.identity(Identity::from_pem(
                read_pem("--tls-cert", cert)?,
                read_pem("--tls-key", key)?,
            ));
        }
        if let Some(domain) = &tls.domain {
            cfg = cfg.domain_name(domain.clone());
        }
        Ok(cfg)
    }
}

fn bearer(token: &Secret) -> anyhow::Result<MetadataValue<tonic::metadata::Ascii>> {
    let mut v: MetadataValue<_> = format!("Bearer {}", token.expose()).parse().map_err(|_| {
        anyhow::anyhow!("device token: not a valid header value (printable ASCII only)")
    })?;
    v.set_sensitive(true);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transport(endpoints: &[&str]) -> Transport {
        Transport {
            endpoints: endpoints.iter().map(|s| s.to_string()).collect(),
            tls: None,
            token: None,
            max_message_bytes: 1 << 20,
        }
    }

    #[test]
    fn secrets_are_not_printed() {
        let t = Transport {
            token: Some(Secret::new("hunter2")),
            ..transport(&["http://a:1"])
        };
        assert!(!format!("{t:?}").contains("hunter2"));
    }

    #[test]
    fn bad_endpoints_and_tls_files_are_named() {
        let err = |t: Transport| t.validate().expect_err("invalid").to_string();
        assert_eq!(
            err(transport(&[])),
            "--endpoint: at least one endpoint is required"
        );
        assert_eq!(
            err(transport(&["ftp://pod:1"])),
            "--endpoint \"ftp://pod:1\": the scheme must be http:// or https://"
        );
        let tls = TlsSettings {
            ca: Some(PathBuf::from("/nonexistent/ca.pem")),
            ..TlsSettings::default()
        };
        assert_eq!(
            err(Transport {
                tls: Some(tls.clone()),
                ..transport(&["http://pod:1"])
            }),
            "--endpoint \"http://pod:1\": TLS settings are given, so the endpoint must be https://"
        );
        assert!(err(Transport {
            tls: Some(tls),
            ..transport(&["https://pod:1"])
        })
        .starts_with("--tls-ca /nonexistent/ca.pem: "));
        assert_eq!(
            err(Transport {
                token: Some(Secret::new("bad\ntoken")),
                ..transport(&["http://pod:1"])
            }),
            "device token: not a valid header value (printable ASCII only)"
        );
    }
}
