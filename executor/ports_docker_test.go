package executor_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor"
	"github.com/deployer-dev/deployer/executor/docker/dockertest"
	"github.com/deployer-dev/deployer/executor/plan"
)

// portFree reports whether nothing listens on 127.0.0.1:port.
func portFree(port int) bool {
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// With a fixed candidate port, as the seed has (green on 8081), the proxy cutover works again
// and again, and a rollback too: during a deploy the port shows the candidate, once it ends the
// port is free, and no live release publishes it.
func TestProxyFixedCandidatePort(t *testing.T) {
	r := proxyRig(t)
	cand := dockertest.FreePort(t)
	fixed := proxyMode(func(s *config.Service) { s.Ports[0].Candidate = cand })
	seen := map[string]string{}
	var mu sync.Mutex
	watch := func(p *config.Project, version string) *executor.ServiceOutcome {
		pl, err := executor.MakePlan(context.Background(), p, r.eng, plan.PlanOptions{})
		if err != nil {
			t.Fatal(err)
		}
		a := r.applier(p)
		a.Events = func(e executor.Event) {
			if e.Type == executor.EventStep && e.Step == string(plan.StepHealth) && e.Phase == "end" {
				mu.Lock()
				seen[version] = getPath(cand, "/")
				mu.Unlock()
			}
		}
		out, err := a.Apply(context.Background(), pl)
		if err != nil {
			t.Fatal(err)
		}
		return out.Services[0]
	}
	for i, v := range []string{"v1", "v2", "v3"} {
		if so := watch(r.config(v, fixed), v); so.Error != "" || so.Release != i+1 {
			t.Fatalf("apply %s: %+v", v, so)
		}
		if got := r.get("/"); got != "version="+v {
			t.Fatalf("serving %q after %s", got, v)
		}
		if seen[v] != "version="+v {
			t.Errorf("during the deploy of %s, 127.0.0.1:%d answered %q", v, cand, seen[v])
		}
		if !portFree(cand) {
			t.Errorf("after the deploy of %s the candidate port %d is not free", v, cand)
		}
		r.noPublished(cand)
		// deployer releases says what each release is now: the live one was created as the
		// candidate, and is live.
		obs, _ := plan.Observe(context.Background(), r.eng, projectOnly(r.project))
		if rel := executor.Releases(obs, "app"); rel[0].Release != i+1 || rel[0].Role != plan.RoleLive || (i > 0 && rel[1].Role != plan.RolePrevious) {
			t.Errorf("releases after %s: %+v", v, rel)
		}
	}
	so, err := r.applier(r.config("v3", fixed)).Rollback(context.Background(), "app", 0)
	if err != nil || so.Error != "" || r.get("/") != "version=v2" {
		t.Fatalf("rollback: %+v %v, serving %q", so, err, r.get("/"))
	}
	if !portFree(cand) {
		t.Error("after the rollback the candidate port is not free")
	}
	if so := watch(r.config("v4", fixed), "v4"); so.Error != "" || r.get("/") != "version=v4" {
		t.Fatalf("deploy after the rollback: %+v", so)
	}
}

// noPublished fails the test when a container of the project publishes the port.
func (r *rig) noPublished(port int) {
	r.t.Helper()
	all, err := r.eng.AllContainers(context.Background())
	if err != nil {
		r.t.Fatal(err)
	}
	for _, c := range all {
		for _, p := range c.Published {
			if p.HostPort == port && c.Labels[plan.LabelProject] == r.project {
				r.t.Errorf("%s (%s) publishes port %d", c.Name, c.Labels[plan.LabelRole], port)
			}
		}
	}
}

// Two projects on one host port: the second is refused before it changes anything, naming the
// first, and every request still reaches the first project's service.
func TestPortBelongsToOneProject(t *testing.T) {
	first := proxyRig(t)
	if so := first.apply(first.config("first", proxyMode(nil))); so.Error != "" {
		t.Fatal(so.Error)
	}
	second := proxyRig(t)
	second.port = first.port
	p := second.config("second", proxyMode(nil))
	_, err := executor.MakePlan(context.Background(), p, second.eng, plan.PlanOptions{})
	want := fmt.Sprintf("host port %d of service.app is taken: project %q's service.app", first.port, first.project)
	if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "routes it through its proxy") {
		t.Fatalf("plan of the second project: %v", err)
	}
	// A saved plan made before the first project took the port is refused by apply all the same.
	empty := &plan.Plan{Changes: []*plan.Change{{Service: "app", Action: plan.ActionCreate, NextRelease: 1}}, Steps: []*plan.Step{{Name: "lock"}}}
	if _, err := second.applier(p).Apply(context.Background(), empty); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("apply of the second project: %v", err)
	}
	if got := second.state(); got != "" {
		t.Errorf("the second project made containers: %s", got)
	}
	for i := 0; i < 30; i++ {
		if got := first.get("/"); got != "version=first" {
			t.Fatalf("request %d reached %q", i, got)
		}
	}
	// A plain container publishing the port is named too.
	third := newRig(t)
	if so := third.apply(third.config("plain", nil)); so.Error != "" {
		t.Fatal(so.Error)
	}
	fourth := proxyRig(t)
	fourth.port = third.port
	_, err = executor.MakePlan(context.Background(), fourth.config("x", proxyMode(nil)), fourth.eng, plan.PlanOptions{})
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("project %q's service.app (container %s-app, release 1) publishes it", third.project, third.project)) {
		t.Errorf("port published by another container: %v", err)
	}
}
