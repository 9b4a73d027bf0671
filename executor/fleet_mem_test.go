package executor_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor"
	"github.com/deployer-dev/deployer/executor/engine/memengine"
	"github.com/deployer-dev/deployer/executor/plan"
)

// fleetRig is one project on three in-memory engines, web1 to web3, each a host of its own: its
// published ports and proxy on a loopback address of its own (127.0.0.2 to .4), the same host
// port on each.
type fleetRig struct {
	t       testing.TB
	names   []string
	engines map[string]*memengine.Engine
	project string
	port    int
	appPort int
	mu      sync.Mutex
	events  []executor.Event
}

func newFleetRig(t testing.TB, cutover config.Cutover) *fleetRig {
	name := strings.ToLower(regexp.MustCompile(`[^A-Za-z0-9]+`).ReplaceAllString(t.Name(), "-"))
	r := &fleetRig{t: t, engines: map[string]*memengine.Engine{}, project: "fleet-" + strings.Trim(name, "-"), port: freePort(t), appPort: freePort(t)}
	for i := 1; i <= 3; i++ {
		eng, err := memengine.New(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(eng.Close)
		eng.HostIP = fmt.Sprintf("127.0.0.%d", i+1)
		eng.Image(memProxy, memengine.Proxy, nil)
		n := fmt.Sprintf("web%d", i)
		r.names = append(r.names, n)
		r.engines[n] = eng
	}
	return r
}

// config is the app at version v on the three engines (proxy cutover, one at a time).
func (r *fleetRig) config(v string, mod func(s *config.Service), notices ...*config.Notify) *config.Project {
	s := config.NewService("app")
	s.Image = memApp
	s.ContainerName = r.project + "-app"
	s.Env = map[string]string{"APP_VERSION": v, "APP_PORT": strconv.Itoa(r.appPort)}
	port := config.NewPort()
	port.Container, port.Host = r.appPort, r.port
	s.Ports = []*config.Port{port}
	h := config.NewHealthCheck()
	h.Path, h.Interval, h.Healthy, h.Deadline, h.Timeout = "/health", 20*time.Millisecond, 2, 2*time.Second, time.Second
	s.HealthCheck = h
	s.Deploy.StopTimeout, s.Deploy.Drain, s.Deploy.Cutover = time.Second, 100*time.Millisecond, config.CutoverProxy
	s.Engines = r.names
	if mod != nil {
		mod(s)
	}
	p := &config.Project{Name: r.project, Dir: r.t.TempDir(), Services: []*config.Service{s}, Sensitive: map[string]bool{},
		Engines: map[string]*config.Engine{}, Notifies: notices}
	for _, n := range r.names {
		p.Engines[n] = &config.Engine{Name: n, Host: "unix:///mem/" + n}
	}
	p.Docker.ProxyImage = memProxy
	config.Defaults(p)
	return p
}

func (r *fleetRig) fleet(p *config.Project) *executor.Fleet {
	f := &executor.Fleet{Base: executor.Applier{Project: p, Holder: "test " + r.t.Name(), TempDir: r.t.TempDir(),
		Events: func(e executor.Event) { r.mu.Lock(); r.events = append(r.events, e); r.mu.Unlock() }},
		Engines: map[string]executor.Runtime{}, ProbeHosts: map[string]string{}}
	for n, eng := range r.engines {
		f.Engines[n], f.ProbeHosts[n] = eng, eng.HostIP
	}
	return f
}

func (r *fleetRig) plan(p *config.Project) *plan.FleetPlan {
	r.t.Helper()
	fp, err := r.fleet(p).Plan(context.Background(), plan.PlanOptions{})
	if err != nil {
		r.t.Fatal(err)
	}
	return fp
}

// apply plans and applies p; it returns the outcomes by engine and apply's error.
func (r *fleetRig) apply(p *config.Project) (map[string]*executor.ServiceOutcome, error) {
	r.t.Helper()
	out, err := r.fleet(p).Apply(context.Background(), r.plan(p))
	by := map[string]*executor.ServiceOutcome{}
	for _, so := range out.Services {
		by[so.Engine] = so
	}
	return by, err
}

// serves is what each engine's host port answers, "web1=version=v1 ...".
func (r *fleetRig) serves() string {
	var parts []string
	for _, n := range r.names {
		c := &http.Client{Timeout: 5 * time.Second}
		body := "error"
		if resp, err := c.Get(fmt.Sprintf("http://%s:%d/", r.engines[n].HostIP, r.port)); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body = strings.TrimSpace(string(b))
		}
		parts = append(parts, n+"="+body)
	}
	return strings.Join(parts, " ")
}

// cutovers lists the engines in the order their cutover steps ended, and forgets the events.
func (r *fleetRig) cutovers() []string { return cutoverOrder(&r.mu, &r.events) }

// cutoverOrder lists the engines in the order their cutover steps ended in the events, and
// empties them.
func cutoverOrder(mu *sync.Mutex, events *[]executor.Event) []string {
	mu.Lock()
	defer mu.Unlock()
	var out []string
	for _, e := range *events {
		if e.Type == executor.EventStep && e.Step == string(plan.StepCutover) && e.Phase == "end" && e.Outcome == executor.OutcomeOK {
			out = append(out, e.Engine)
		}
	}
	*events = nil
	return out
}

func want(t *testing.T, what, got, wantStr string) {
	t.Helper()
	if got != wantStr {
		t.Errorf("%s: got %q, want %q", what, got, wantStr)
	}
}

// A service on three engines: created on all, then replaced one engine at a time, in the
// order the service lists them, with one release number everywhere; the next plan is empty.
func TestFleetRollout(t *testing.T) {
	r := newFleetRig(t, config.CutoverProxy)
	for _, n := range r.names {
		r.engines[n].Image(memApp, memengine.App, map[string]string{"PATH": "/bin"})
	}
	by, err := r.apply(r.config("v1", nil))
	if err != nil || len(by) != 3 {
		t.Fatalf("first apply: %v %+v", err, by)
	}
	want(t, "after v1", r.serves(), "web1=version=v1 web2=version=v1 web3=version=v1")
	r.cutovers()
	by, err = r.apply(r.config("v2", func(s *config.Service) { s.Engines = []string{"web2", "web1", "web3"} }))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range r.names {
		if so := by[n]; so == nil || so.Error != "" || so.Release != 2 {
			t.Errorf("engine %s: %+v", n, so)
		}
	}
	want(t, "after v2", r.serves(), "web1=version=v2 web2=version=v2 web3=version=v2")
	if got := r.cutovers(); !slices.Equal(got, []string{"web2", "web1", "web3"}) {
		t.Errorf("the engines switched in the order %v, want the service's order web2, web1, web3", got)
	}
	if fp := r.plan(r.config("v2", nil)); fp.HasChanges() {
		t.Errorf("a second plan has changes: %+v", fp)
	}
}

// all or nothing: a candidate failing on web3 switches no engine; a new release failing its
// verification on web3, in the last batch, brings web1 and web2 back to the release before.
func TestFleetAllOrNothing(t *testing.T) {
	r := newFleetRig(t, config.CutoverProxy)
	for _, n := range r.names {
		r.engines[n].Image(memApp, memengine.App, map[string]string{"PATH": "/bin"})
	}
	if _, err := r.apply(r.config("v1", nil)); err != nil {
		t.Fatal(err)
	}
	t.Run("candidate-fails-on-web3", func(t *testing.T) {
		r.engines["web3"].Fail("start", r.project+"-app-green", 1, fmt.Errorf("no space left on device"))
		by, _ := r.apply(r.config("v2", nil))
		want(t, "after the failed candidate", r.serves(), "web1=version=v1 web2=version=v1 web3=version=v1")
		if got := r.cutovers(); len(got) != 0 {
			t.Errorf("engines switched: %v", got)
		}
		for _, n := range []string{"web1", "web2"} {
			if so := by[n]; so == nil || !strings.Contains(so.Error, "not switched, all or nothing") || !strings.Contains(so.Error, "on engine web3") || so.RolledBack {
				t.Errorf("engine %s: %+v", n, so)
			}
		}
		if so := by["web3"]; so == nil || !strings.Contains(so.Error, "no space left on device") {
			t.Errorf("engine web3: %+v", so)
		}
	})
	t.Run("verify-fails-on-web3", func(t *testing.T) {
		// web3's image of the release dies on its third request: the candidate passes its two
		// health checks, the new live release fails its verification.
		for _, n := range r.names {
			env := map[string]string{"PATH": "/bin"}
			if n == "web3" {
				env["APP_HEALTH_FAIL_AFTER"] = "2"
			}
			r.engines[n].Image("app:3", memengine.App, env)
		}
		sink, got := noticeSink(t)
		by, err := r.apply(r.config("v3", func(s *config.Service) { s.Image = "app:3" }, &config.Notify{Kind: "webhook", Name: "ops", URL: sink, On: []string{"rolled_back"}}))
		if err != nil {
			t.Fatal(err)
		}
		want(t, "after the failed verification", r.serves(), "web1=version=v1 web2=version=v1 web3=version=v1")
		if got := r.cutovers(); !slices.Equal(got, []string{"web1", "web2", "web3"}) {
			t.Errorf("cutovers %v, want web1, web2, web3", got)
		}
		for _, n := range r.names {
			so := by[n]
			if so == nil || !so.RolledBack || so.Release != 1 {
				t.Errorf("engine %s: %+v", n, so)
				continue
			}
			if n != "web3" && !strings.Contains(so.Error, "went back with the other engines") {
				t.Errorf("engine %s: %s", n, so.Error)
			}
		}
		if fp := r.plan(r.config("v1", nil)); fp.HasChanges() {
			t.Errorf("back on v1 everywhere, yet the plan of v1 has changes")
		}
		// Each engine's notice names it.
		var engines []string
		for _, n := range got() {
			engines = append(engines, n.Engine)
		}
		slices.Sort(engines)
		if !slices.Equal(engines, []string{"web1", "web2", "web3"}) {
			t.Errorf("rolled_back notices from the engines %v", engines)
		}
	})
}

// rollout.wait: a batch is watched before the next switches; web1's release failing while
// watched sends web1 back, and web2 and web3 never switch.
func TestFleetWatch(t *testing.T) {
	r := newFleetRig(t, config.CutoverProxy)
	for _, n := range r.names {
		r.engines[n].Image(memApp, memengine.App, map[string]string{"PATH": "/bin"})
		env := map[string]string{"PATH": "/bin"}
		if n == "web1" {
			env["APP_HEALTH_FAIL_AFTER"] = "4" // the candidate's 2 checks and verify's 2 pass
		}
		r.engines[n].Image("app:2", memengine.App, env)
	}
	if _, err := r.apply(r.config("v1", nil)); err != nil {
		t.Fatal(err)
	}
	r.cutovers()
	by, err := r.apply(r.config("v2", func(s *config.Service) { s.Image, s.Rollout.Wait = "app:2", 500*time.Millisecond }))
	if err != nil {
		t.Fatal(err)
	}
	want(t, "after the watch failed", r.serves(), "web1=version=v1 web2=version=v1 web3=version=v1")
	if got := r.watches(); !slices.Equal(got, []string{"web1 failed"}) {
		t.Errorf("watch steps %v, want web1's, failed", got)
	}
	if got := r.cutovers(); !slices.Equal(got, []string{"web1"}) {
		t.Errorf("cutovers %v, want web1 only", got)
	}
	if so := by["web1"]; so == nil || !so.RolledBack || !strings.Contains(so.Error, "while watched for 500ms") {
		t.Errorf("web1: %+v", so)
	}
	for _, n := range []string{"web2", "web3"} {
		if so := by[n]; so == nil || so.RolledBack || !strings.Contains(so.Error, "not switched, all or nothing") {
			t.Errorf("%s: %+v", n, so)
		}
	}
	// A watch that passes: each engine watched 1.5s (checked twice) as one step before the
	// next engine switches; the last too, before the rollout ends.
	if _, err := r.apply(r.config("v3", func(s *config.Service) { s.Rollout.Wait = 1500 * time.Millisecond })); err != nil {
		t.Fatal(err)
	}
	want(t, "after a watched rollout", r.serves(), "web1=version=v3 web2=version=v3 web3=version=v3")
	if got := r.watches(); !slices.Equal(got, []string{"web1 ok", "web2 ok", "web3 ok"}) {
		t.Errorf("watch steps %v, want one on each engine, in order", got)
	}
	if got := r.cutovers(); !slices.Equal(got, []string{"web1", "web2", "web3"}) {
		t.Errorf("cutovers %v", got)
	}
}

// watches lists the engines whose watch steps ended, in order, with their outcomes; every
// verify step that ends is one of the engine's: its verification, its watch, or a switch back.
func (r *fleetRig) watches() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	verifies := map[string]int{}
	for _, e := range r.events {
		if e.Type != executor.EventStep || e.Step != string(plan.StepVerify) || e.Phase != "end" {
			continue
		}
		verifies[e.Engine]++
		if strings.HasPrefix(e.Detail, "watch release") || strings.Contains(e.Detail, "while watched") {
			out = append(out, e.Engine+" "+string(e.Outcome))
		}
	}
	for eng, n := range verifies {
		if n > 3 {
			r.t.Errorf("%s: %d verify steps", eng, n)
		}
	}
	return out
}

// A rollback of a service on three engines: refused before anything changes when the engines
// disagree on the target; all or nothing when a candidate fails on one; else every engine on
// the release before.
func TestFleetRollback(t *testing.T) {
	r := newFleetRig(t, config.CutoverProxy)
	for _, n := range r.names {
		r.engines[n].Image(memApp, memengine.App, map[string]string{"PATH": "/bin"})
	}
	for _, v := range []string{"v1", "v2"} {
		if _, err := r.apply(r.config(v, nil)); err != nil {
			t.Fatal(err)
		}
	}
	rollback := func(to int) (map[string]*executor.ServiceOutcome, error) {
		out, err := r.fleet(r.config("v2", nil)).Rollback(context.Background(), "app", to)
		by := map[string]*executor.ServiceOutcome{}
		for _, so := range out.Services {
			by[so.Engine] = so
		}
		return by, err
	}
	if _, err := rollback(7); err == nil || !strings.Contains(err.Error(), "nothing was changed") {
		t.Errorf("rollback to a release no engine keeps: %v", err)
	}
	r.cutovers()
	r.engines["web3"].Fail("start", r.project+"-app-green", 1, fmt.Errorf("no space left on device"))
	by, _ := rollback(0)
	want(t, "after the failed rollback", r.serves(), "web1=version=v2 web2=version=v2 web3=version=v2")
	if got := r.cutovers(); len(got) != 0 {
		t.Errorf("engines switched in a rollback whose candidate failed on web3: %v", got)
	}
	if so := by["web1"]; so == nil || !strings.Contains(so.Error, "not switched, all or nothing") {
		t.Errorf("web1: %+v", so)
	}
	by, err := rollback(0)
	if err != nil {
		t.Fatal(err)
	}
	want(t, "after the rollback", r.serves(), "web1=version=v1 web2=version=v1 web3=version=v1")
	for _, n := range r.names {
		if so := by[n]; so == nil || so.Error != "" || so.Release != 1 {
			t.Errorf("%s: %+v", n, so)
		}
	}
}

// An engine that lacks the image gets it from one that has it, through the engine API; an
// engine that cannot be read is named in the plan, and apply changes nothing.
func TestFleetImageAndUnreachable(t *testing.T) {
	r := newFleetRig(t, config.CutoverProxy)
	r.engines["web1"].Image(memApp, memengine.App, map[string]string{"PATH": "/bin"})
	fp := r.plan(r.config("v1", nil))
	if len(fp.Rollouts) != 1 || fp.Rollouts[0].ImageFrom != "web1" || len(fp.Rollouts[0].Batches) != 3 {
		t.Fatalf("rollouts: %+v", fp.Rollouts)
	}
	by, err := r.apply(r.config("v1", nil))
	if err != nil {
		t.Fatal(err)
	}
	want(t, "sent image", r.serves(), "web1=version=v1 web2=version=v1 web3=version=v1")
	if by["web3"] == nil || by["web3"].ImageID != by["web1"].ImageID {
		t.Errorf("image IDs: %+v %+v", by["web1"], by["web3"])
	}
	r.engines["web2"].Freeze()
	defer r.engines["web2"].Thaw()
	fp = r.plan(r.config("v2", nil))
	if bad := fp.Unreachable(); len(bad) != 1 || !strings.Contains(bad[0], "engine web2") {
		t.Errorf("unreachable: %v", bad)
	}
	if _, err := r.fleet(r.config("v2", nil)).Apply(context.Background(), fp); err == nil || !strings.Contains(err.Error(), "nothing was changed") {
		t.Errorf("apply with an engine unreachable: %v", err)
	}
	want(t, "after the refused apply", r.serves(), "web1=version=v1 web2=version=v1 web3=version=v1")
}

// A service taken off an engine: with the engine undeclared, plan names it from what the
// other engines' releases recorded, and nothing changes there; with the engine declared but
// not in the service's list, apply removes the service there.
func TestFleetEngineRemoved(t *testing.T) {
	r := newFleetRig(t, config.CutoverProxy)
	for _, n := range r.names {
		r.engines[n].Image(memApp, memengine.App, map[string]string{"PATH": "/bin"})
	}
	if _, err := r.apply(r.config("v1", nil)); err != nil {
		t.Fatal(err)
	}
	undeclared := r.config("v1", func(s *config.Service) { s.Engines = []string{"web1", "web2"} })
	delete(undeclared.Engines, "web3")
	fp := r.plan(undeclared)
	if len(fp.Undeclared) != 1 || !strings.Contains(fp.Undeclared[0], "engine web3 (unix:///mem/web3)") || fp.HasChanges() {
		t.Errorf("plan with web3 undeclared: %q, changes %v", fp.Undeclared, fp.HasChanges())
	}
	var text strings.Builder
	fp.WriteText(&text, plan.RenderOptions{})
	if !strings.Contains(text.String(), "which the configuration no longer declares") {
		t.Errorf("plan text:\n%s", text.String())
	}
	off := r.config("v1", func(s *config.Service) { s.Engines = []string{"web1", "web2"} })
	fp = r.plan(off)
	ch := fp.Engines[2].Plan.Change("app")
	if fp.Engines[2].Engine != "web3" || ch == nil || ch.Action != plan.ActionDelete || !strings.Contains(strings.Join(ch.Reasons, " "), "engine web3 is no longer in its engines") {
		t.Fatalf("plan with app off web3: %+v", ch)
	}
	if _, err := r.apply(off); err != nil {
		t.Fatal(err)
	}
	// web3's release is gone, and so is its proxy route: the port is free there.
	if got := r.serves(); got != "web1=version=v1 web2=version=v1 web3=error" {
		t.Errorf("after taking app off web3: %s", got)
	}
}
