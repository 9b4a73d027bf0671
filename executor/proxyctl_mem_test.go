package executor_test

import (
	"context"
	"testing"
	"time"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor/engine/memengine"
)

// An apply sends the proxy all its requests on one session (one exec into the proxy, not one
// per request) and ends it with the run. A proxy from a deployer before sessions gets one exec
// per request, after one try at a session.
func TestMemProxySessions(t *testing.T) {
	for _, c := range []struct {
		name     string
		proxy    memengine.Program
		sessions bool
	}{{"sessions", memengine.Proxy, true}, {"older proxy", memengine.ProxyWithoutSessions, false}} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			r := newMemRig(t, config.CutoverProxy)
			r.eng.Image(memProxy, c.proxy, nil)
			open := func(what string) {
				t.Helper()
				n := r.eng.Execs().Open
				for deadline := time.Now().Add(2 * time.Second); n > 0 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
					n = r.eng.Execs().Open
				}
				if n != 0 {
					t.Errorf("%s left %d control sessions open in the proxy", what, n)
				}
			}
			deploy := func(v string) memengine.ExecCounts {
				t.Helper()
				before := r.eng.Execs()
				if so := r.apply(r.config(v, nil)); so.Error != "" {
					t.Fatalf("apply %s: %s", v, so.Error)
				}
				if got := r.get("/"); got != "version="+v {
					t.Fatalf("after apply %s: serving %q", v, got)
				}
				open("apply " + v)
				after := r.eng.Execs()
				return memengine.ExecCounts{OneShot: after.OneShot - before.OneShot, Sessions: after.Sessions - before.Sessions}
			}
			deploy("v1")
			n := deploy("v2")
			if c.sessions && (n.Sessions != 1 || n.OneShot != 0) {
				t.Errorf("a replace: %d sessions, %d execs of their own (want 1 session, no other exec)", n.Sessions, n.OneShot)
			}
			if !c.sessions && (n.Sessions != 1 || n.OneShot < 4) {
				t.Errorf("a replace through a proxy without sessions: %d sessions tried, %d execs (want 1 tried, one exec per request)", n.Sessions, n.OneShot)
			}
			so, err := r.applier(r.config("v2", nil)).Rollback(context.Background(), "app", 0)
			if err != nil || so.Error != "" || r.get("/") != "version=v1" {
				t.Fatalf("rollback: %+v %v, serving %q", so, err, r.get("/"))
			}
			open("the rollback")
		})
	}
}
