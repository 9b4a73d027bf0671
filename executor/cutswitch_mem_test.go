package executor_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor/plan"
)

// switchCutover is the configuration of version v with the service's cutover set to c.
func switchCutover(r *memRig, v string, c config.Cutover, mod func(s *config.Service)) *config.Project {
	return r.config(v, func(s *config.Service) {
		s.Deploy.Cutover = c
		if mod != nil {
			mod(s)
		}
	})
}

// cutoverSwitches are the two switches of a service's cutover: from the restart cutover, whose
// live release publishes the host port itself, to the proxy, which takes the port at the
// cutover; and back, where the proxy gives the port to the new release.
var cutoverSwitches = []struct {
	from, to config.Cutover
	handover string
}{
	{config.CutoverRestart, config.CutoverProxy, plan.HandoverToProxy},
	{config.CutoverProxy, config.CutoverRestart, plan.HandoverFromProxy},
}

// A service switched from one cutover to the other: the plan says the port changes hands with a
// restart's window, the apply switches (the proxy never binds the port while the live release
// publishes it), the data is kept, and the next deploy with the new cutover is an ordinary one.
func TestMemCutoverSwitch(t *testing.T) {
	for _, sw := range cutoverSwitches {
		t.Run(string(sw.from)+"-to-"+string(sw.to), func(t *testing.T) {
			t.Parallel()
			r := newMemRig(t, sw.from)
			if so := r.apply(r.config("v1", nil)); so.Error != "" {
				t.Fatal(so.Error)
			}
			p := switchCutover(r, "v2", sw.to, nil)
			pl := r.plan(p)
			ch := pl.Change("app")
			if ch.Action != plan.ActionReplace || ch.PortHandover != sw.handover {
				t.Fatalf("the plan of the switch: %s, port handover %q, want %q", ch.Action, ch.PortHandover, sw.handover)
			}
			var cutover string
			for _, st := range pl.Steps {
				if st.Kind == plan.StepCutover {
					cutover = st.Detail
				}
			}
			for _, want := range []string{fmt.Sprintf(":%d", r.port), "stop release 1"} {
				if !strings.Contains(cutover, want) {
					t.Errorf("the plan's cutover %q does not say %q", cutover, want)
				}
			}
			if sw.to == config.CutoverProxy && !strings.Contains(cutover, "window without service") {
				t.Errorf("the plan's cutover %q does not say the switch has a window without service", cutover)
			}
			for _, l := range pl.Leftovers {
				t.Errorf("the plan of the switch shows a leftover: %s", l.Detail)
			}
			if so := r.apply(p); so.Error != "" || so.Release != 2 || !r.serves("v2") {
				t.Fatalf("the switch: %+v, serving %q\n%s", so, r.get("/"), strings.Join(r.steps(), " "))
			}
			if h := r.get("/history") + "\n"; !strings.Contains(h, "started v1\n") || !strings.Contains(h, "started v2\n") {
				t.Errorf("after the switch, the data volume lost its history: %q", h)
			}
			assertConverged(t, r, p, "the switch")
			// A rollback to the release from before the switch goes through the new cutover.
			if so, err := r.applier(p).Rollback(t.Context(), "app", 1); err != nil || so.Error != "" || !r.serves("v1") {
				t.Fatalf("rollback across the switch: %+v %v, serving %q\n%s", so, err, r.get("/"), strings.Join(r.steps(), " "))
			}
			next := switchCutover(r, "v3", sw.to, nil)
			if ch := r.plan(next).Change("app"); ch.PortHandover != "" {
				t.Errorf("the deploy after the switch hands the port over again: %q", ch.PortHandover)
			}
			if so := r.apply(next); so.Error != "" || !r.serves("v3") {
				t.Fatalf("the deploy after the switch: %+v, serving %q", so, r.get("/"))
			}
			// And back, to the cutover it had.
			back := switchCutover(r, "v4", sw.from, nil)
			if so := r.apply(back); so.Error != "" || !r.serves("v4") {
				t.Fatalf("the switch back: %+v, serving %q", so, r.get("/"))
			}
			assertConverged(t, r, back, "the switch back")
		})
	}
}

// A switch whose new release fails its verification rolls back: the old release serves again,
// on the host port it had (its own, or the proxy's), and the next apply switches.
func TestMemCutoverSwitchRollsBack(t *testing.T) {
	for _, sw := range cutoverSwitches {
		t.Run(string(sw.from)+"-to-"+string(sw.to), func(t *testing.T) {
			t.Parallel()
			r := newMemRig(t, sw.from)
			if so := r.apply(r.config("v1", nil)); so.Error != "" {
				t.Fatal(so.Error)
			}
			// Healthy for the candidate's checks, failing the new live release's.
			failing := func(s *config.Service) { s.Env["APP_HEALTH_FAIL_AFTER"] = "2" }
			if sw.to == config.CutoverRestart {
				failing = func(s *config.Service) { s.Env["APP_MODE"] = "once" }
			}
			so := r.apply(switchCutover(r, "v2", sw.to, failing))
			if so.Error == "" || !so.RolledBack || !r.serves("v1") {
				t.Fatalf("a failed switch: %+v, serving %q\n%s", so, r.get("/"), strings.Join(r.steps(), " "))
			}
			assertConverged(t, r, r.config("v1", nil), "the failed switch")
			p := switchCutover(r, "v3", sw.to, nil)
			if ch := r.plan(p).Change("app"); ch.PortHandover != sw.handover {
				t.Errorf("the plan after the failed switch: port handover %q, want %q", ch.PortHandover, sw.handover)
			}
			if so := r.apply(p); so.Error != "" || !r.serves("v3") {
				t.Fatalf("the switch after the failed one: %+v, serving %q\n%s", so, r.get("/"), strings.Join(r.steps(), " "))
			}
			assertConverged(t, r, p, "the switch")
		})
	}
}

// The switch killed at every kill point: the next apply converges to the new release serving
// with the new cutover, without losing data; at the points before the old release stops, it
// still serves.
func TestMemCutoverSwitchInterrupted(t *testing.T) {
	for _, sw := range cutoverSwitches {
		t.Run(string(sw.from)+"-to-"+string(sw.to), func(t *testing.T) {
			t.Parallel()
			r := newMemRig(t, sw.from)
			r.apply(r.config("v1", nil))
			points := plan.KillPoints(switchCutover(r, "v2", sw.to, nil), r.plan(switchCutover(r, "v2", sw.to, nil)))
			want := []string{plan.PointCutoverSwitched, plan.PointCutoverSetAside, string(plan.StepVerify), string(plan.StepCleanup)}
			if sw.to == config.CutoverRestart {
				want = []string{plan.PointCutoverStopped, plan.PointCutoverRenamed, plan.PointCutoverCreated, string(plan.StepVerify), string(plan.StepCleanup)}
			}
			for _, pt := range want {
				if !slices.Contains(points, pt) {
					t.Fatalf("the kill points of the switch %q lack %s", points, pt)
				}
			}
			t.Logf("kill points: %s", strings.Join(points, " "))
			for _, point := range points {
				t.Run(point, func(t *testing.T) {
					r := newMemRig(t, sw.from)
					if so := r.apply(r.config("v1", nil)); so.Error != "" {
						t.Fatal(so.Error)
					}
					p := switchCutover(r, "v2", sw.to, nil)
					if !r.crashAt(p, point) {
						t.Fatalf("the switch never reached %s: %s", point, r.state())
					}
					if before := slices.Index(points, plan.PointCutoverSwitched); sw.to == config.CutoverProxy && slices.Index(points, point) < before && !r.serves("v1") {
						t.Errorf("killed at %s, before the cutover, release 1 does not serve: %q, %s", point, r.get("/"), r.state())
					}
					pl := r.plan(p)
					if out := r.applyAll(p); out.Failed() || !r.serves("v2") {
						t.Fatalf("apply after the crash at %s: %s, serving %q\nplan: %s\ncontainers: %s\n%s", point, errorsOf(out), r.get("/"), stepNames(pl), r.state(), strings.Join(r.steps(), " "))
					}
					if h := r.get("/history") + "\n"; !strings.Contains(h, "started v1\n") || !strings.Contains(h, "started v2\n") {
						t.Errorf("after the crash at %s and an apply, the data volume lost its history: %q", point, h)
					}
					assertConverged(t, r, p, point)
					if so := r.apply(switchCutover(r, "v3", sw.to, nil)); so.Error != "" || !r.serves("v3") {
						t.Fatalf("the deploy after the crash at %s and an apply: %+v, serving %q", point, so, r.get("/"))
					}
				})
			}
		})
	}
}
