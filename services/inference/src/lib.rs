//! The VisionFleet inference pod: a tonic server for the ingest API that decodes frames,
//! batches them onto the candle detector on dedicated threads, publishes every frame's
//! detection event to Kafka and acknowledges a frame only once Kafka has its event.
//!
//! [`run`] takes its listeners and a shutdown future, so tests start a real server on
//! `127.0.0.1:0` and stop it.

pub mod auth;
pub mod batcher;
pub mod config;
pub mod error;
pub mod http;
pub mod kserve;
pub mod metrics;
pub mod pipeline;
pub mod publisher;
pub mod registry;
pub mod service;
pub mod tls;
pub mod tokens;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::interceptor::InterceptedService;
use visionfleet_proto::kserve::grpc_inference_service_server::GrpcInferenceServiceServer;
use visionfleet_proto::v1::ingest_server::IngestServer;

pub use config::Config;
pub use error::Error;

use kserve::KserveService;
use metrics::Metrics;
use pipeline::Pipeline;
use publisher::Publisher;
use service::IngestService;
use visionfleet_frame_codec::Limits;

/// Runs the pod until `shutdown` completes, then drains: readiness and gRPC health flip to
/// not serving, streams stop reading, in-flight frames finish (bounded by the grace period)
/// and the producer is flushed.
pub async fn run(
    config: Config,
    grpc: TcpListener,
    http: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    config.validate()?;
    // Files first: a bad certificate or token file should not wait for models and Kafka.
    let tls = tls::server_tls(&config)?;
    let metrics = Arc::new(Metrics::new());
    let (authenticator, token_watcher) = auth::start(&config, metrics.clone())?;
    let models = Arc::new(registry::load_all(&config, &metrics).await?);
    let publisher = Publisher::connect(&config, metrics.kafka_producer_replaced.clone()).await?;
    let kafka_healthy = publisher.healthy();

    let pipeline = Arc::new(Pipeline {
        models,
        default_model: config.models[0].clone(),
        publisher,
        metrics: metrics.clone(),
        limits: Limits {
            max_bytes: config.max_frame_bytes,
            max_pixels: config.max_pixels,
        },
    });
    let ready = Arc::new(AtomicBool::new(true));
    let (drain_tx, drain_rx) = watch::channel(false);

    // Models are loaded and warmed up by now, so the pod reports SERVING from its first
    // answer; it flips to NOT_SERVING when draining.
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<IngestServer<IngestService>>().await;
    health
        .set_serving::<GrpcInferenceServiceServer<KserveService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(visionfleet_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| Error::Config(format!("reflection: {e}")))?;
    let kserve =
        GrpcInferenceServiceServer::new(KserveService::new(pipeline.clone(), ready.clone()))
            .max_decoding_message_size(config.max_frame_bytes.saturating_mul(4));
    let ingest = IngestServer::new(IngestService::new(
        pipeline.clone(),
        config.stream_window,
        drain_rx,
    ))
    // Room for the frame's other fields; the image itself is checked against
    // max_frame_bytes with a precise error.
    .max_decoding_message_size(config.max_frame_bytes + 64 * 1024);
    // Health and reflection stay outside, so probes need no token.
    let ingest = InterceptedService::new(ingest, authenticator.clone());
    let kserve = InterceptedService::new(kserve, authenticator);

    let (stop_http, http_stopped) = oneshot::channel::<()>();
    let http_server = axum::serve(
        http,
        http::router(metrics.clone(), ready.clone(), kafka_healthy),
    )
    .with_graceful_shutdown(async {
        let _ = http_stopped.await;
    });
    let http_task = tokio::spawn(async move { http_server.await });

    let (stop_grpc, grpc_stopped) = oneshot::channel::<()>();
    let mut grpc_builder = transport_limits(&config);
    if let Some(tls) = tls {
        grpc_builder = grpc_builder
            .tls_config(tls)
            .map_err(|e| Error::Config(format!("--tls-cert: {e}")))?;
    }
    let grpc_server = grpc_builder
        .add_service(health_service)
        .add_service(reflection)
        .add_service(ingest)
        .add_service(kserve)
        .serve_with_incoming_shutdown(TcpListenerStream::new(grpc), async {
            let _ = grpc_stopped.await;
        });
    let mut grpc_task = tokio::spawn(grpc_server);
    let watcher = (config.model_poll_seconds > 0).then(|| {
        tokio::spawn(registry::watch(
            config.clone(),
            pipeline.models.clone(),
            metrics.clone(),
            Duration::from_secs(config.model_poll_seconds),
        ))
    });
    let token_watcher = token_watcher.map(tokio::spawn);
    tracing::info!(
        models = ?config.models,
        topic = %config.topic,
        tls = config.tls_cert.is_some(),
        client_certificates = config.tls_client_ca.is_some(),
        device_tokens = config.device_tokens.is_some(),
        "serving"
    );

    tokio::select! {
        _ = shutdown => {}
        result = &mut grpc_task => {
            for w in watcher.into_iter().chain(token_watcher) {
                w.abort();
            }
            let _ = stop_http.send(());
            return match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(Error::Io(std::io::Error::other(e))),
                Err(e) => Err(Error::Io(std::io::Error::other(e))),
            };
        }
    }

    tracing::info!("draining");
    for w in watcher.into_iter().chain(token_watcher) {
        w.abort();
    }
    ready.store(false, Ordering::Relaxed);
    health
        .set_not_serving::<IngestServer<IngestService>>()
        .await;
    health
        .set_not_serving::<GrpcInferenceServiceServer<KserveService>>()
        .await;
    let _ = drain_tx.send(true);
    let _ = stop_grpc.send(());
    let grace = Duration::from_secs(config.shutdown_grace_seconds);
    if tokio::time::timeout(grace, &mut grpc_task).await.is_err() {
        tracing::warn!(
            ?grace,
            "in-flight frames did not finish within the grace period"
        );
        grpc_task.abort();
    }
    for batcher in pipeline.models.all() {
        batcher.close();
    }
    let flushing = pipeline.clone();
    tokio::task::spawn_blocking(move || flushing.publisher.flush(Duration::from_secs(10)))
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e)))??;
    let _ = stop_http.send(());
    let _ = http_task.await;
    tracing::info!("stopped");
    Ok(())
}

/// The gRPC server's explicit HTTP/2 and TCP limits: what a hostile or broken client can
/// hold. No overall request timeout: `StreamFrames` streams live for hours; unary calls
/// carry their own deadline (`grpc-timeout`), which the batcher honours.
fn transport_limits(config: &Config) -> tonic::transport::Server {
    let keepalive = (config.grpc_keepalive_seconds > 0)
        .then(|| Duration::from_secs(config.grpc_keepalive_seconds));
    tonic::transport::Server::builder()
        .max_concurrent_streams(config.grpc_max_concurrent_streams)
        .http2_keepalive_interval(keepalive)
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .tcp_keepalive(Some(Duration::from_secs(60)))
        .tcp_nodelay(true)
        // Rapid reset (CVE-2023-44487): streams reset by the client before the server
        // accepted them, and streams the server itself had to reset, end the connection
        // past these counts.
        .http2_max_pending_accept_reset_streams(Some(20))
        .http2_max_local_error_reset_streams(Some(256))
        // Headers are a handful of short fields; CONTINUATION floods stop here.
        .http2_max_header_list_size(16 * 1024)
}
