#!/usr/bin/env bash
# `make chaos`: the fault-injection suite (services/chaos) at its full durations. Every
# scenario is a test that breaks something real (SIGKILLed agents and pods, a stopped or
# killed Kafka broker, a partition leader killed in a three-node cluster, overload,
# cancelled clients, simulated power loss) and asserts its figures. Prints one line per
# scenario at the end:
#   chaos <scenario>: captured <N>, events <M>, lost <L>, duplicates <D>, recovery <S> s
# The README's test command runs the same scenarios in their short versions.
# VF_CHAOS=short runs the short versions here too; CHAOS_FILTER picks scenarios by name.
set -euo pipefail
cd "$(dirname "$0")/.."

export VF_CHAOS=${VF_CHAOS:-full}
report=.state/chaos-report.txt
mkdir -p .state
: >"$report"
export VF_CHAOS_REPORT="$PWD/$report"

status=0
# One scenario at a time: each measures recovery and memory, which a neighbour's load
# would distort.
cargo test -p visionfleet-chaos --all-targets -- --test-threads=1 --nocapture ${CHAOS_FILTER:-} || status=$?

echo
echo "chaos summary (${VF_CHAOS} run):"
cat "$report"
if ((status != 0)); then
  echo "chaos: FAILED (see the test output above)" >&2
fi
exit "$status"
