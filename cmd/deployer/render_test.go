package main

import (
	"testing"
	"time"

	"github.com/deployer-dev/deployer/executor"
)

// A transfer whose total is known says how much is left and when it will be done.
func TestProgressLine(t *testing.T) {
	for _, tc := range []struct {
		e       executor.Event
		elapsed time.Duration
		done    bool
		want    string
	}{
		{executor.Event{Bytes: 100 << 20, Total: 400 << 20}, 4 * time.Second, false, "100.0 MiB of 400.0 MiB, 25.0 MiB/s, 12s left"},
		{executor.Event{Bytes: 100 << 20}, 4 * time.Second, false, "100.0 MiB, 25.0 MiB/s"},
		{executor.Event{Bytes: 400 << 20, Total: 400 << 20}, 16 * time.Second, true, "400.0 MiB, 25.0 MiB/s"},
		{executor.Event{Bytes: 500 << 20, Total: 400 << 20}, 20 * time.Second, false, "500.0 MiB of 500.0 MiB, 25.0 MiB/s"},
		{executor.Event{Bytes: 0, Total: 400 << 20}, 0, false, "0 B of 400.0 MiB"},
	} {
		if got := progressLine(tc.e, tc.elapsed, tc.done); got != tc.want {
			t.Errorf("progressLine(%d of %d after %s) = %q, want %q", tc.e.Bytes, tc.e.Total, tc.elapsed, got, tc.want)
		}
	}
}
