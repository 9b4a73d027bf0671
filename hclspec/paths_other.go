//go:build !unix

package hclspec

// openNonblock: fifos that block an open are a unix thing.
const openNonblock = 0
