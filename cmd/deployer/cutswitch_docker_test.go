package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// trafficCount GETs / on the service's host port in a loop until stop, counting the answers by
// body and the failures.
type trafficCount struct {
	mu     sync.Mutex
	bodies map[string]int
	failed int
	stop   chan struct{}
	done   chan struct{}
}

func countTraffic(r *cliRig) *trafficCount {
	tc := &trafficCount{bodies: map[string]int{}, stop: make(chan struct{}), done: make(chan struct{})}
	c := &http.Client{Timeout: 2 * time.Second}
	go func() {
		defer close(tc.done)
		for {
			select {
			case <-tc.stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			body, ok := "", false
			if resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/", r.port)); err == nil {
				b := make([]byte, 64)
				n, _ := resp.Body.Read(b)
				resp.Body.Close()
				body, ok = strings.TrimSpace(string(b[:n])), resp.StatusCode == http.StatusOK
			}
			tc.mu.Lock()
			if ok {
				tc.bodies[body]++
			} else {
				tc.failed++
			}
			tc.mu.Unlock()
		}
	}()
	return tc
}

func (tc *trafficCount) end() (map[string]int, int) {
	close(tc.stop)
	<-tc.done
	return tc.bodies, tc.failed
}

// A service deployed with the restart cutover switched to the proxy cutover, and back, on the
// real engine with requests in a loop: each switch is one restart's gap (counted, not zero),
// the service serves before and after, the new release's answer is served, and the data volume
// keeps its content. Before the fix, the switch to the proxy failed at its proxy step: the
// proxy could not bind the port the live release published itself.
func TestCutoverSwitch(t *testing.T) {
	r := newCLIRig(t)
	cfg, _ := os.ReadFile(filepath.Join(r.dir, "deployer.hcl"))
	s := strings.Replace(string(cfg), "  deploy {", "  deploy {\n    cutover = var.cutover\n    drain   = \"1s\"", 1)
	s = strings.Replace(s, "variable \"mode\"", "variable \"cutover\" { default = \"restart\" }\nvariable \"mode\"", 1)
	os.WriteFile(filepath.Join(r.dir, "deployer.hcl"), []byte(s), 0o644)

	if out, code := r.run(nil, "apply", "-auto-approve"); code != 0 || r.get("/") != "version=v1" {
		t.Fatalf("the first deploy, restart cutover: %d\n%s", code, out)
	}
	plan, code := r.run(nil, "plan", "-no-color", "-var", "cutover=proxy", "-var", "version=v2")
	if code != 0 || !strings.Contains(plan, "publishes :"+fmt.Sprint(r.port)+" itself (restart cutover)") || !strings.Contains(plan, "window without service") || strings.Contains(plan, "proxy is not running") {
		t.Errorf("the plan of the switch to the proxy does not say what happens: %d\n%s", code, plan)
	}
	for i, sw := range []struct{ cutover, version string }{{"proxy", "v2"}, {"restart", "v3"}} {
		before := r.get("/")
		tc := countTraffic(r)
		start := time.Now()
		out, code := r.run(nil, "apply", "-auto-approve", "-no-color", "-var", "cutover="+sw.cutover, "-var", "version="+sw.version)
		took := time.Since(start)
		bodies, failed := tc.end()
		t.Logf("switch to %s in %s: %v answered, %d failed (the switch's gap)", sw.cutover, took.Round(time.Millisecond), bodies, failed)
		if code != 0 {
			t.Fatalf("the switch to the %s cutover: %d\n%s\ncontainers: %s", sw.cutover, code, out, r.containers())
		}
		if want := "version=" + sw.version; r.get("/") != want || bodies[want] == 0 || bodies[before] == 0 {
			t.Errorf("the switch to %s: serving %q; during it %v", sw.cutover, r.get("/"), bodies)
		}
		for j := 1; j <= i+2; j++ {
			if h := r.get("/history") + "\n"; !strings.Contains(h, fmt.Sprintf("started v%d\n", j)) {
				t.Errorf("after the switch to %s, the data volume lost the start of v%d: %q", sw.cutover, j, h)
			}
		}
		if out, code := r.run(nil, "plan", "-detailed-exitcode", "-var", "cutover="+sw.cutover, "-var", "version="+sw.version); code != 0 {
			t.Errorf("plan after the switch to %s: %d\n%s", sw.cutover, code, out)
		}
	}
}
