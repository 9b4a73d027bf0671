package executor_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor"
	"github.com/deployer-dev/deployer/executor/plan"
)

// Apply's failure matrix, on the in-memory engine, for each cutover: what the operator sees
// (the outcome's error, what serves) and that the next apply converges.

func TestMemDeploy(t *testing.T) {
	forCutovers(t, func(t *testing.T, r *memRig) {
		if so := r.apply(r.config("v1", nil)); so.Error != "" || so.Release != 1 {
			t.Fatalf("create: %+v", so)
		}
		if got := r.get("/"); got != "version=v1" {
			t.Fatalf("after create: %q", got)
		}
		if so := r.apply(r.config("v2", nil)); so.Error != "" || so.Release != 2 {
			t.Fatalf("replace: %+v\n%s", so, strings.Join(r.steps(), " "))
		}
		if got := r.get("/"); got != "version=v2" {
			t.Fatalf("after replace: %q", got)
		}
		if got := r.state(); got != "previous:1:created live:2:running" {
			t.Errorf("containers: %s", got)
		}
		if h := r.get("/history"); !strings.Contains(h, "started v1") || !strings.Contains(h, "started v2") {
			t.Errorf("history: %q", h)
		}
		so, err := r.applier(r.config("v2", nil)).Rollback(context.Background(), "app", 0)
		if err != nil || so.Error != "" || so.Release != 1 {
			t.Fatalf("rollback: %+v %v", so, err)
		}
		if got := r.get("/"); got != "version=v1" {
			t.Errorf("after rollback: %q", got)
		}
	})
}

// A failed check of the candidate leaves the live release untouched and serving, removes the
// candidate, and says why and what is live.
func TestMemCheckFails(t *testing.T) {
	cases := []struct {
		name string
		mod  func(s *config.Service)
		want []string
	}{
		{"candidate crashes", func(s *config.Service) { s.Env["APP_MODE"] = "crash" },
			[]string{`candidate "`, "exited with code 3", "database unreachable"}},
		{"health check", func(s *config.Service) { s.Env["APP_MODE"] = "unhealthy" },
			[]string{"health check GET /health", "db locked"}},
		{"canary", func(s *config.Service) {
			s.Canaries = []*config.Canary{{Name: "home", Path: "/", BodyContains: "version=v9"}}
		}, []string{`canary "home" GET /`}},
		{"hook", func(s *config.Service) { s.Hooks[0].Command = []string{"exit", "3"} },
			[]string{`hook "before_cutover"`, "exited with code 3", "exiting with 3"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			forCutovers(t, func(t *testing.T, r *memRig) {
				if so := r.apply(r.config("v1", nil)); so.Error != "" {
					t.Fatal(so.Error)
				}
				so := r.apply(r.config("v2", c.mod))
				for _, want := range append(c.want, "release 1 ("+r.project+"-app) is still live") {
					if !strings.Contains(so.Error, want) {
						t.Errorf("error lacks %q:\n%s", want, so.Error)
					}
				}
				if got := r.get("/"); got != "version=v1" {
					t.Errorf("serving %q", got)
				}
				if got := r.state(); got != "live:1:running" {
					t.Errorf("containers: %s", got)
				}
				if so := r.apply(r.config("v2", nil)); so.Error != "" || r.get("/") != "version=v2" {
					t.Errorf("the next apply: %+v", so)
				}
			})
		})
	}
}

// failAfterCutover makes release v pass its candidate checks and fail once live: the restart
// cutover starts a second copy of it (mode once fails on a second start), the proxy cutover
// keeps the candidate (it dies after the health check's requests).
func failAfterCutover(r *memRig) func(s *config.Service) {
	return func(s *config.Service) {
		s.HealthCheck.Deadline = time.Second
		if r.cutover == config.CutoverProxy {
			s.Env["APP_DIE_AFTER"] = "2"
		} else {
			s.Env["APP_MODE"] = "once"
		}
	}
}

// A release that fails verification is rolled back to the one before (auto_rollback), or, without
// it, stays live with a clear error.
func TestMemVerifyFails(t *testing.T) {
	forCutovers(t, func(t *testing.T, r *memRig) {
		if so := r.apply(r.config("v1", nil)); so.Error != "" {
			t.Fatal(so.Error)
		}
		so := r.apply(r.config("v2", failAfterCutover(r)))
		if !so.RolledBack || so.RolledBackTo != 1 || so.Release != 1 || !strings.HasPrefix(so.Error, "rolled back to release 1: release 2 failed after cutover") {
			t.Fatalf("outcome: %+v\n%s", so, strings.Join(r.steps(), " "))
		}
		if got := r.get("/"); got != "version=v1" {
			t.Errorf("serving %q after the rollback", got)
		}
		if got := r.state(); got != "live:1:running" {
			t.Errorf("containers: %s", got)
		}
		steps := strings.Join(r.steps(), " ")
		if !strings.Contains(steps, "verify:failed") || !strings.Contains(steps, "rollback:ok") {
			t.Errorf("steps: %s", steps)
		}

		noRollback := func(s *config.Service) { failAfterCutover(r)(s); s.Deploy.AutoRollback = false }
		so = r.apply(r.config("v3", noRollback))
		if so.RolledBack || so.Release != 0 || !strings.Contains(so.Error, "release 2 is live but failed verification") {
			t.Errorf("without auto_rollback: %+v", so)
		}
		if so := r.apply(r.config("v4", nil)); so.Error != "" || r.get("/") != "version=v4" {
			t.Errorf("the next apply: %+v", so)
		}
	})
}

// When the switch back fails too, the error says that nothing may be serving and what to run;
// the next apply brings the service back.
func TestMemRollbackFails(t *testing.T) {
	forCutovers(t, func(t *testing.T, r *memRig) {
		if so := r.apply(r.config("v1", nil)); so.Error != "" {
			t.Fatal(so.Error)
		}
		r.crash = func(point string) {
			if point != string(plan.StepRollback) {
				return
			}
			if r.cutover == config.CutoverProxy {
				r.eng.Fail("exec", plan.ProxyName(r.project), 1, errors.New("the proxy does not answer"))
			} else {
				r.eng.Fail("start", r.project+"-app", 1, errors.New("no space left on device"))
			}
		}
		so := r.apply(r.config("v2", failAfterCutover(r)))
		r.crash = nil
		for _, want := range []string{"release 2 failed after cutover", "the rollback to release 1 failed too", "Nothing may be serving", "deployer rollback service.app"} {
			if !strings.Contains(so.Error, want) {
				t.Errorf("error lacks %q:\n%s", want, so.Error)
			}
		}
		if so.Release != 0 || !so.RolledBack {
			t.Errorf("outcome: %+v", so)
		}
		if so := r.apply(r.config("v1", nil)); so.Error != "" || r.get("/") != "version=v1" {
			t.Errorf("the next apply: %+v, serving %q, containers %s", so, r.get("/"), r.state())
		}
	})
}

// Ctrl-C before the cutover leaves the live release untouched; during the cutover, the switch
// finishes and the interrupted verification goes back to the old release. The next apply
// converges.
func TestMemInterrupt(t *testing.T) {
	for _, c := range []struct {
		point string
		want  string
	}{
		{string(plan.StepHealth), "context canceled; release 1"},
		{"hook.before_cutover", "context canceled; release 1"},
		{string(plan.StepBackup), "context canceled; release 1"},
		{string(plan.StepCutover), "rolled back to release 1"},
	} {
		t.Run(c.point, func(t *testing.T) {
			forCutovers(t, func(t *testing.T, r *memRig) {
				if so := r.apply(r.config("v1", nil)); so.Error != "" {
					t.Fatal(so.Error)
				}
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				p := r.config("v2", nil)
				a := r.applier(p)
				a.Crash = func(point string) {
					if point == c.point {
						cancel()
					}
				}
				out, err := a.Apply(ctx, r.plan(p))
				if err != nil || len(out.Services) != 1 || !strings.Contains(out.Services[0].Error, c.want) {
					t.Fatalf("interrupted at %s: %v %+v", c.point, err, out.Services[0])
				}
				if got := r.get("/"); got != "version=v1" {
					t.Errorf("serving %q", got)
				}
				if got := r.state(); got != "live:1:running" {
					t.Errorf("containers: %s", got)
				}
				if so := r.apply(r.config("v2", nil)); so.Error != "" || r.get("/") != "version=v2" {
					t.Errorf("the next apply: %+v", so)
				}
			})
		})
	}
}

// A live release that is stopped (a reboot, by hand) is started again by the next apply; one
// that does not come back healthy is replaced by the release before it (auto_rollback).
func TestMemResume(t *testing.T) {
	forCutovers(t, func(t *testing.T, r *memRig) {
		ctx := context.Background()
		stopLive := func() {
			obs, _ := plan.Observe(ctx, r.eng, projectOnly(r.project))
			if err := r.eng.StopContainer(ctx, obs.Services["app"].Live.ID, 0); err != nil {
				t.Fatal(err)
			}
		}
		r.apply(r.config("v1", nil))
		stopLive()
		pl := r.plan(r.config("v1", nil))
		if ch := pl.Change("app"); ch.Action != plan.ActionUpdate {
			t.Fatalf("plan: %+v", ch)
		}
		if so := r.apply(r.config("v1", nil)); so.Error != "" || so.Action != plan.ActionUpdate || r.get("/") != "version=v1" {
			t.Fatalf("resume: %+v", so)
		}
		// Stopped, and replaced at once: the live release is started first.
		stopLive()
		pl = r.plan(r.config("v2", nil))
		if pl.Steps[0].Name != string(plan.StepLock) || !hasStep(pl, string(plan.StepResume)) {
			t.Errorf("the plan does not start the stopped live release first: %+v", pl.Steps)
		}
		if so := r.apply(r.config("v2", nil)); so.Error != "" || r.get("/") != "version=v2" {
			t.Fatalf("replace of a stopped live release: %+v", so)
		}
		// Stopped, and it does not start again: release 1 comes back. (The release is started
		// under its set-aside name, which it keeps until it is verified.)
		stopLive()
		r.eng.Fail("start", r.project+"-app-old-2", 2, errors.New("OCI runtime create failed"))
		so := r.apply(r.config("v2", nil))
		if !so.RolledBack || so.RolledBackTo != 1 || !strings.Contains(so.Error, "rolled back to release 1: release 2 did not come back healthy") {
			t.Fatalf("outcome: %+v\n%s", so, strings.Join(r.steps(), " "))
		}
		if got := r.get("/"); got != "version=v1" {
			t.Errorf("serving %q", got)
		}
	})
}

func hasStep(pl *plan.Plan, name string) bool {
	for _, s := range pl.Steps {
		if s.Name == name {
			return true
		}
	}
	return false
}

// Apply runs the plan's steps, in the plan's order, by their names: every step it reports
// starting is the plan's next one, in the plan's own words, or a step inside it.
func TestMemApplyRunsThePlan(t *testing.T) {
	inside := map[string]bool{string(plan.StepDrain): true, string(plan.StepVerify): true, string(plan.StepProxy): true, string(plan.StepRollback): true}
	forCutovers(t, func(t *testing.T, r *memRig) {
		for i, mod := range []func(s *config.Service){nil, nil, func(s *config.Service) {
			s.Canaries = []*config.Canary{{Name: "home", Path: "/"}}
			s.Hooks = append(s.Hooks, &config.Hook{When: "before_cutover", Command: []string{"exit", "0"}})
		}} {
			p := r.config(fmt.Sprintf("v%d", i+1), mod)
			pl := r.plan(p)
			r.steps()
			if out, err := r.applier(p).Apply(context.Background(), pl); err != nil || out.Failed() {
				t.Fatalf("apply: %v %+v", err, out)
			}
			var started []string
			said := map[int]string{}
			for _, e := range r.events {
				if e.Type == executor.EventStep && e.Phase == "start" {
					said[len(started)] = e.Detail
					started = append(started, e.Step)
				}
			}
			next := 0
			for i, name := range started {
				switch {
				case next < len(pl.Steps) && name == pl.Steps[next].Name:
					if said[i] != pl.Steps[next].Detail {
						t.Errorf("apply says of %s %q, the plan %q", name, said[i], pl.Steps[next].Detail)
					}
					next++
				case !inside[name]:
					t.Errorf("apply ran %s, not the plan's next step (%d of %v): %v", name, next, pl.Steps, started)
				}
			}
			if next != len(pl.Steps) {
				t.Errorf("apply ran %d of the plan's %d steps: %v", next, len(pl.Steps), started)
			}
		}
	})
}

// A backup killed in its snapshot leaves the scratch volume (a copy of the databases): the plan
// names it, with nothing else to change, and the next apply removes it. A volume of that name
// the deployer did not make is not its to touch.
func TestMemScratchLeftover(t *testing.T) {
	r := newMemRig(t, config.CutoverRestart)
	ctx := context.Background()
	p := r.config("v1", nil)
	r.apply(p)
	scratch := r.project + "-app-snapshots"
	if err := r.eng.CreateVolume(ctx, scratch, map[string]string{plan.LabelProject: r.project, plan.LabelService: "app", plan.LabelRole: plan.RoleScratch}); err != nil {
		t.Fatal(err)
	}
	pl := r.plan(p)
	if pl.HasChanges() || len(pl.Leftovers) != 1 || pl.Leftovers[0].Kind != plan.LeftoverScratch || !strings.Contains(pl.Leftovers[0].Detail, scratch) {
		t.Fatalf("leftovers: %+v", pl.Leftovers)
	}
	var clean *plan.Step
	for _, s := range pl.Steps {
		if s.Name == string(plan.StepClean) && s.Volume == scratch {
			clean = s
		}
	}
	if clean == nil || !strings.Contains(clean.Detail, "remove the scratch volume "+scratch) {
		t.Fatalf("no step removes the scratch volume: %+v", pl.Steps)
	}
	r.steps()
	r.applyAll(p)
	if steps := strings.Join(r.steps(), " "); !strings.Contains(steps, string(plan.StepClean)+":ok") {
		t.Errorf("apply's steps: %s", steps)
	}
	// What stays labelled with the project is its data volume, made by the first apply.
	if vols, _ := r.eng.Volumes(ctx, r.project); len(vols) != 1 || vols[0].Name != r.project+"-data" || vols[0].Labels[plan.LabelRole] != plan.RoleData {
		t.Errorf("after apply: %+v", vols)
	}
	if pl := r.plan(p); pl.HasChanges() || len(pl.Leftovers) != 0 {
		t.Errorf("after apply the plan still has work: %+v", pl.Leftovers)
	}
}
