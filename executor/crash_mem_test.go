package executor_test

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor"
	"github.com/deployer-dev/deployer/executor/plan"
)

// The deployer crashes at every kill point of a deploy (every step's start, and the points
// inside the cutover and the clean-up): the next plan shows what is left, the next apply
// converges without losing data or leaving the service down, and then there is nothing left to
// do.
func TestMemCrashAtEveryStep(t *testing.T) {
	forCutovers(t, func(t *testing.T, r *memRig) {
		if so := r.apply(r.config("v1", nil)); so.Error != "" {
			t.Fatal(so.Error)
		}
		points := plan.KillPoints(r.config("v2", nil), r.plan(r.config("v2", nil)))
		t.Logf("kill points: %s", strings.Join(points, " "))
		for i, point := range points {
			version := fmt.Sprintf("v%d", i+2)
			p := r.config(version, nil)
			if !r.crashAt(p, point) {
				t.Fatalf("apply of %s never reached %s", version, point)
			}
			pl := r.plan(p)
			if out := r.applyAll(p); out.Failed() || !r.serves(version) {
				t.Fatalf("apply after the crash at %s: %s, serving %q\nplan: %s\ncontainers: %s\n%s", point, errorsOf(out), r.get("/"), stepNames(pl), r.state(), strings.Join(r.steps(), " "))
			}
			hist := r.get("/history") + "\n"
			for j := 1; j <= i+2; j++ {
				if !strings.Contains(hist, fmt.Sprintf("started v%d\n", j)) {
					t.Errorf("after the crash at %s, the data volume lost the history of v%d: %q", point, j, hist)
				}
			}
			assertConverged(t, r, p, point)
		}
	})
}

// Crashes in the middle of the sequences that no deploy runs: resuming a stopped live release,
// at every point of it and of its verification. Whatever the point, the next plan starts or
// health-checks the release (a release started by the crashed apply runs under its set-aside
// name, unverified), and the next apply verifies it before it calls it live.
func TestMemCrashWhileResuming(t *testing.T) {
	forCutovers(t, func(t *testing.T, r *memRig) {
		p := r.config("v1", nil)
		r.apply(p)
		stopLive := func() {
			obs, _ := plan.Observe(t.Context(), r.eng, projectOnly(r.project))
			r.eng.StopContainer(t.Context(), obs.Services["app"].Live.ID, 0)
		}
		stopLive()
		points := plan.KillPoints(p, r.plan(p))
		for _, point := range plan.ResumePoints {
			if !slices.Contains(points, point) {
				t.Errorf("the kill points of a resume %q lack %s", points, point)
			}
		}
		r.steps()
		for _, point := range plan.ResumePoints {
			if !r.crashAt(p, point) {
				t.Fatalf("never reached %s", point)
			}
			ch := r.plan(p).Change("app")
			if ch.Action != plan.ActionUpdate {
				t.Errorf("the plan after the crash at %s: %s %v, want the live release started or checked", point, ch.Action, ch.Reasons)
			}
			r.steps()
			if out := r.applyAll(p); out.Failed() || !r.serves("v1") {
				t.Fatalf("apply after the crash at %s: %s, serving %q", point, errorsOf(out), r.get("/"))
			}
			if steps := strings.Join(r.steps(), " "); !regexp.MustCompile(`resume:ok .*verify:ok`).MatchString(steps) {
				t.Errorf("the apply after the crash at %s did not verify the release again: %s", point, steps)
			}
			assertConverged(t, r, p, point)
			stopLive()
		}
	})
}

// A live release started by an apply killed before it verified it runs under its set-aside
// name; the next apply deploys a new release: it health-checks the old one first (and gives it
// its name back), so that nothing counts on a release no one checked, then deploys.
func TestMemCrashWhileResumingThenDeploy(t *testing.T) {
	forCutovers(t, func(t *testing.T, r *memRig) {
		p := r.config("v1", nil)
		r.apply(p)
		for i, point := range []string{plan.PointResumeStarted, string(plan.StepVerify), plan.PointResumeVerified} {
			obs, _ := plan.Observe(t.Context(), r.eng, projectOnly(r.project))
			r.eng.StopContainer(t.Context(), obs.Services["app"].Live.ID, 0)
			if !r.crashAt(p, point) {
				t.Fatalf("never reached %s", point)
			}
			version := fmt.Sprintf("v%d", i+2)
			next := r.config(version, nil)
			if names := stepNames(r.plan(next)); !regexp.MustCompile(`app:resume .*app:candidate`).MatchString(names) {
				t.Errorf("the plan of %s after the crash at %s does not check the live release first: %s", version, point, names)
			}
			r.steps()
			if out := r.applyAll(next); out.Failed() || !r.serves(version) {
				t.Fatalf("apply of %s after the crash at %s: %s, serving %q", version, point, errorsOf(out), r.get("/"))
			}
			if steps := strings.Join(r.steps(), " "); !regexp.MustCompile(`resume:ok .*verify:ok .*candidate:ok`).MatchString(steps) {
				t.Errorf("the apply after the crash at %s did not verify the live release before the deploy: %s", point, steps)
			}
			assertConverged(t, r, next, point)
			p = next
		}
	})
}

// A release that does not come back healthy, and an apply killed after starting it, before its
// verification ended: the next apply does not call it live. It checks it, finds it failing,
// and brings the release before it back (auto_rollback). The release here is healthy only on
// its first start (APP_MODE=once), which the proxy cutover's candidate was.
func TestMemCrashWhileResumingUnhealthy(t *testing.T) {
	for _, point := range []string{plan.PointResumeAside, plan.PointResumeStarted, string(plan.StepVerify)} {
		t.Run(point, func(t *testing.T) {
			t.Parallel()
			r := newMemRig(t, config.CutoverProxy)
			once := func(s *config.Service) { s.Env["APP_MODE"] = "once" }
			r.apply(r.config("v1", nil))
			p := r.config("v2", once)
			if so := r.apply(p); so.Error != "" || !r.serves("v2") {
				t.Fatalf("deploy of v2: %+v", so)
			}
			obs, _ := plan.Observe(t.Context(), r.eng, projectOnly(r.project))
			r.eng.StopContainer(t.Context(), obs.Services["app"].Live.ID, 0)
			if !r.crashAt(p, point) {
				t.Fatalf("never reached %s", point)
			}
			out := r.applyAll(p)
			so := out.Services[0]
			if !so.RolledBack || so.RolledBackTo != 1 || !strings.Contains(so.Error, "release 2 did not come back healthy") || !r.serves("v1") {
				t.Fatalf("the apply after the crash at %s: %+v, serving %q\n%s", point, so, r.get("/"), strings.Join(r.steps(), " "))
			}
			assertConverged(t, r, r.config("v1", nil), point)
		})
	}
}

// assertConverged fails unless one live release runs, previous ones are within keep_releases,
// nothing is left over and the plan has nothing to do.
func assertConverged(t *testing.T, r *memRig, p *config.Project, point string) {
	t.Helper()
	obs, err := plan.Observe(t.Context(), r.eng, projectOnly(r.project))
	if err != nil {
		t.Fatal(err)
	}
	st := obs.Services["app"]
	if obs.Lock != nil || len(st.Candidates) > 0 || len(st.Others) > 0 || len(st.Previous) > p.Services[0].Deploy.KeepReleases || !st.Live.Running() {
		t.Errorf("after the crash at %s, left over: %s", point, r.state())
	}
	if pl := r.plan(p); pl.HasChanges() || len(pl.Leftovers) > 0 {
		t.Errorf("after the crash at %s and an apply, the plan still has work: %+v %+v", point, pl.Changes[0], pl.Leftovers)
	}
}

func stepNames(pl *plan.Plan) string {
	var names []string
	for _, s := range pl.Steps {
		names = append(names, s.Service+":"+s.Name)
	}
	return strings.Join(names, " ")
}

func errorsOf(out *executor.Outcome) string {
	var list []string
	for _, s := range out.Services {
		list = append(list, fmt.Sprintf("service.%s %s: %q", s.Service, s.Action, s.Error))
	}
	return strings.Join(list, "; ")
}
