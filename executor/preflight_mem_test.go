package executor_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The preflight step stops an apply before any candidate starts: a host port that a process
// outside the engine took after the plan was made, and a backup store that cannot be written.
// The ports the project's own releases and proxy hold pass.
func TestMemPreflight(t *testing.T) {
	forCutovers(t, func(t *testing.T, r *memRig) {
		ctx := context.Background()
		p := r.config("v1", nil)
		plan := r.plan(p)
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(r.port))
		if err != nil {
			t.Fatal(err)
		}
		_, err = r.applier(p).Apply(ctx, plan)
		l.Close()
		if err == nil || !strings.Contains(err.Error(), "host port "+strconv.Itoa(r.port)+" of service.app is held by a process outside Docker") {
			t.Fatalf("apply with the port held: %v", err)
		}
		if got := strings.Join(r.steps(), " "); got != "lock:ok preflight:failed unlock:ok" {
			t.Errorf("steps: %s", got)
		}
		if got := r.state(); got != "" {
			t.Errorf("made: %s", got)
		}

		// Deployed, the port is the project's own (its release's or its proxy's): it passes.
		r.apply(p)
		so := r.apply(r.config("v2", nil))
		if so.Error != "" || !r.serves("v2") {
			t.Fatalf("a deploy over the project's own port: %+v", so)
		}

		// A backup store that cannot be written: found before the candidate.
		p3 := r.config("v3", nil)
		file := filepath.Join(t.TempDir(), "not-a-directory")
		os.WriteFile(file, nil, 0o644)
		p3.Stores["default"].Directory = filepath.Join(file, "backups")
		r.steps()
		_, err = r.applier(p3).Apply(ctx, r.plan(p3))
		if err == nil || !strings.Contains(err.Error(), "(for service.app); nothing was changed") {
			t.Fatalf("apply with a store that cannot be written: %v", err)
		}
		if got := strings.Join(r.steps(), " "); !strings.Contains(got, "preflight:failed") || strings.Contains(got, "candidate") {
			t.Errorf("steps: %s", got)
		}
		if !r.serves("v2") {
			t.Errorf("the live release does not serve after the refused apply")
		}
	})
}
