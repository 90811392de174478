//go:build tools

// Package tools pins etcd for the operator's integration test bed
// (scripts/kube-apiserver.sh builds it with `go build go.etcd.io/etcd/server/v3`
// inside this module: that package is etcd's own `etcd` binary main).
package tools

import _ "go.etcd.io/etcd/server/v3"
