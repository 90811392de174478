#!/usr/bin/env bash
# Local Apache Kafka (KRaft mode) for the demo and the tests.
#
# Kafka itself comes from Maven Central: tools/kafka/pom.xml resolves the broker
# (org.apache.kafka:kafka_2.13), the command-line tools (kafka-tools) and a log4j2
# backend, and `install` copies the runtime jars into .state/kafka/libs. Every node and
# tool then runs as `java -cp '.state/kafka/libs/*' CLASS ...`; nothing else is needed
# besides Java 17+, Maven (first install only), python3 (to pick free ports) and flock.
#
# Usage (from any working directory):
#   scripts/kafka.sh install
#       Fetch the jars unless .state/kafka/libs is already up to date with the pom.
#   scripts/kafka.sh start --dir DIR [--nodes 1|3] [--timeout SECONDS] [--watch-pid PID [--cleanup]]
#       Create (first time) and start a cluster whose state lives in DIR (a fresh
#       `mktemp -d` is fine). Prints one line, `bootstrap=127.0.0.1:PORT[,...]`, and
#       writes the same bootstrap string to DIR/bootstrap. Calling it again on the same
#       DIR restarts whatever is not running and keeps data and ports. With --watch-pid,
#       the cluster is killed when process PID exits (tests use their own PID), and with
#       --cleanup its DIR is then deleted too.
#   scripts/kafka.sh stop --dir DIR [--kill] [--timeout SECONDS]
#       Stop all nodes (SIGTERM, then SIGKILL after the timeout; --kill: SIGKILL at once).
#       No error if nothing runs.
#   scripts/kafka.sh stop-node  --dir DIR --node K [--kill] [--timeout SECONDS]
#   scripts/kafka.sh start-node --dir DIR --node K [--timeout SECONDS]
#       Stop / start a single node of an existing cluster, on the same ports and data.
#   scripts/kafka.sh status --dir DIR
#       One line per node: `node K running pid=PID|stopped broker=PORT controller=PORT`.
#   scripts/kafka.sh tool CLASS|ALIAS [ARGS...]
#       Run a Kafka command-line tool from the jars (log output: warnings on stderr).
#
# Handy tool classes (ALIAS in brackets; Kafka 4.x moved most tools out of core):
#   [topics]             org.apache.kafka.tools.TopicCommand
#   [console-producer]   org.apache.kafka.tools.ConsoleProducer
#   [console-consumer]   org.apache.kafka.tools.consumer.ConsoleConsumer
#   [consumer-groups]    org.apache.kafka.tools.consumer.group.ConsumerGroupCommand
#   [get-offsets]        org.apache.kafka.tools.GetOffsetShell
#   [metadata-quorum]    org.apache.kafka.tools.MetadataQuorumCommand
#   [broker-api-versions] org.apache.kafka.tools.BrokerApiVersionsCommand
#   [cluster]            org.apache.kafka.tools.ClusterTool
#   [configs]            kafka.admin.ConfigCommand          (still in core, Scala)
#   [storage]            kafka.tools.StorageTool            (still in core, Scala)
#   [dump-log]           org.apache.kafka.tools.DumpLogSegments
# e.g.
#   scripts/kafka.sh tool topics --bootstrap-server "$B" --create --topic t --partitions 3
#   scripts/kafka.sh tool console-consumer --bootstrap-server "$B" --topic t \
#       --from-beginning --max-messages 1 --property print.key=true
#
# Layout of DIR:
#   cluster.env                 node count, cluster id and the ports chosen at creation
#   nodeK/server.properties     node K's configuration (combined broker + controller)
#   nodeK/data/                 node K's log dir (topic data and the KRaft metadata log)
#   nodeK.log                   node K's stdout/stderr and log4j output (appended)
#   pids                        one line per running node: `K PID`
#   bootstrap                   the bootstrap string printed by start
#
# Environment:
#   VF_KAFKA_HEAP   JVM heap flags of each node (default: -Xms256m -Xmx512m)
#   JAVA            the java binary (default: java)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
POM="$ROOT/tools/kafka/pom.xml"
LIBS="$ROOT/.state/kafka/libs"
STAMP="$LIBS/.pom.sha256"
LOCK="$ROOT/.state/kafka/.install.lock"
BROKER_LOG4J="$ROOT/tools/kafka/log4j2-broker.properties"
TOOLS_LOG4J="$ROOT/tools/kafka/log4j2-tools.properties"
JAVA=${JAVA:-java}
HEAP=${VF_KAFKA_HEAP:--Xms256m -Xmx512m}

die() {
  echo "kafka.sh: $*" >&2
  exit 1
}

# ---------------------------------------------------------------------------- install

libs_fresh() {
  [[ -f "$STAMP" ]] && [[ "$(cat "$STAMP")" == "$(sha256sum "$POM" | cut -d' ' -f1)" ]]
}

# Resolve the jars with Maven into a scratch dir and swap it in atomically, under a lock
# so that concurrent test processes do not install twice or see a half-filled libs dir.
cmd_install() {
  libs_fresh && return 0
  mkdir -p "$(dirname "$LOCK")"
  exec 8>"$LOCK"
  flock 8
  if ! libs_fresh; then
    local tmp="$LIBS.tmp.$$" mvnlog="$ROOT/.state/kafka/install.log"
    rm -rf "$tmp"
    if ! mvn -B -q -Dstyle.color=never -f "$POM" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$tmp" >"$mvnlog" 2>&1; then
      cat "$mvnlog" >&2
      rm -rf "$tmp"
      die "maven could not resolve Kafka (log: $mvnlog)"
    fi
    sha256sum "$POM" | cut -d' ' -f1 >"$tmp/.pom.sha256"
    rm -rf "$LIBS"
    mv "$tmp" "$LIBS"
  fi
  flock -u 8
  exec 8>&-
}

# ------------------------------------------------------------------------------- tools

# Map a short alias to its tool class; anything else is taken as a class name.
tool_class() {
  case "$1" in
    topics) echo org.apache.kafka.tools.TopicCommand ;;
    console-producer) echo org.apache.kafka.tools.ConsoleProducer ;;
    console-consumer) echo org.apache.kafka.tools.consumer.ConsoleConsumer ;;
    consumer-groups) echo org.apache.kafka.tools.consumer.group.ConsumerGroupCommand ;;
    get-offsets) echo org.apache.kafka.tools.GetOffsetShell ;;
    metadata-quorum) echo org.apache.kafka.tools.MetadataQuorumCommand ;;
    broker-api-versions) echo org.apache.kafka.tools.BrokerApiVersionsCommand ;;
    cluster) echo org.apache.kafka.tools.ClusterTool ;;
    configs) echo kafka.admin.ConfigCommand ;;
    storage) echo kafka.tools.StorageTool ;;
    dump-log) echo org.apache.kafka.tools.DumpLogSegments ;;
    *) echo "$1" ;;
  esac
}

# Short-lived JVMs: small heap, serial GC and C1 only start noticeably faster.
run_tool() {
  local class
  class=$(tool_class "$1")
  shift
  "$JAVA" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$TOOLS_LOG4J" -cp "$LIBS/*" "$class" "$@"
}

cmd_tool() {
  [[ $# -ge 1 ]] || die "usage: kafka.sh tool CLASS|ALIAS [ARGS...]"
  cmd_install
  run_tool "$@"
}

# ------------------------------------------------------------------- cluster creation

# pick_ports N: see scripts/lib.sh.
source "$ROOT/scripts/lib.sh"

# Kafka cluster ids are 16 random bytes in unpadded URL-safe base64 (22 characters). Like
# Kafka's own generator, never start with '-': the storage tool would read it as a flag.
new_cluster_id() {
  local id
  while :; do
    id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
    [[ "$id" != -* ]] && break
  done
  echo "$id"
}

# Write DIR/cluster.env and every node's server.properties (first start only).
create_cluster() {
  local dir=$1 nodes=$2 ports k rf min_isr voters=""
  ports=($(pick_ports $((2 * nodes))))
  BROKER_PORTS=("${ports[@]:0:nodes}")
  CONTROLLER_PORTS=("${ports[@]:nodes:nodes}")
  CLUSTER_ID=$(new_cluster_id)
  NODES=$nodes
  if ((nodes == 1)); then rf=1 min_isr=1; else rf=3 min_isr=2; fi
  for ((k = 1; k <= nodes; k++)); do
    voters+="${voters:+,}$k@127.0.0.1:${CONTROLLER_PORTS[k - 1]}"
  done
  for ((k = 1; k <= nodes; k++)); do
    mkdir -p "$dir/node$k/data"
    cat >"$dir/node$k/server.properties" <<EOF
# Generated by scripts/kafka.sh: node $k of a $nodes-node local KRaft cluster.
# Combined mode: every node is both a broker and a member of the controller quorum.
process.roles=broker,controller
node.id=$k
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:${BROKER_PORTS[k - 1]},CONTROLLER://127.0.0.1:${CONTROLLER_PORTS[k - 1]}
advertised.listeners=PLAINTEXT://127.0.0.1:${BROKER_PORTS[k - 1]}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/node$k/data

# Topics must be created by the services through the admin API.
auto.create.topics.enable=false
num.partitions=1
default.replication.factor=$rf
min.insync.replicas=$min_isr
offsets.topic.replication.factor=$rf
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$min_isr
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$min_isr
share.coordinator.state.topic.num.partitions=4
group.initial.rebalance.delay.ms=0

# Small footprint: few threads, small segments and cleaner buffer.
num.network.threads=2
num.io.threads=4
background.threads=4
num.recovery.threads.per.data.dir=1
log.segment.bytes=8388608
offsets.topic.segment.bytes=8388608
log.index.size.max.bytes=1048576
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=16777216
log.retention.hours=168
EOF
  done
  cat >"$dir/cluster.env" <<EOF
NODES=$NODES
CLUSTER_ID=$CLUSTER_ID
BROKER_PORTS=(${BROKER_PORTS[*]})
CONTROLLER_PORTS=(${CONTROLLER_PORTS[*]})
EOF
}

load_cluster() {
  [[ -f "$1/cluster.env" ]] || die "no cluster in $1 (run: kafka.sh start --dir $1)"
  # shellcheck disable=SC1091
  source "$1/cluster.env"
}

bootstrap_of() {
  local k out=""
  for ((k = 1; k <= NODES; k++)); do out+="${out:+,}127.0.0.1:${BROKER_PORTS[k - 1]}"; done
  echo "$out"
}

# Format node K's log dir with the cluster id, once (the tool refuses to re-format).
format_node() {
  local dir=$1 k=$2 out
  [[ -f "$dir/node$k/data/meta.properties" ]] && return 0
  if ! out=$(run_tool kafka.tools.StorageTool format --cluster-id "$CLUSTER_ID" \
    --config "$dir/node$k/server.properties" 2>&1); then
    echo "$out" >&2
    die "formatting node $k failed"
  fi
}

# ------------------------------------------------------------------------ processes

# PID of node K if it is running (and really is that node's JVM), else nothing.
node_pid() {
  local dir=$1 k=$2 pid
  [[ -f "$dir/pids" ]] || return 0
  pid=$(awk -v k="$k" '$1 == k { print $2 }' "$dir/pids" | tail -n 1)
  [[ -n "$pid" ]] || return 0
  if [[ -r /proc/$pid/cmdline ]] &&
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$dir/node$k/server.properties"; then
    echo "$pid"
  fi
}

set_pid() { # dir node pid ("" removes the entry)
  local dir=$1 k=$2 pid=$3 tmp="$1/pids.tmp.$$"
  { [[ -f "$dir/pids" ]] && awk -v k="$k" '$1 != k' "$dir/pids"; [[ -n "$pid" ]] && echo "$k $pid"; } \
    >"$tmp" || true
  mv "$tmp" "$dir/pids"
}

# Start node K in the background unless it runs already. Sets LOG_OFFSET[K] to the size
# of its log before the launch, so that readiness checks only look at the new output.
launch_node() {
  local dir=$1 k=$2 pid
  pid=$(node_pid "$dir" "$k")
  touch "$dir/node$k.log"
  LOG_OFFSET[k]=$(stat -c %s "$dir/node$k.log")
  if [[ -n "$pid" ]]; then
    LOG_OFFSET[k]=0 # already running: its "started" line is somewhere in the log
    return 0
  fi
  echo "===== $(date -Is) kafka.sh: starting node $k =====" >>"$dir/node$k.log"
  # shellcheck disable=SC2086 # HEAP is a list of JVM flags
  "$JAVA" $HEAP -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
    -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$BROKER_LOG4J" -cp "$LIBS/*" \
    kafka.Kafka "$dir/node$k/server.properties" \
    </dev/null >>"$dir/node$k.log" 2>&1 &
  set_pid "$dir" "$k" "$!"
  STARTED+=("$k")
}

# Send SIGTERM (or SIGKILL) to the given nodes and wait for them to exit; nodes still
# alive after TIMEOUT seconds get SIGKILL.
stop_nodes() {
  local dir=$1 sig=$2 timeout=$3 k pid pids=() deadline
  shift 3
  for k in "$@"; do
    pid=$(node_pid "$dir" "$k")
    if [[ -n "$pid" ]]; then
      kill "-$sig" "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
  done
  deadline=$((SECONDS + timeout))
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "kafka.sh: pid $pid did not stop within ${timeout}s, killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  done
  for k in "$@"; do set_pid "$dir" "$k" ""; done
}

# Print the end of the given nodes' logs to stderr (for failed starts).
show_logs() {
  local dir=$1 k
  shift
  for k in "$@"; do
    echo "----- tail of $dir/node$k.log -----" >&2
    tail -n 40 "$dir/node$k.log" >&2 || true
  done
}

# Wait until every node in WAIT_NODES logged that it started and a metadata request
# through BOOTSTRAP lists all of them as live brokers. On failure: show the logs, stop
# the nodes this invocation started, exit 1.
wait_ready() {
  local dir=$1 bootstrap=$2 timeout=$3 deadline k out ok
  deadline=$((SECONDS + timeout))
  fail() {
    echo "kafka.sh: $1" >&2
    show_logs "$dir" "${WAIT_NODES[@]}"
    ((${#STARTED[@]} == 0)) || stop_nodes "$dir" KILL 5 "${STARTED[@]}"
    exit 1
  }
  # Cheap phase: watch the logs, no extra JVMs competing for the CPU.
  while :; do
    ok=1
    for k in "${WAIT_NODES[@]}"; do
      [[ -n "$(node_pid "$dir" "$k")" ]] || fail "node $k exited during start-up"
      tail -c +$((LOG_OFFSET[k] + 1)) "$dir/node$k.log" |
        grep -q "Kafka Server started" || ok=0
    done
    ((ok)) && break
    ((SECONDS < deadline)) || fail "cluster not up after ${timeout}s"
    sleep 0.3
  done
  # Confirm with a real request: each broker the cluster metadata knows about is listed
  # with its supported API versions ("(id: K ...) -> (").
  while :; do
    out=$(timeout 30 "$ROOT/scripts/kafka.sh" tool broker-api-versions --bootstrap-server "$bootstrap" 2>/dev/null || true)
    ok=1
    for k in "${WAIT_NODES[@]}"; do
      grep -Eq "\(id: $k [^)]*\) -> \(" <<<"$out" || ok=0
    done
    ((ok)) && return 0
    for k in "${WAIT_NODES[@]}"; do
      [[ -n "$(node_pid "$dir" "$k")" ]] || fail "node $k exited during start-up"
    done
    ((SECONDS < deadline)) || fail "cluster did not answer metadata requests after ${timeout}s"
    sleep 0.5
  done
}

# ------------------------------------------------------------------------- commands

DIR="" NODES_ARG=1 NODE="" TIMEOUT="" KILL_NOW=0 WATCH_PID="" CLEANUP=""
parse_args() {
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --dir) DIR=$2; shift 2 ;;
      --nodes) NODES_ARG=$2; shift 2 ;;
      --node) NODE=$2; shift 2 ;;
      --timeout) TIMEOUT=$2; shift 2 ;;
      --kill) KILL_NOW=1; shift ;;
      --watch-pid) WATCH_PID=$2; shift 2 ;;
      --cleanup) CLEANUP=1; shift ;;
      *) die "unknown argument: $1" ;;
    esac
  done
  [[ -n "$DIR" ]] || die "--dir DIR is required"
  mkdir -p "$DIR"
  DIR=$(cd "$DIR" && pwd)
}

check_node() {
  [[ "$NODE" =~ ^[0-9]+$ ]] && ((NODE >= 1 && NODE <= NODES)) ||
    die "--node must be between 1 and $NODES"
}

cmd_start() {
  parse_args "$@"
  [[ "$NODES_ARG" == 1 || "$NODES_ARG" == 3 ]] || die "--nodes must be 1 or 3"
  cmd_install
  if [[ -f "$DIR/cluster.env" ]]; then
    load_cluster "$DIR"
    ((NODES == NODES_ARG)) || die "$DIR holds a $NODES-node cluster, not $NODES_ARG"
  else
    create_cluster "$DIR" "$NODES_ARG"
  fi
  local k bootstrap
  STARTED=() WAIT_NODES=() LOG_OFFSET=()
  # Format the nodes in parallel (one short JVM each); fail if any of them failed.
  local jobs=()
  for ((k = 1; k <= NODES; k++)); do
    format_node "$DIR" "$k" &
    jobs+=("$!")
  done
  for k in "${jobs[@]}"; do wait "$k" || exit 1; done
  for ((k = 1; k <= NODES; k++)); do
    launch_node "$DIR" "$k"
    WAIT_NODES+=("$k")
  done
  bootstrap=$(bootstrap_of)
  wait_ready "$DIR" "$bootstrap" "${TIMEOUT:-90}"
  echo "$bootstrap" >"$DIR/bootstrap"
  if [[ -n "$WATCH_PID" ]]; then
    start_watchdog "$DIR" "$WATCH_PID"
  fi
  echo "bootstrap=$bootstrap"
}

# A detached watchdog that kills the cluster once process PID is gone, so a test run that
# dies (or a test binary whose statics are never dropped) leaves no broker behind. All its
# file descriptors are closed, so the caller's pipes see end-of-file.
start_watchdog() { # dir pid
  setsid bash -c 'while kill -0 "$1" 2>/dev/null; do sleep 1; done
    "$2" stop --dir "$3" --kill
    [[ -n "$4" ]] && rm -rf "$3"' \
    _ "$2" "$ROOT/scripts/kafka.sh" "$1" "$CLEANUP" </dev/null >/dev/null 2>&1 &
}

cmd_start_node() {
  parse_args "$@"
  load_cluster "$DIR"
  check_node
  cmd_install
  STARTED=() WAIT_NODES=("$NODE") LOG_OFFSET=()
  format_node "$DIR" "$NODE"
  launch_node "$DIR" "$NODE"
  # Ask the node itself, so that the check also proves its broker port is back.
  wait_ready "$DIR" "127.0.0.1:${BROKER_PORTS[NODE - 1]}" "${TIMEOUT:-90}"
  bootstrap_of >"$DIR/bootstrap"
  echo "bootstrap=$(bootstrap_of)"
}

cmd_stop() {
  parse_args "$@"
  [[ -f "$DIR/cluster.env" ]] || return 0 # never started: nothing to do
  load_cluster "$DIR"
  local sig=TERM k all=()
  ((KILL_NOW)) && sig=KILL
  for ((k = 1; k <= NODES; k++)); do all+=("$k"); done
  stop_nodes "$DIR" "$sig" "${TIMEOUT:-30}" "${all[@]}"
}

cmd_stop_node() {
  parse_args "$@"
  load_cluster "$DIR"
  check_node
  local sig=TERM
  ((KILL_NOW)) && sig=KILL
  stop_nodes "$DIR" "$sig" "${TIMEOUT:-30}" "$NODE"
}

cmd_status() {
  parse_args "$@"
  load_cluster "$DIR"
  local k pid state
  for ((k = 1; k <= NODES; k++)); do
    pid=$(node_pid "$DIR" "$k")
    if [[ -n "$pid" ]]; then state="running pid=$pid"; else state=stopped; fi
    echo "node $k $state broker=${BROKER_PORTS[k - 1]} controller=${CONTROLLER_PORTS[k - 1]}"
  done
}

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
  exit 2
}

[[ $# -ge 1 ]] || usage
cmd=$1
shift
case "$cmd" in
  install) cmd_install ;;
  start) cmd_start "$@" ;;
  stop) cmd_stop "$@" ;;
  start-node) cmd_start_node "$@" ;;
  stop-node) cmd_stop_node "$@" ;;
  status) cmd_status "$@" ;;
  tool) cmd_tool "$@" ;;
  -h | --help | help) usage ;;
  *) die "unknown command: $cmd (try --help)" ;;
esac
