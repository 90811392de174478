//go:build tools

// Package tools pins the Kubernetes API server for the operator's integration
// test bed (scripts/kube-apiserver.sh builds it with
// `go build k8s.io/kubernetes/cmd/kube-apiserver` inside this module).
package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
