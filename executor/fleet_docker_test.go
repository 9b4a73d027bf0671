package executor_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor"
	"github.com/deployer-dev/deployer/executor/docker/dockertest"
)

// dockerFleet is one project on three real Docker engines of the test's own (web1 to web3),
// each in its own network namespace: the same fixed host port, 8080, on each, reached from
// inside the namespace.
type dockerFleet struct {
	t       testing.TB
	hosts   []*dockertest.HostEngine
	project string
	self    string
	mu      sync.Mutex
	events  []executor.Event
}

func newDockerFleet(t testing.TB) *dockerFleet {
	main := dockertest.Engine(t)
	app := dockertest.AppImage(t, main)
	hosts := dockertest.HostEngines(t, 3)
	// Only web1 has the app's image: the deployer sends it to the others.
	rc, err := main.SaveImage(context.Background(), app)
	if err != nil {
		t.Fatal(err)
	}
	err = hosts[0].Engine.LoadImage(context.Background(), rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	return &dockerFleet{t: t, hosts: hosts, project: dockertest.Project(t, main), self: staticDeployer(t)}
}

func (r *dockerFleet) config(v string, mod func(s *config.Service)) *config.Project {
	s := config.NewService("app")
	s.Image = "deployer-testapp:test"
	s.ContainerName = r.project + "-app"
	s.Env = map[string]string{"APP_VERSION": v}
	port := config.NewPort()
	port.Container, port.Host = 8080, 8080
	s.Ports = []*config.Port{port}
	h := config.NewHealthCheck()
	h.Path, h.Interval, h.Healthy, h.Deadline = "/health", 100*time.Millisecond, 2, 10*time.Second
	s.HealthCheck = h
	s.Deploy.Cutover, s.Deploy.StopTimeout, s.Deploy.Drain = config.CutoverProxy, 2*time.Second, time.Second
	p := &config.Project{Name: r.project, Dir: r.t.TempDir(), Services: []*config.Service{s}, Sensitive: map[string]bool{},
		Engines: map[string]*config.Engine{}}
	for _, h := range r.hosts {
		s.Engines = append(s.Engines, h.Name)
		p.Engines[h.Name] = &config.Engine{Name: h.Name, Host: h.Host}
	}
	if mod != nil {
		mod(s)
	}
	config.Defaults(p)
	return p
}

func (r *dockerFleet) fleet(p *config.Project) *executor.Fleet {
	f := &executor.Fleet{Base: executor.Applier{Project: p, Holder: "test " + r.t.Name(), SelfBinary: r.self, TempDir: r.t.TempDir(),
		Events: func(e executor.Event) { r.mu.Lock(); r.events = append(r.events, e); r.mu.Unlock() }},
		Engines: map[string]executor.Runtime{}, ProbeHosts: map[string]string{}, Remote: map[string]bool{}}
	for _, h := range r.hosts {
		f.Engines[h.Name], f.ProbeHosts[h.Name], f.Remote[h.Name] = h.Engine, "127.0.0.1", true
	}
	return f
}

func (r *dockerFleet) apply(p *config.Project) (*executor.FleetPlan, map[string]*executor.ServiceOutcome, error) {
	r.t.Helper()
	ctx := context.Background()
	fp, err := r.fleet(p).Plan(ctx, executor.PlanOptions{})
	if err != nil {
		r.t.Fatal(err)
	}
	out, err := r.fleet(p).Apply(ctx, fp)
	by := map[string]*executor.ServiceOutcome{}
	for _, so := range out.Services {
		by[so.Engine] = so
	}
	return fp, by, err
}

// serves is what each engine's port 8080 answers on its own 127.0.0.1.
func (r *dockerFleet) serves() string {
	var parts []string
	for _, h := range r.hosts {
		parts = append(parts, h.Name+"="+h.Get("http://127.0.0.1:8080/"))
	}
	return strings.Join(parts, " ")
}

// load sends GET / to port 8080 of every engine, from inside its namespace, at about 50
// requests/s each, until stop; it returns the requests sent and failed on each.
func (r *dockerFleet) load() (stop func() map[string][2]int) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	counts := map[string][2]int{}
	for _, h := range r.hosts {
		c := h.Client(30 * time.Second)
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n := 0; n < 5000; n++ {
					select {
					case <-done:
						return
					case <-time.After(40 * time.Millisecond):
					}
					resp, err := c.Get("http://127.0.0.1:8080/")
					ok := err == nil && resp.StatusCode == 200
					if err == nil {
						resp.Body.Close()
					}
					mu.Lock()
					v := counts[h.Name]
					v[0]++
					if !ok {
						v[1]++
					}
					counts[h.Name] = v
					mu.Unlock()
				}
			}()
		}
	}
	return func() map[string][2]int {
		close(done)
		wg.Wait()
		return counts
	}
}

func (r *dockerFleet) cutovers() []string { return cutoverOrder(&r.mu, &r.events) }

func noneFailed(t *testing.T, counts map[string][2]int) {
	t.Helper()
	for name, c := range counts {
		t.Logf("%s: %d requests, %d failed", name, c[0], c[1])
		if c[0] == 0 || c[1] > 0 {
			t.Errorf("engine %s: %d of %d requests failed", name, c[1], c[0])
		}
	}
}

// A service on three real engines: the image, on web1 only, is sent to the others; created on
// all three, then replaced one engine at a time under load with no failed request; the next
// plan has nothing to do. Then all or nothing: a candidate failing on web3 switches no engine;
// a release failing its verification on web3, in the last batch, sends web1 and web2 back,
// with no failed request on any of them.
func TestFleetDocker(t *testing.T) {
	r := newDockerFleet(t)
	fp, by, err := r.apply(r.config("v1", nil))
	if err != nil {
		t.Fatal(err)
	}
	if len(fp.Rollouts) != 1 || fp.Rollouts[0].ImageFrom != "web1" {
		t.Errorf("rollouts: %+v", fp.Rollouts)
	}
	for _, h := range r.hosts {
		if so := by[h.Name]; so == nil || so.Error != "" || so.Release != 1 {
			t.Fatalf("engine %s: %+v", h.Name, so)
		}
	}
	want(t, "v1", r.serves(), "web1=version=v1 web2=version=v1 web3=version=v1")
	r.cutovers()

	stop := r.load()
	_, by, err = r.apply(r.config("v2", nil))
	counts := stop()
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range r.hosts {
		if so := by[h.Name]; so == nil || so.Error != "" || so.Release != 2 {
			t.Errorf("engine %s: %+v", h.Name, so)
		}
	}
	noneFailed(t, counts)
	want(t, "v2", r.serves(), "web1=version=v2 web2=version=v2 web3=version=v2")
	if got := r.cutovers(); !slices.Equal(got, []string{"web1", "web2", "web3"}) {
		t.Errorf("cutovers in the order %v", got)
	}
	fp, err = r.fleet(r.config("v2", nil)).Plan(context.Background(), executor.PlanOptions{})
	if err != nil || fp.HasChanges() {
		t.Errorf("a second plan: %v, changes %v", err, fp.HasChanges())
	}

	// web3 gets its own image of the next releases: the others' is healthy, web3's fails.
	image := func(env string) {
		for _, h := range r.hosts {
			dir := t.TempDir()
			e := ""
			if h.Name == "web3" {
				e = env
			}
			os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM deployer-testapp:test\n"+e+"\n"), 0o644)
			if _, err := h.Engine.BuildImage(context.Background(), executor.BuildOptions{Dir: dir, Dockerfile: "Dockerfile", Tag: "deployer-testapp:fleet"}); err != nil {
				t.Fatalf("build on %s: %v", h.Name, err)
			}
		}
	}
	for _, tc := range []struct {
		name, env, version string
		switched           []string // the engines whose cutover ran
		check              func(t *testing.T, name string, so *executor.ServiceOutcome)
	}{
		{"candidate-fails-on-web3", "ENV APP_MODE=unhealthy", "v3", nil, func(t *testing.T, name string, so *executor.ServiceOutcome) {
			if name == "web3" && !strings.Contains(so.Error, "db locked") ||
				name != "web3" && (!strings.Contains(so.Error, "not switched, all or nothing") || !strings.Contains(so.Error, "on engine web3")) {
				t.Errorf("engine %s: %+v", name, so)
			}
		}},
		// The candidate passes its 2 health checks; the live release's next ones fail.
		{"verify-fails-on-web3", "ENV APP_HEALTH_FAIL_AFTER=2", "v4", []string{"web1", "web2", "web3"}, func(t *testing.T, name string, so *executor.ServiceOutcome) {
			if !so.RolledBack || so.Release != 2 || name != "web3" && !strings.Contains(so.Error, "went back with the other engines") {
				t.Errorf("engine %s: %+v", name, so)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			image(tc.env)
			stop := r.load()
			_, by, _ := r.apply(r.config(tc.version, func(s *config.Service) { s.Image = "deployer-testapp:fleet" }))
			noneFailed(t, stop())
			want(t, "after", r.serves(), "web1=version=v2 web2=version=v2 web3=version=v2")
			if got := r.cutovers(); !slices.Equal(got, tc.switched) {
				t.Errorf("cutovers %v, want %v", got, tc.switched)
			}
			for _, h := range r.hosts {
				if so := by[h.Name]; so == nil {
					t.Errorf("engine %s: no outcome", h.Name)
				} else {
					tc.check(t, h.Name, so)
				}
			}
			fp, err := r.fleet(r.config("v2", nil)).Plan(context.Background(), executor.PlanOptions{})
			if err != nil || fp.HasChanges() {
				t.Errorf("v2 runs everywhere, yet its plan: %v, changes %v", err, fp.HasChanges())
			}
		})
	}
}
