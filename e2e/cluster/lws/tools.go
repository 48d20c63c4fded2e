//go:build tools

// Package tools records the LeaderWorkerSet controller main package that ../build turns into a binary.
package tools

import _ "sigs.k8s.io/lws/cmd"
