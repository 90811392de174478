#!/usr/bin/env bash
# `make fuzz` (part of `make test`): runs each libFuzzer target for FUZZ_SECONDS (default
# 60) with AddressSanitizer: `decode_frame` (protobuf Frame bytes, then the image decoders)
# and `spool_records` (arbitrary segment and ack-log bytes through the agent's spool
# recovery). FUZZ_TARGETS picks targets.
# Installs cargo-fuzz into .state/tools on first use. The corpus grows in .state/fuzz and
# starts from the committed seeds in fuzz/seeds; a crash leaves its input in
# .state/fuzz/artifacts and fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_TO_RUN=${FUZZ_SECONDS:-60}
TARGETS=${FUZZ_TARGETS:-decode_frame spool_records}
TOOLS=.state/tools
WORK=.state/fuzz

if ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzz: installing the nightly toolchain (cargo-fuzz needs -Z sanitizer flags)" >&2
  rustup toolchain install nightly --profile minimal ||
    { echo "fuzz: no nightly Rust toolchain and rustup could not install one" >&2; exit 1; }
fi
if [[ ! -x "$TOOLS/bin/cargo-fuzz" ]]; then
  echo "fuzz: installing cargo-fuzz 0.13.2 into $TOOLS" >&2
  cargo install cargo-fuzz --version 0.13.2 --locked --root "$TOOLS" --quiet
fi
export PATH="$PWD/$TOOLS/bin:$PATH"

export CARGO_TARGET_DIR="$PWD/fuzz/target"
cd fuzz
for TARGET in $TARGETS; do
  mkdir -p "../$WORK/corpus/$TARGET" "../$WORK/artifacts/$TARGET"
  cargo +nightly fuzz build --release "$TARGET" 2>&1 | grep -Ev '^\s+(Compiling|Checking)' >&2 || true
  cargo +nightly fuzz run --release "$TARGET" "../$WORK/corpus/$TARGET" "seeds/$TARGET" -- \
    -max_total_time="$SECONDS_TO_RUN" -rss_limit_mb=1024 -timeout=10 \
    -artifact_prefix="../$WORK/artifacts/$TARGET/" -print_final_stats=1 2>"../$WORK/$TARGET.log" || {
    tail -n 40 "../$WORK/$TARGET.log" >&2
    echo "fuzz: $TARGET FAILED, reproducer(s) in $WORK/artifacts/$TARGET/" >&2
    exit 1
  }
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "../$WORK/$TARGET.log" | tail -n 1)
  corpus=$(find "../$WORK/corpus/$TARGET" -type f | wc -l)
  echo "fuzz: $TARGET ran ${runs:-?} inputs in ${SECONDS_TO_RUN} s, no crash (corpus $corpus inputs)"
done
