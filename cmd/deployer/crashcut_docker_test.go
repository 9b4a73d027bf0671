package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/deployer-dev/deployer/executor"
	"github.com/deployer-dev/deployer/executor/plan"
)

// The deployer SIGKILLed in a proxy cutover after the switch (the proxy routes to the candidate,
// the old release still runs, under its live name or set aside), on the real engine: status and
// plan say that the proxy serves the candidate, not the live release; the next apply, with
// clients sending requests all along and one slow request in flight on the candidate, fails none
// of them. Before the fix the candidate was removed with its requests in flight, and the proxy
// kept its dead kept-alive connections for the next candidate, which gets the same address: a
// new user's acceptance run saw one 502 in 5 of 24 such kills.
func TestCrashAfterProxySwitch(t *testing.T) {
	r := newCLIRig(t)
	r.useProxy()
	cfg, _ := os.ReadFile(filepath.Join(r.dir, "deployer.hcl"))
	os.WriteFile(filepath.Join(r.dir, "deployer.hcl"), []byte(strings.Replace(string(cfg), `drain   = "1s"`, `drain   = "20s"`, 1)), 0o644)
	if out, code := r.run(nil, "apply", "-auto-approve"); code != 0 {
		t.Fatalf("first deploy: %d\n%s", code, out)
	}
	for i, point := range []string{plan.PointCutoverSwitched, plan.PointCutoverSetAside} {
		version := fmt.Sprintf("v%d", i+2)
		// Each kill leaves a candidate whose number the next apply gives again: the live
		// release is 1, then 3.
		live, cand := fmt.Sprintf("release %d", 2*i+1), 2*i+2
		out, code := r.run([]string{"DEPLOYER_TEST_KILL_AT=" + point}, "apply", "-auto-approve", "-no-color", "-var", "version="+version)
		if code != -int(syscall.SIGKILL) {
			t.Fatalf("the deployer was not killed at %s (exit %d):\n%s", point, code, out)
		}
		if got := r.get("/"); got != "version="+version {
			t.Fatalf("after the kill at %s the proxy serves %q, want the candidate's %s", point, got, version)
		}
		status, code := r.run(nil, "status", "-no-color")
		if code != 0 || !strings.Contains(status, ", not serving") || !strings.Contains(status, fmt.Sprintf("serving   candidate %s-app-green (release %d) of an interrupted cutover", r.project, cand)) || !strings.Contains(status, "not to "+live) {
			t.Errorf("the status after the kill at %s does not say that the candidate serves: %d\n%s", point, code, status)
		}
		pl, code := r.run(nil, "plan", "-no-color", "-var", "version="+version)
		if code != 0 || !strings.Contains(pl, "serves: an interrupted cutover left the proxy routing the service's requests to it") || !strings.Contains(pl, "routes them back to "+live) {
			t.Errorf("the plan after the kill at %s does not say that the candidate serves: %d\n%s", point, code, pl)
		}

		// Kept-alive connections from the proxy to the candidate, and a slow request on it.
		var burst sync.WaitGroup
		for range 16 {
			burst.Add(1)
			go func() { defer burst.Done(); r.get("/?sleep_ms=100") }()
		}
		burst.Wait()
		slow := make(chan string, 1)
		go func() { slow <- r.get("/?sleep_ms=3000") }()
		waitInFlight(t, r)

		load := sendLoad(r, 4)
		start := time.Now()
		out, code = r.run(nil, "apply", "-auto-approve", "-no-color", "-var", "version="+version)
		sent, failures := load.end()
		t.Logf("apply after the kill at %s in %s: %d requests, %d failed", point, time.Since(start).Round(time.Millisecond), sent, len(failures))
		if code != 0 || r.get("/") != "version="+version {
			t.Fatalf("the apply after the kill at %s: exit %d, serving %q\n%s\ncontainers: %s", point, code, r.get("/"), out, r.containers())
		}
		if len(failures) > 0 || sent == 0 {
			t.Errorf("%d of %d requests failed during the apply after the kill at %s: %s\napply:\n%s", len(failures), sent, point, strings.Join(failures[:min(len(failures), 5)], "; "), out)
		}
		if got := <-slow; got != "version="+version {
			t.Errorf("the request in flight on the candidate across the apply got %q, want version=%s\napply:\n%s", got, version, out)
		}
		if out, code := r.run(nil, "plan", "-detailed-exitcode", "-var", "version="+version); code != 0 {
			t.Errorf("plan after converging: exit %d\n%s", code, out)
		}
	}
}

// waitInFlight waits until the proxy has a request of the service in flight.
func waitInFlight(t *testing.T, r *cliRig) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		routes, err := executor.ProxyStatus(context.Background(), r.eng, projectOnly(r.project))
		for _, rt := range routes {
			if err == nil && !strings.HasSuffix(rt.Name, "@candidate") && rt.InFlight > 0 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no request in flight on the proxy: %v %+v", err, routes)
		}
	}
}

// loadCount is clients sending GET / to the service's host port in a loop, each with its own
// kept-alive connection, until end.
type loadCount struct {
	mu       sync.Mutex
	sent     int
	failures []string
	stop     chan struct{}
	wg       sync.WaitGroup
}

func sendLoad(r *cliRig, clients int) *loadCount {
	l := &loadCount{stop: make(chan struct{})}
	for range clients {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			c := &http.Client{Timeout: 10 * time.Second}
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				msg := ""
				resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/", r.port))
				if err != nil {
					msg = err.Error()
				} else {
					b := make([]byte, 128)
					n, _ := resp.Body.Read(b)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						msg = resp.Status + ": " + strings.TrimSpace(string(b[:n]))
					}
				}
				l.mu.Lock()
				l.sent++
				if msg != "" {
					l.failures = append(l.failures, time.Now().Format("15:04:05.000")+" "+msg)
				}
				l.mu.Unlock()
			}
		}()
	}
	return l
}

func (l *loadCount) end() (int, []string) {
	close(l.stop)
	l.wg.Wait()
	return l.sent, l.failures
}
