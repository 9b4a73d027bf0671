package executor_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor"
	"github.com/deployer-dev/deployer/executor/docker"
	"github.com/deployer-dev/deployer/executor/docker/dockertest"
	"github.com/deployer-dev/deployer/executor/plan"
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
	// via, when set, reaches an engine another way than its host's tcp:// (ssh://); crash
	// is called at the applies' kill points.
	via   map[string]executor.Runtime
	crash func(point string)
}

func newDockerFleet(t testing.TB) *dockerFleet {
	main := dockertest.Engine(t)
	app := dockertest.AppImage(t, main)
	hosts := dockertest.HostEngines(t, 3)
	// Only web1 has the app's image: the deployer sends it to the others.
	hosts[0].LoadFrom(t, main, app)
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
		if e := r.via[h.Name]; e != nil {
			f.Engines[h.Name] = e
		}
	}
	f.Base.Crash = r.crash
	return f
}

func (r *dockerFleet) apply(p *config.Project) (*plan.FleetPlan, map[string]*executor.ServiceOutcome, error) {
	r.t.Helper()
	ctx := context.Background()
	fp, err := r.fleet(p).Plan(ctx, plan.PlanOptions{})
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
	fp, err = r.fleet(r.config("v2", nil)).Plan(context.Background(), plan.PlanOptions{})
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
			fp, err := r.fleet(r.config("v2", nil)).Plan(context.Background(), plan.PlanOptions{})
			if err != nil || fp.HasChanges() {
				t.Errorf("v2 runs everywhere, yet its plan: %v, changes %v", err, fp.HasChanges())
			}
		})
	}
}

// rate sends GET / to a port of every engine (or of those named), from inside its namespace, open loop at
// perSecond each (at most 12000 each), until stop; it returns each engine's tally.
func (r *dockerFleet) rate(port, perSecond int, on ...string) (stop func() map[string]*tally) {
	tallies := map[string]*tally{}
	for _, h := range r.hosts {
		if len(on) > 0 && !slices.Contains(on, h.Name) {
			continue
		}
		t := &tally{url: fmt.Sprintf("http://127.0.0.1:%d/", port), c: h.Client(30 * time.Second)}
		t.openLoop(perSecond, 12000)
		tallies[h.Name] = t
	}
	return func() map[string]*tally {
		for _, t := range tallies {
			t.stop()
		}
		return tallies
	}
}

// BenchmarkFleetRollout measures a service on three engines under 200 requests/s on each
// (open loop, from inside each engine's namespace): the first deploy, which sends a 100 MiB
// image from web1 to web2 and web3 (the transfer rate), then a rollout one engine at a time
// and one with all three at once (failed requests, goal 0 on every engine; wall time), beside
// the same deploy of a service on one engine in the same run (goal: all at once within 1.5x),
// with the other engines idle and with them loaded. Each deploy's CPU (the machine's, less the
// load's) gives the least all at once can take on this machine's 2 cores.
func BenchmarkFleetRollout(b *testing.B) {
	for i := 0; i < b.N; i++ {
		r := newDockerFleet(b)
		// A 100 MiB image on web1 alone.
		dir := b.TempDir()
		blob := make([]byte, 100<<20)
		rand.Read(blob)
		os.WriteFile(filepath.Join(dir, "blob"), blob, 0o644)
		os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM deployer-testapp:test\nCOPY blob /blob\n"), 0o644)
		if _, err := r.hosts[0].Engine.BuildImage(context.Background(), executor.BuildOptions{Dir: dir, Dockerfile: "Dockerfile", Tag: "deployer-testapp:big"}); err != nil {
			b.Fatal(err)
		}
		big := func(batch string, engines ...string) func(s *config.Service) {
			return func(s *config.Service) {
				s.Image = "deployer-testapp:big"
				s.HealthCheck.Interval, s.HealthCheck.Healthy = 20*time.Millisecond, 2
				s.Deploy.Drain = 500 * time.Millisecond
				if len(engines) > 0 {
					s.Name, s.ContainerName, s.Engines = "solo", r.project+"-solo", engines
					s.Ports[0].Host = 8081
				}
				if batch == "100%" {
					s.Rollout.Batch, s.Rollout.BatchPercent = 0, 100
				}
			}
		}
		// Both services: app on the three engines, solo on web1 alone (the comparison).
		both := func(app string, appMod func(s *config.Service), solo string) *config.Project {
			p := r.config(app, appMod)
			p.Services = append(p.Services, r.config(solo, big("1", "web1")).Services[0])
			return p
		}
		// The first deploy: the image goes to web2 and web3.
		r.events = nil
		start := time.Now()
		if _, by, err := r.apply(r.config("v1", big("1"))); err != nil || by["web3"] == nil || by["web3"].Error != "" {
			b.Fatalf("first deploy: %v %+v", err, by)
		}
		b.Logf("first deploy on three engines, the image sent to two: %.2fs", time.Since(start).Seconds())
		for _, e := range r.events {
			if e.Type == executor.EventLog && strings.Contains(e.Detail, "sent from engine") {
				b.Logf("  [%s] %s", e.Engine, e.Detail)
			}
		}
		if _, _, err := r.apply(both("v1", big("1"), "v1")); err != nil {
			b.Fatal(err)
		}
		// timed deploys p under 200 requests/s on each engine a load names (a port, and the
		// engines to send it to there; none: all three).
		type load struct {
			port int
			on   []string
		}
		// timing is a deploy's wall time, the cores its load alone kept busy, and the deploy's
		// own CPU time (core-seconds, the load's taken out).
		type timing struct{ secs, loadCores, cpu float64 }
		timed := func(what string, p *config.Project, loads ...load) timing {
			var stops []func() map[string]*tally
			for _, l := range loads {
				stops = append(stops, r.rate(l.port, 200, l.on...))
			}
			stop := func() map[string]*tally {
				all := map[string]*tally{}
				for _, stop := range stops {
					maps.Copy(all, stop())
				}
				return all
			}
			time.Sleep(200 * time.Millisecond) // the load under way
			quiet := readCPU()
			time.Sleep(time.Second)
			loadAlone, _ := quiet.since()
			start, cpu := time.Now(), readCPU()
			fp, err := r.fleet(p).Plan(context.Background(), plan.PlanOptions{})
			if err != nil {
				b.Fatal(err)
			}
			planned := time.Now()
			r.events = nil
			out, err := r.fleet(p).Apply(context.Background(), fp)
			secs := time.Since(start).Seconds()
			busy, engines := cpu.since()
			tallies := stop()
			if err != nil {
				b.Fatal(err)
			}
			for _, so := range out.Services {
				if so.Error != "" {
					b.Fatalf("%s: %s: %s", what, so.Engine, so.Error)
				}
			}
			var parts []string
			failed := 0
			for _, h := range r.hosts {
				if t := tallies[h.Name]; t != nil {
					parts = append(parts, fmt.Sprintf("%s %d sent, %d failed, longest %s", h.Name, t.sent, t.failed, t.longest.Round(time.Millisecond)))
					failed += t.failed
				}
			}
			var steps []string
			for _, e := range r.events {
				if e.Type == executor.EventStep && e.Phase == "end" && e.Engine == "web1" {
					steps = append(steps, fmt.Sprintf("%s %.2f", e.Step, e.Seconds))
				}
			}
			deployCPU := busy - loadAlone*secs
			b.Logf("%s: %.2fs (plan %.2fs, apply %.2fs); %s; CPU: the machine %.2f cores busy (the load alone %.2f), the deploy %.2f core-s (the engines' processes %.2f); web1's steps (s): %s",
				what, secs, planned.Sub(start).Seconds(), time.Since(planned).Seconds(), strings.Join(parts, "; "), busy/secs, loadAlone, deployCPU, engines, strings.Join(steps, ", "))
			b.ReportMetric(float64(failed), what+"-failed")
			b.ReportMetric(secs, what+"-s")
			return timing{secs, loadAlone, deployCPU}
		}
		// The deploy on one engine twice: with the other two engines idle, and with them
		// serving their 200 requests/s meanwhile, as the three do in the rollouts (on hosts of
		// their own, what the others serve would not take this one's CPU).
		one := timed("one-engine", both("v1", big("1"), "v2"), load{8081, []string{"web1"}}).secs
		loaded := timed("one-engine-others-loaded", both("v1", big("1"), "v3"), load{8081, []string{"web1"}}, load{8080, []string{"web2", "web3"}})
		batch1 := timed("batch-1", both("v2", big("1"), "v3"), load{port: 8080}).secs
		all := timed("all-at-once", both("v3", big("100%"), "v3"), load{port: 8080})
		// Three deploys' CPU on 2 cores, with what the load takes: the least all at once can
		// take here, however well the engines overlap.
		least := 3 * loaded.cpu / (2 - all.loadCores)
		b.Logf("all at once / one engine = %.2f, / one engine with the others loaded = %.2f (goal <= 1.5); one at a time / one engine = %.2f, / loaded = %.2f; "+
			"three deploys of %.2f core-s on 2 cores beside the load: at least %.2fs, %.2f x one engine with the others loaded",
			all.secs/one, all.secs/loaded.secs, batch1/one, batch1/loaded.secs, loaded.cpu, least, least/loaded.secs)
	}
}

// machineCPU is the CPU time this machine has spent busy (all cores, in seconds), and what of
// it the Docker engines' own processes spent (dockerd, containerd and the shims, with the runc
// processes they ran), by process: what a deploy cost is the difference over it.
type machineCPU struct {
	busy    float64
	engines map[int]float64 // by pid
}

func readCPU() machineCPU {
	m := machineCPU{engines: map[int]float64{}}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		for i, v := range strings.Fields(line)[1:] {
			if n, err := strconv.ParseFloat(v, 64); err == nil && i != 3 && i != 4 { // not idle, iowait
				m.busy += n / 100 // USER_HZ
			}
		}
	}
	for _, p := range dockertest.Processes() {
		if p.Name == "dockerd" || p.Name == "containerd" || p.Name == "containerd-shim" {
			m.engines[p.PID] = p.CPU
		}
	}
	return m
}

// since returns the machine's busy CPU seconds since m, and the engines' part of them.
func (m machineCPU) since() (busy, engines float64) {
	now := readCPU()
	for pid, t := range now.engines {
		if t0, ok := m.engines[pid]; ok {
			engines += t - t0
		}
	}
	return now.busy - m.busy, engines
}

// An engine that hangs mid-apply: web3, reached through ssh://, stops answering once its
// candidate runs (its sshd and everything under it stopped). Its calls fail within seconds
// (ssh's keepalive and connect timeout) instead of holding web1 and web2 at their barrier:
// apply ends with no engine switched, web1 and web2 serving the release before, and says what
// happened on web3. Once web3 answers again (its lock, left by this process, released with
// deployer unlock), the next apply converges every engine.
func TestFleetEngineHangs(t *testing.T) {
	fleetEngineHangs(t, func(r *dockerFleet) (string, func() func()) {
		host, sshCmd, freeze := r.hosts[2].FreezableSSH(t)
		t.Setenv("DEPLOYER_SSH_COMMAND", sshCmd+quickSSHTimeouts)
		return host, freeze
	}, "not responding", "timed out", "session ended")
}

// The same with web3 reached through tcp://, its daemon stopped (SIGSTOP) once its candidate
// runs: the engine bound (DEPLOYER_ENGINE_TIMEOUT, here 3s) ends its calls.
func TestFleetTCPEngineHangs(t *testing.T) {
	fleetEngineHangs(t, func(r *dockerFleet) (string, func() func()) {
		host, freeze, _ := r.hosts[2].TCP(t)
		t.Setenv(docker.EnvEngineTimeout, "3s")
		return host, freeze
	}, "does not answer")
}

// fleetEngineHangs freezes web3, reached as via makes it reachable, once its candidate runs;
// its error says one of the words.
func fleetEngineHangs(t *testing.T, via func(r *dockerFleet) (host string, freeze func() func()), words ...string) {
	r := newDockerFleet(t)
	if _, _, err := r.apply(r.config("v1", nil)); err != nil {
		t.Fatal(err)
	}
	host, freeze := via(r)
	web3, err := docker.New(host)
	if err != nil {
		t.Fatal(err)
	}
	defer web3.Close()
	r.via = map[string]executor.Runtime{"web3": web3}
	var thaw func()
	r.crash = func(point string) {
		if point == "web3/"+string(plan.StepHealth) && thaw == nil {
			thaw = freeze()
		}
	}
	start := time.Now()
	done := make(chan map[string]*executor.ServiceOutcome, 1)
	go func() {
		_, by, _ := r.apply(r.config("v2", nil))
		done <- by
	}()
	var by map[string]*executor.ServiceOutcome
	select {
	case by = <-done:
	case <-time.After(3 * time.Minute):
		t.Fatal("apply still waits 3 minutes after web3 stopped answering")
	}
	if thaw == nil {
		t.Fatal("web3 was never frozen")
	}
	t.Logf("apply ended %s after it began; web3: %s", time.Since(start).Round(time.Second), by["web3"].Error)
	r.crash = nil
	want(t, "after web3 hung", r.serves(), "web1=version=v1 web2=version=v1 web3=version=v1")
	if so := by["web3"]; so == nil || !slices.ContainsFunc(words, func(w string) bool { return strings.Contains(so.Error, w) }) {
		t.Errorf("web3: %+v, want it to say %q", so, words)
	}
	for _, n := range []string{"web1", "web2"} {
		if so := by[n]; so == nil || !strings.Contains(so.Error, "not switched, all or nothing") {
			t.Errorf("%s: %+v", n, so)
		}
	}
	thaw()
	if _, err := executor.Unlock(context.Background(), web3, r.project); err != nil {
		t.Logf("unlock web3: %v", err)
	}
	if _, by, err := r.apply(r.config("v2", nil)); err != nil || by["web3"] == nil || by["web3"].Error != "" {
		t.Fatalf("the next apply: %v %+v", err, by["web3"])
	}
	want(t, "the next apply", r.serves(), "web1=version=v2 web2=version=v2 web3=version=v2")
}
