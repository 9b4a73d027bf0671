package executor_test

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/deployer-dev/deployer/executor"
	"github.com/deployer-dev/deployer/executor/plan"
)

// On an engine declared remote, the preflight step asks the engine's host which ports are in
// use: a helper container of the deployer on the host's network tries to listen on them. The
// engine is this machine's, declared remote, so a listener of this test is on its host: the
// apply stops there, before any candidate; once the port is free it deploys.
func TestPreflightAsksTheEngine(t *testing.T) {
	r := newRig(t)
	r.self, r.remote = staticDeployer(t), true
	ctx := context.Background()
	p := r.config("v1", nil)
	pl, err := executor.MakePlan(ctx, p, r.eng, plan.PlanOptions{Remote: true})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(r.port))
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.applier(p).Apply(ctx, pl)
	l.Close()
	if err == nil || !strings.Contains(err.Error(), "host port "+strconv.Itoa(r.port)+" of service.app is held by a process outside Docker") {
		t.Fatalf("apply with the port held on the engine's host: %v", err)
	}
	var steps []string
	for _, e := range r.events {
		if e.Type == executor.EventStep && e.Phase == "end" {
			steps = append(steps, e.Step+":"+string(e.Outcome))
		}
		if e.Type == executor.EventWarning {
			t.Errorf("warning: %s", e.Detail)
		}
	}
	if got := strings.Join(steps, " "); got != "lock:ok preflight:failed unlock:ok" {
		t.Errorf("steps: %s", got)
	}
	if obs, _ := plan.Observe(ctx, r.eng, projectOnly(r.project)); len(obs.All) != 0 {
		t.Errorf("left on the engine: %d containers (the helper, a candidate?)", len(obs.All))
	}
	r.events = nil
	if so := r.apply(p); so.Error != "" {
		t.Fatalf("deploy once the port is free: %s", so.Error)
	}
}
