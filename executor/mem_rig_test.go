package executor_test

import (
	"context"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor"
	"github.com/deployer-dev/deployer/executor/docker/dockertest"
	"github.com/deployer-dev/deployer/executor/engine/memengine"
	"github.com/deployer-dev/deployer/executor/plan"
)

// memRig is one project on the in-memory engine, with the test app as its service "app": the
// sequence of apply with everything real but Docker (real HTTP on loopback, the real proxy, a
// real backup store), in well under a second per apply.
type memRig struct {
	t       testing.TB
	eng     *memengine.Engine
	project string
	port    int
	appPort int // the app's port in its containers
	cutover config.Cutover
	store   string // the local backup store's directory
	mu      sync.Mutex
	events  []executor.Event
	// crash, when set, is called at every kill point of the next apply.
	crash func(point string)
}

const (
	memApp   = "app:1"
	memProxy = "deployer-proxy:mem"
)

func newMemRig(t testing.TB, cutover config.Cutover) *memRig {
	eng, err := memengine.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(eng.Close)
	eng.Image(memApp, memengine.App, map[string]string{"PATH": "/bin"})
	eng.Image(memProxy, memengine.Proxy, nil)
	name := strings.ToLower(regexp.MustCompile(`[^A-Za-z0-9]+`).ReplaceAllString(t.Name(), "-"))
	return &memRig{t: t, eng: eng, project: "mem-" + strings.Trim(name, "-"), port: freePort(t), appPort: freePort(t), cutover: cutover, store: t.TempDir()}
}

// freePort is a port nothing listens on, away from the ports the kernel hands out.
func freePort(t testing.TB) int { return dockertest.FreePort(t) }

// config is the project with the app at version v, a data volume backed up before each
// cutover, and a hook; mod adjusts the service.
func (r *memRig) config(v string, mod func(s *config.Service)) *config.Project {
	s := config.NewService("app")
	s.Image = memApp
	s.ContainerName = r.project + "-app"
	// The app's port is a free one, not 8080: its containers listen on loopback addresses of
	// this machine, where something may hold *:8080.
	s.Env = map[string]string{"APP_VERSION": v, "APP_DATA": "/data", "APP_PORT": strconv.Itoa(r.appPort)}
	port := config.NewPort()
	port.Container, port.Host = r.appPort, r.port
	s.Ports = []*config.Port{port}
	s.Volumes = []*config.Volume{{Name: r.project + "-data", Target: "/data"}}
	h := config.NewHealthCheck()
	h.Path, h.Interval, h.Healthy, h.Deadline, h.Timeout = "/health", 20*time.Millisecond, 2, 2*time.Second, time.Second
	s.HealthCheck = h
	s.Hooks = []*config.Hook{{When: "before_cutover", Command: []string{"exit", "0"}}}
	s.Backup = config.NewBackup()
	s.Backup.Volumes = []string{r.project + "-data"}
	s.Deploy.StopTimeout = time.Second
	s.Deploy.Cutover = r.cutover
	s.Deploy.Drain = 200 * time.Millisecond
	if mod != nil {
		mod(s)
	}
	p := &config.Project{Name: r.project, Dir: r.t.TempDir(), Services: []*config.Service{s}, Sensitive: map[string]bool{},
		Stores: map[string]*config.Store{"default": {Name: "default", Kind: config.StoreLocal, Directory: r.store}}}
	p.Docker.ProxyImage = memProxy
	config.Defaults(p)
	return p
}

func (r *memRig) applier(p *config.Project) *executor.Applier {
	return &executor.Applier{Project: p, Runtime: r.eng, Holder: "test " + r.t.Name(), TempDir: r.t.TempDir(), Crash: r.crash,
		Events: func(e executor.Event) { r.mu.Lock(); r.events = append(r.events, e); r.mu.Unlock() }}
}

// plan makes the plan of p.
func (r *memRig) plan(p *config.Project) *plan.Plan {
	r.t.Helper()
	pl, err := executor.MakePlan(context.Background(), p, r.eng, plan.PlanOptions{})
	if err != nil {
		r.t.Fatal(err)
	}
	return pl
}

// apply plans and applies p, failing the test on errors outside the service.
func (r *memRig) apply(p *config.Project) *executor.ServiceOutcome {
	r.t.Helper()
	out, err := r.applier(p).Apply(context.Background(), r.plan(p))
	if err != nil {
		r.t.Fatal(err)
	}
	if len(out.Services) != 1 {
		r.t.Fatalf("%d service outcomes", len(out.Services))
	}
	return out.Services[0]
}

// applyAll plans and applies p, with whatever outcomes it has (none when nothing changes).
func (r *memRig) applyAll(p *config.Project) *executor.Outcome {
	r.t.Helper()
	out, err := r.applier(p).Apply(context.Background(), r.plan(p))
	if err != nil {
		r.t.Fatal(err)
	}
	return out
}

// crashAt applies p and stops the deployer at the kill point as a crash does: the engine is
// frozen there (what runs goes on running, nothing more is done to it), and the apply goes no
// further. It reports whether the point was reached.
func (r *memRig) crashAt(p *config.Project, point string) bool {
	r.t.Helper()
	pl := r.plan(p)
	reached := false
	r.crash = func(at string) {
		if at == point && !reached {
			reached = true
			r.eng.Freeze()
			runtime.Goexit() // the deployer's goroutine ends here; deferred work finds the engine frozen
		}
	}
	defer func() { r.crash = nil }()
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.applier(p).Apply(context.Background(), pl)
	}()
	<-done
	r.eng.Thaw()
	if reached {
		// The crashed deployer's lock: its process lives on here, so the next apply cannot tell
		// that it is gone; an operator breaks it with `deployer unlock -force`.
		executor.Unlock(context.Background(), r.eng, r.project)
	}
	return reached
}

// get returns the body of GET path on the host port, or the error.
func (r *memRig) get(path string) string { return getPath(r.port, path) }

// serves reports whether the service answers with the version, within a second: a release the
// apply did not start itself (a crashed apply did) may still be starting.
func (r *memRig) serves(version string) bool {
	for deadline := time.Now().Add(time.Second); ; time.Sleep(20 * time.Millisecond) {
		if r.get("/") == "version="+version {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// state lists the service's containers as "role:release:state", oldest first.
func (r *memRig) state() string { return releaseState(r.t, r.eng, r.project, true) }

// steps lists the steps the last applies ran, as "name:outcome", and forgets them.
func (r *memRig) steps() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, e := range r.events {
		if e.Type == executor.EventStep && e.Phase == "end" {
			out = append(out, e.Step+":"+string(e.Outcome))
		}
	}
	r.events = nil
	return out
}

// forCutovers runs a test for each cutover: each has the same failure matrix to pass.
func forCutovers(t *testing.T, test func(t *testing.T, r *memRig)) {
	for _, c := range []config.Cutover{config.CutoverRestart, config.CutoverProxy} {
		t.Run(string(c), func(t *testing.T) {
			t.Parallel()
			test(t, newMemRig(t, c))
		})
	}
}

// projectOnly is a project without its configuration, for tests that look at what runs: each
// service's names are read from what its releases recorded (see executor.Observe).
func projectOnly(name string) *config.Project { return &config.Project{Name: name} }
