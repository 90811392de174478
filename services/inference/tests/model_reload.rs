//! Hot model reload: a new version in the model store is loaded, warmed up and swapped in
//! while a stream keeps sending; no in-flight frame is dropped, and a broken new version
//! leaves the old one serving.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use std::time::Duration;

use support::{config, eventually_async, http_get, models_dir, Kafka, TestServer};
use tokio_stream::wrappers::ReceiverStream;
use visionfleet_detector::Manifest;
use visionfleet_proto::v1::ingest_client::IngestClient;
use visionfleet_proto::v1::{AckStatus, Frame};

fn frame(sequence: u64, jpeg: &[u8]) -> Frame {
    support::jpeg_frame("cam-reload", sequence, jpeg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_model_version_replaces_the_old_without_dropping_frames() {
    let store = tempfile::tempdir().unwrap();
    for f in ["coco-yolov5s.json", "coco-yolov5s.safetensors"] {
        std::fs::copy(models_dir().join(f), store.path().join(f)).unwrap();
    }
    let manifest_path = store.path().join("coco-yolov5s.json");
    let kafka = Kafka::start(1);
    let mut cfg = config(
        &kafka.bootstrap,
        "reload.detections",
        &["--model-poll-seconds", "1"],
    );
    cfg.models_dir = store.path().to_path_buf();
    let server = TestServer::start(cfg).await;
    let http = server.http;
    let jpeg = std::fs::read(models_dir().join("samples/bus.jpg")).unwrap();
    let mut client = IngestClient::connect(server.url()).await.unwrap();
    let version = |c: &mut IngestClient<tonic::transport::Channel>, seq: u64| {
        let mut c = c.clone();
        let f = frame(1000 + seq, &jpeg);
        async move { c.detect(f).await.unwrap().into_inner().model_version }
    };
    assert_eq!(version(&mut client, 0).await, "1");

    // A stream keeps frames in flight across the swap.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut acks = client
        .stream_frames(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let sender = {
        let jpeg = jpeg.clone();
        tokio::spawn(async move {
            for seq in 0..10 {
                tx.send(frame(seq, &jpeg)).await.unwrap();
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };

    let mut m = Manifest::load(&manifest_path).unwrap();
    m.version = "2".into();
    m.save(&manifest_path).unwrap();
    let mut probe = client.clone();
    let mut seq = 1;
    eventually_async("version 2 serving", Duration::from_secs(60), || {
        seq += 1;
        let f = version(&mut probe, seq);
        async move { (f.await == "2").then_some(()) }
    })
    .await;

    sender.await.unwrap();
    let mut published = 0;
    while let Some(ack) = acks.message().await.unwrap() {
        assert_eq!(ack.status, AckStatus::Published as i32, "{ack:?}");
        published += 1;
    }
    assert_eq!(
        published, 10,
        "every streamed frame acknowledged across the swap"
    );

    // A broken version 3 (its checksum does not match) is refused; 2 keeps serving.
    m.version = "3".into();
    m.weights_sha256 = "0".repeat(64);
    m.save(&manifest_path).unwrap();
    eventually_async("a failed reload", Duration::from_secs(30), || async {
        let (_, scrape) = http_get(http, "/metrics").await.ok()?;
        scrape
            .contains("vf_model_reloads_total{result=\"failure\"}")
            .then_some(scrape)
    })
    .await;
    assert_eq!(version(&mut client, 99).await, "2");
    let (_, scrape) = http_get(http, "/metrics").await.unwrap();
    assert!(
        scrape.contains("vf_model_reloads_total{result=\"success\"} 1"),
        "{scrape}"
    );
    assert!(
        scrape.contains("vf_model_info{family=\"yolov5\",model=\"coco-yolov5s\",version=\"2\"} 1")
    );
    assert!(
        scrape.contains("vf_model_info{family=\"yolov5\",model=\"coco-yolov5s\",version=\"1\"} 0")
    );
    server.stop().await.unwrap();
}
