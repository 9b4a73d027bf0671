package executor_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor"
	"github.com/deployer-dev/deployer/executor/plan"
)

// A proxy cutover killed after its switch (cutover.switched, cutover.set-aside) leaves the
// candidate serving through the proxy while the old release still runs; killed at the drain, it
// leaves the old release set aside with requests in flight. Plan and status say what the proxy
// serves; the next apply routes back to the old release, lets what the candidate (or the old
// release) has in flight finish before it removes (or stops) it, then deploys: a slow request in
// flight across the apply and a client's requests all along it get their answers.
func TestMemCrashInProxyCutoverServes(t *testing.T) {
	for _, point := range []string{plan.PointCutoverSwitched, plan.PointCutoverSetAside, plan.PointDrain} {
		t.Run(point, func(t *testing.T) {
			t.Parallel()
			r := newMemRig(t, config.CutoverProxy)
			drain := func(s *config.Service) {
				s.Deploy.Drain = 10 * time.Second
				s.Env["APP_AS_SHELL"] = "1" // a stop ends its requests in flight too, as a kill does
			}
			if so := r.apply(r.config("v1", drain)); so.Error != "" {
				t.Fatal(so.Error)
			}
			p := r.config("v2", drain)
			var slow <-chan string
			if point == plan.PointDrain {
				// In flight on release 1 across the switch, the kill and the next apply.
				slow = r.slowGet(t, 3*time.Second)
			}
			if !r.crashAt(p, point) {
				t.Fatalf("never reached %s", point)
			}
			obs, err := plan.Observe(t.Context(), r.eng, projectOnly(r.project))
			if err != nil {
				t.Fatal(err)
			}
			st := obs.Services["app"]
			var cand *executor.Container
			candAddr := ""
			if point != plan.PointDrain {
				if len(st.Candidates) != 1 || !strings.Contains(r.get("/"), "version=v2") {
					t.Fatalf("after the kill at %s: candidates %d, serving %q, want the candidate serving", point, len(st.Candidates), r.get("/"))
				}
				cand = st.Candidates[0]
				ins, err := r.eng.Inspect(t.Context(), cand.ID)
				if err != nil {
					t.Fatal(err)
				}
				candAddr = fmt.Sprintf("%s:%d", ins.IPs[plan.NetworkName(r.project)], r.appPort)
				// What plan and status say: the candidate serves, release 1 does not.
				var detail string
				for _, l := range r.plan(p).Leftovers {
					if l.Kind == plan.LeftoverCandidate {
						detail = l.Detail
					}
				}
				for _, want := range []string{cand.Name, "serves", "routes them back to release 1", "finish"} {
					if !strings.Contains(detail, want) {
						t.Errorf("the plan's leftover %q does not say %q", detail, want)
					}
				}
				status, err := executor.GetStatus(t.Context(), p, r.eng, "127.0.0.1", false)
				if err != nil {
					t.Fatal(err)
				}
				ss := status.Services[0]
				for _, want := range []string{cand.Name, "release 2", "not to release 1"} {
					if !strings.Contains(ss.Serving, want) {
						t.Errorf("the status says it serves %q, which does not say %q", ss.Serving, want)
					}
				}
				// Kept-alive connections from the proxy to the candidate: the next candidate may
				// be given its address, and must not meet them.
				var burst sync.WaitGroup
				for range 8 {
					burst.Add(1)
					go func() { defer burst.Done(); r.get("/?sleep_ms=50") }()
				}
				burst.Wait()
				slow = r.slowGet(t, 1500*time.Millisecond) // in flight on the candidate
			}
			// Requests all along the next apply.
			stopRequests := r.requestsAlong()
			// When the apply removes the candidate, no route leads to it.
			var removedWhileRouted atomic.Pointer[string]
			a := r.applier(p)
			events := a.Events
			a.Events = func(e executor.Event) {
				if cand != nil && e.Type == executor.EventStep && e.Step == string(plan.StepClean) && e.Phase == "start" {
					routes, err := executor.ProxyStatus(context.Background(), r.eng, projectOnly(r.project))
					for _, rt := range routes {
						if err == nil && rt.Backend == candAddr {
							msg := fmt.Sprintf("route %s still leads to the candidate (%s) when the apply removes it", rt.Name, candAddr)
							removedWhileRouted.Store(&msg)
						}
					}
				}
				events(e)
			}
			out, err := a.Apply(context.Background(), r.plan(p))
			sent, bad, firstBad := stopRequests()
			if err != nil || out.Failed() || !r.serves("v2") {
				t.Fatalf("the apply after the kill at %s: %v %s, serving %q\n%s", point, err, errorsOf(out), r.get("/"), strings.Join(r.steps(), " "))
			}
			if msg := removedWhileRouted.Load(); msg != nil {
				t.Error(*msg)
			}
			want := "version=v2"
			if point == plan.PointDrain {
				want = "version=v1"
			}
			if got := <-slow; got != want {
				t.Errorf("the request in flight across the apply after the kill at %s got %q, want %q", point, got, want)
			}
			if sent == 0 {
				t.Errorf("no request was sent during the apply after the kill at %s", point)
			}
			if bad > 0 {
				t.Errorf("%d of %d requests failed during the apply after the kill at %s; the first: %s", bad, sent, point, firstBad)
			}
			t.Logf("%d requests during the apply after the kill at %s, %d failed", sent, point, bad)
			assertConverged(t, r, p, point)
		})
	}
}

// requestsAlong sends GET / to the service, one after another, until stop is called; stop
// waits for the last and says how many were sent, how many failed (an error or a status other
// than 200), and what the first failure was.
func (r *memRig) requestsAlong() (stop func() (sent, bad int64, first string)) {
	var nSent, nBad atomic.Int64
	var firstBad atomic.Pointer[string]
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c := &http.Client{Timeout: 10 * time.Second}
		for {
			select {
			case <-done:
				return
			default:
			}
			nSent.Add(1)
			resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/", r.port))
			msg := ""
			if err != nil {
				msg = err.Error()
			} else {
				if resp.StatusCode != http.StatusOK {
					msg = resp.Status
				}
				resp.Body.Close()
			}
			if msg != "" {
				nBad.Add(1)
				firstBad.CompareAndSwap(nil, &msg)
			}
		}
	}()
	return func() (int64, int64, string) {
		close(done)
		wg.Wait()
		first := ""
		if p := firstBad.Load(); p != nil {
			first = *p
		}
		return nSent.Load(), nBad.Load(), first
	}
}

// slowGet sends GET /?sleep_ms to the service and waits until the proxy has it in flight; the
// channel gets its body, or its error.
func (r *memRig) slowGet(t *testing.T, d time.Duration) <-chan string {
	t.Helper()
	out := make(chan string, 1)
	go func() { out <- r.get(fmt.Sprintf("/?sleep_ms=%d", d.Milliseconds())) }()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		routes, err := executor.ProxyStatus(context.Background(), r.eng, projectOnly(r.project))
		for _, rt := range routes {
			if err == nil && !strings.HasSuffix(rt.Name, "@candidate") && rt.InFlight > 0 {
				return out
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the slow request is not in flight on the proxy: %v %+v", err, routes)
		}
	}
}

// A rollback right after a proxy cutover was killed after its switch (the candidate serving, a
// plausible first reaction to a crashed deploy) routes back to the live release before the
// candidate goes, and lets the candidate's requests in flight finish: no request fails, and
// the rollback lands on the release before the live one.
func TestMemRollbackAfterProxySwitchCrash(t *testing.T) {
	r := newMemRig(t, config.CutoverProxy)
	drain := func(s *config.Service) {
		s.Deploy.Drain = 10 * time.Second
		s.Env["APP_AS_SHELL"] = "1" // a stop ends its requests in flight too, as a kill does
	}
	for _, v := range []string{"v1", "v2"} {
		if so := r.apply(r.config(v, drain)); so.Error != "" {
			t.Fatal(so.Error)
		}
	}
	p := r.config("v3", drain)
	if !r.crashAt(p, plan.PointCutoverSwitched) || !r.serves("v3") {
		t.Fatalf("after the kill: serving %q, want the candidate (v3)", r.get("/"))
	}
	slow := r.slowGet(t, 1500*time.Millisecond) // in flight on the candidate
	stopRequests := r.requestsAlong()
	so, err := r.applier(r.config("v2", drain)).Rollback(context.Background(), "app", 0)
	sent, bad, firstBad := stopRequests()
	if err != nil || so == nil || so.Error != "" || !r.serves("v1") {
		t.Fatalf("rollback after the kill: %v %+v, serving %q", err, so, r.get("/"))
	}
	if got := <-slow; got != "version=v3" {
		t.Errorf("the request in flight on the candidate got %q", got)
	}
	if bad > 0 || sent == 0 {
		t.Errorf("%d of %d requests failed during the rollback; the first: %s", bad, sent, firstBad)
	}
	obs, err := plan.Observe(t.Context(), r.eng, projectOnly(r.project))
	if err != nil {
		t.Fatal(err)
	}
	if st := obs.Services["app"]; len(st.Candidates) != 0 {
		t.Errorf("%d candidates left after the rollback", len(st.Candidates))
	}
	t.Logf("%d requests during the rollback, %d failed", sent, bad)
}
