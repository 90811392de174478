//! What the agent finds in its spool folder after a crash is arbitrary bytes: torn tails,
//! corrupt records, a half-written ack log. Opening the spool must recover from any of it
//! (cut off what does not check out) or fail with an error, never panic, and a spool it
//! opened must keep working: a frame appended afterwards reads back unchanged after a
//! reopen. The files live in the in-memory `FaultFs`, so runs are fast and touch no disk.
#![no_main]

use std::path::Path;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use visionfleet_edge_agent::spool::{Appended, FullPolicy, Spool, SpoolConfig};
use visionfleet_edge_agent::spool_fs::fault::FaultFs;
use visionfleet_edge_agent::spool_fs::SpoolFs;
use visionfleet_proto::v1::Frame;

fn config() -> SpoolConfig {
    SpoolConfig {
        dir: "/spool".into(),
        max_bytes: 1 << 20,
        ttl: None,
        policy: FullPolicy::DropOldest,
        segment_bytes: 64 << 10,
    }
}

fuzz_target!(|data: &[u8]| {
    // The first two bytes split the input into a segment file and the ack log.
    let (split, rest) = match data {
        [a, b, rest @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), rest),
        _ => return,
    };
    let (segment, acks) = rest.split_at(split.min(rest.len()));
    let fs = Arc::new(FaultFs::new());
    let dir = Path::new("/spool");
    fs.create_dir_all(dir).expect("in-memory folder");
    fs.write_file(&dir.join("00000000000000000001.seg"), segment).expect("in-memory write");
    fs.write_file(&dir.join("acks.log"), acks).expect("in-memory write");
    let Ok(mut spool) = Spool::open_with(config(), fs.clone()) else {
        return;
    };
    for sequence in spool.waiting_from(0).collect::<Vec<_>>() {
        let _ = spool.read(sequence); // a record or an error, never a panic
    }
    let frame = Frame {
        device_id: "cam-fuzz".into(),
        sequence: spool.next_sequence(1),
        ..Frame::default()
    };
    let sequence = frame.sequence;
    if spool.append(&frame).expect("append after recovery") != Appended::Stored {
        return;
    }
    drop(spool);
    let reopened = Spool::open_with(config(), fs).expect("reopening a spool it wrote");
    let back = reopened.read(sequence).expect("reading the appended frame");
    assert_eq!(back, Some(frame), "the frame appended after recovery reads back");
});
