//go:build tools

// Package tools records the kwok main package that ../build turns into a binary.
package tools

import _ "sigs.k8s.io/kwok/cmd/kwok"
