//go:build unix

package hclspec

import "syscall"

// openNonblock opens a fifo without waiting for a writer, so that it can be refused.
const openNonblock = syscall.O_NONBLOCK
