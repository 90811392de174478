# VisionFleet: the two commands are `make demo` and `make test` (see README.md).
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: test models fmt-check clippy unit build

## test: formatting, lints and every test (what CI runs)
test: fmt-check clippy models
	$(CARGO) test --workspace --all-targets

## models: fetch the pretrained detectors and sample photos into models/ (idempotent)
models: build
	scripts/fetch-models.sh

build:
	$(CARGO) build --workspace

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings
