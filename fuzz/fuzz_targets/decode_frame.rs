//! What a client sends is bytes on the wire: a protobuf `Frame`, then its image. Both
//! decoders must turn any input into a value or an error, never a panic, a hang, or an
//! allocation past the limits (libFuzzer's `-rss_limit_mb` catches the last).
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use visionfleet_frame_codec::{decode, Limits};
use visionfleet_proto::v1::Frame;

/// The pod's default limits, scaled down so that a valid but large image cannot make one
/// run slow enough to hide real findings.
const LIMITS: Limits = Limits {
    max_bytes: 1 << 20,
    max_pixels: 4_000_000,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = Frame::decode(data) {
        if let Ok(image) = decode(frame.image.as_ref(), &LIMITS) {
            let (w, h) = image.dimensions();
            assert!(u64::from(w) * u64::from(h) <= LIMITS.max_pixels);
        }
    }
});
