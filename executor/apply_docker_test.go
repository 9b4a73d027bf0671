package executor_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
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

// rig is one project on the real engine with the test app as its service "app".
type rig struct {
	t       testing.TB
	eng     *docker.Engine
	project string
	image   string
	port    int
	events  []executor.Event
	mu      sync.Mutex
	self    string // the static deployer, for the proxy and restores
	probe   string // where the deployer reaches published ports; "" for 127.0.0.1
	remote  bool   // the engine's network is not this machine's (Applier.Remote)
	// helperMemory caps the migration helpers' memory (0: none).
	helperMemory int64
}

func newRig(t testing.TB) *rig {
	eng := dockertest.Engine(t)
	r := &rig{t: t, eng: eng, project: dockertest.Project(t, eng), image: dockertest.AppImage(t, eng), port: dockertest.FreePort(t)}
	return r
}

// config returns the project with the app at version v; mod adjusts the service.
func (r *rig) config(v string, mod func(s *config.Service)) *config.Project {
	s := config.NewService("app")
	s.Image = r.image
	s.Env = map[string]string{"APP_VERSION": v, "APP_DATA": "/data"}
	port := config.NewPort()
	port.Container, port.Host = 8080, r.port
	s.Ports = []*config.Port{port}
	s.Volumes = []*config.Volume{{Name: r.project + "-data", Target: "/data"}}
	h := config.NewHealthCheck()
	h.Path, h.Interval, h.Healthy, h.Deadline = "/health", 100*time.Millisecond, 2, 8*time.Second
	s.HealthCheck = h
	s.Deploy.StopTimeout = 2 * time.Second
	if mod != nil {
		mod(s)
	}
	p := &config.Project{Name: r.project, Dir: r.t.TempDir(), Services: []*config.Service{s}, Sensitive: map[string]bool{}}
	config.Defaults(p)
	return p
}

func (r *rig) applier(p *config.Project) *executor.Applier {
	return &executor.Applier{Project: p, Runtime: r.eng, Holder: "test " + r.t.Name(), ProbeHost: r.probe, Remote: r.remote, SelfBinary: r.self, HelperMemory: r.helperMemory,
		Events: func(e executor.Event) { r.mu.Lock(); r.events = append(r.events, e); r.mu.Unlock() }}
}

// apply plans and applies p, failing the test on errors outside the service.
func (r *rig) apply(p *config.Project) *executor.ServiceOutcome {
	r.t.Helper()
	ctx := context.Background()
	pl, err := executor.MakePlan(ctx, p, r.eng, plan.PlanOptions{Remote: r.remote})
	if err != nil {
		r.t.Fatal(err)
	}
	out, err := r.applier(p).Apply(ctx, pl)
	if err != nil {
		// Stopped before any service's sequence (the lock, the preflight checks): the tests
		// read it as the service's error, with nothing changed.
		return &executor.ServiceOutcome{Service: p.Services[0].Name, Error: err.Error()}
	}
	if len(out.Services) != 1 {
		r.t.Fatalf("%d service outcomes", len(out.Services))
	}
	return out.Services[0]
}

// get returns the body of GET path on the host port, or the error.
func (r *rig) get(path string) string { return getPath(r.port, path) }

// state lists the project's containers as "role:release:state", sorted by release.
func (r *rig) state() string { return releaseState(r.t, r.eng, r.project, false) }

func TestApplyCreateReplaceRollback(t *testing.T) {
	r := newRig(t)
	if so := r.apply(r.config("v1", nil)); so.Error != "" || so.Release != 1 {
		t.Fatalf("create: %+v", so)
	}
	if got := r.get("/"); got != "version=v1" {
		t.Fatalf("after create: %q", got)
	}
	if so := r.apply(r.config("v2", nil)); so.Error != "" || so.Release != 2 {
		t.Fatalf("replace: %+v", so)
	}
	if got := r.get("/"); got != "version=v2" {
		t.Fatalf("after replace: %q", got)
	}
	if got := r.state(); got != "previous:1:created live:2:running" {
		t.Errorf("containers: %s", got)
	}
	// The data volume is shared: both releases wrote to the same history.
	if h := r.get("/history"); !strings.Contains(h, "started v1") || !strings.Contains(h, "started v2") {
		t.Errorf("history: %q", h)
	}
	so, err := r.applier(r.config("v2", nil)).Rollback(context.Background(), "app", 0)
	if err != nil || so.Error != "" || so.Release != 1 {
		t.Fatalf("rollback: %+v %v", so, err)
	}
	if got := r.get("/"); got != "version=v1" {
		t.Fatalf("after rollback: %q", got)
	}
	if got := r.state(); got != "live:1:running previous:2:created" {
		t.Errorf("containers after rollback: %s", got)
	}
	// Releases beyond keep_releases are removed, oldest first.
	keep2 := func(s *config.Service) { s.Deploy.KeepReleases = 2 }
	for _, v := range []string{"v3", "v4", "v5"} {
		if so := r.apply(r.config(v, keep2)); so.Error != "" {
			t.Fatalf("%s: %s", v, so.Error)
		}
	}
	// After the rollback to 1, releases 3, 4 and 5 are v3..v5 (2 is taken by the rolled-back v2).
	obs, _ := plan.Observe(context.Background(), r.eng, projectOnly(r.project))
	st := obs.Services["app"]
	if st.Live.Release() != 5 || len(st.Previous) != 2 || st.Previous[0].Release() != 4 || st.Previous[1].Release() != 3 {
		t.Errorf("want live 5 and previous 4, 3; got %s", r.state())
	}
}

// A candidate that fails any check is removed; the live release serves on, untouched.
func TestApplyCandidateFailures(t *testing.T) {
	cases := []struct {
		name string
		mod  func(s *config.Service)
		want []string
	}{
		{"never healthy", func(s *config.Service) { s.Env["APP_MODE"] = "unhealthy"; s.HealthCheck.Deadline = 5 * time.Second },
			[]string{`candidate "dt-`, "health check GET /health", "not healthy within 5s", "status 500", "db locked", "release 1 (", "is still live"}},
		{"exits at once", func(s *config.Service) { s.Env["APP_MODE"] = "crash" },
			[]string{"exited with code 3", "database unreachable"}},
		{"canary fails", func(s *config.Service) {
			s.Canaries = []*config.Canary{{Name: "home", Path: "/", BodyContains: "welcome"}}
		}, []string{`canary "home" GET /`, `body does not contain "welcome"`}},
		{"hook fails", func(s *config.Service) {
			s.Hooks = []*config.Hook{{When: "before_cutover", Command: []string{"exit", "7"}}}
		}, []string{`hook "before_cutover"`, "exited with code 7", "testapp: exiting with 7"}},
		{"image missing", func(s *config.Service) { s.Image = "deployer-test-no-such-image:1" },
			[]string{"pull deployer-test-no-such-image:1"}},
	}
	r := newRig(t)
	if so := r.apply(r.config("v1", nil)); so.Error != "" {
		t.Fatal(so.Error)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			so := r.apply(r.config("v2", c.mod))
			if so.Error == "" {
				t.Fatal("apply succeeded")
			}
			for _, w := range c.want {
				if !strings.Contains(so.Error, w) {
					t.Errorf("error lacks %q:\n%s", w, so.Error)
				}
			}
			if got := r.get("/"); got != "version=v1" {
				t.Errorf("live release after the failure: %q", got)
			}
			if got := r.state(); got != "live:1:running" {
				t.Errorf("containers after the failure: %s", got)
			}
		})
	}
}

// A release that passes as candidate but fails once live is rolled back automatically.
func TestApplyRollsBackAfterCutover(t *testing.T) {
	r := newRig(t)
	if so := r.apply(r.config("v1", nil)); so.Error != "" {
		t.Fatal(so.Error)
	}
	so := r.apply(r.config("v2", func(s *config.Service) { s.Env["APP_MODE"] = "once"; s.HealthCheck.Deadline = 5 * time.Second }))
	if !so.RolledBack || so.RolledBackTo != 1 || !strings.HasPrefix(so.Error, "rolled back to release 1: release 2 failed after cutover") {
		t.Fatalf("outcome: %+v", so)
	}
	if !strings.Contains(so.Error, "testapp v2 starting") {
		t.Errorf("the failed release's output is not in the error:\n%s", so.Error)
	}
	if got := r.get("/"); got != "version=v1" {
		t.Fatalf("after the rollback: %q", got)
	}
	if got := r.state(); got != "live:1:running" {
		t.Errorf("containers: %s", got)
	}
	// The next apply of a good release goes through.
	if so := r.apply(r.config("v3", nil)); so.Error != "" || r.get("/") != "version=v3" {
		t.Fatalf("next apply: %+v", so)
	}
}

func TestApplyPortsTaken(t *testing.T) {
	r := newRig(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	busy := l.Addr().(*net.TCPAddr).Port

	so := r.apply(r.config("v1", func(s *config.Service) { s.Ports[0].Candidate = busy }))
	if !strings.Contains(so.Error, fmt.Sprintf("candidate port %d of service.app is held by a process outside Docker", busy)) || !strings.Contains(so.Error, "nothing was changed") {
		t.Errorf("candidate port taken: %q", so.Error)
	}
	if got := r.state(); got != "" {
		t.Errorf("containers left: %s", got)
	}
	if so := r.apply(r.config("v1", nil)); so.Error != "" {
		t.Fatal(so.Error)
	}
	// The host port of a new service taken by someone else.
	r2 := newRig(t)
	r2.port = busy
	l2 := l.Addr().String()
	so = r2.apply(r2.config("v1", nil))
	if !strings.Contains(so.Error, fmt.Sprintf("host port %d of service.app is held by a process outside Docker", busy)) {
		t.Errorf("host port taken (%s): %q", l2, so.Error)
	}
	if got := r2.state(); got != "" {
		t.Errorf("containers left: %s", got)
	}
}

func TestApplyLock(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	image, err := r.eng.EnsureLockImage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	lockID, err := r.eng.CreateContainer(ctx, executor.ContainerSpec{Name: plan.LockName(r.project), Image: image, Labels: map[string]string{
		plan.LabelProject: r.project, plan.LabelRole: plan.RoleLock, plan.LabelHolder: "ci@runner-7 pid 4242",
		plan.LabelCreatedAt: "2026-11-27T10:00:00Z", plan.LabelLockHost: "another-host", plan.LabelLockPID: "4242"}})
	if err != nil {
		t.Fatal(err)
	}
	so, err := func() (*executor.ServiceOutcome, error) {
		p := r.config("v1", nil)
		pl, err := executor.MakePlan(ctx, p, r.eng, plan.PlanOptions{})
		if err != nil {
			return nil, err
		}
		_, err = r.applier(p).Apply(ctx, pl)
		return nil, err
	}()
	if err == nil || !strings.Contains(err.Error(), "held by ci@runner-7 pid 4242 since 2026-11-27T10:00:00Z") || !strings.Contains(err.Error(), "deployer unlock -force") {
		t.Fatalf("held lock: %v %v", so, err)
	}
	// With -lock-timeout, apply waits for the lock to be released.
	go func() {
		time.Sleep(700 * time.Millisecond)
		r.eng.RemoveContainer(ctx, lockID)
	}()
	p := r.config("v1", nil)
	pl, _ := executor.MakePlan(ctx, p, r.eng, plan.PlanOptions{})
	a := r.applier(p)
	a.LockTimeout = 20 * time.Second
	if out, err := a.Apply(ctx, pl); err != nil || out.Failed() {
		t.Fatalf("waiting for the lock: %v %+v", err, out)
	}
	// A lock left by a dead deployer process on this host, in this boot and PID namespace, is
	// broken with a warning.
	host, _ := os.Hostname()
	boot, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	pidns, _ := os.Readlink("/proc/self/ns/pid")
	_, err = r.eng.CreateContainer(ctx, executor.ContainerSpec{Name: plan.LockName(r.project), Image: image, Labels: map[string]string{
		plan.LabelProject: r.project, plan.LabelRole: plan.RoleLock, plan.LabelHolder: "dead", plan.LabelLockHost: host, plan.LabelLockPID: "3999999",
		plan.LabelLockBoot: strings.TrimSpace(string(boot)), plan.LabelLockPIDNS: pidns, plan.LabelLockStart: "12345"}})
	if err != nil {
		t.Fatal(err)
	}
	r.events = nil
	if so := r.apply(r.config("v2", nil)); so.Error != "" {
		t.Fatal(so.Error)
	}
	warned := false
	for _, e := range r.events {
		warned = warned || e.Type == executor.EventWarning && strings.Contains(e.Detail, "breaking the deploy lock of dead")
	}
	if !warned {
		t.Error("no warning about the stale lock")
	}
	if held, err := executor.Unlock(ctx, r.eng, r.project); held != nil || err != nil {
		t.Errorf("the lock was not released: %v %v", held, err)
	}
}

func TestApplyNotices(t *testing.T) {
	var mu sync.Mutex
	got := map[string][]string{} // path -> events (slack: the text)
	var raw []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		var m map[string]string
		json.Unmarshal(b, &m)
		mu.Lock()
		if m["event"] != "" {
			got[req.URL.Path] = append(got[req.URL.Path], m["event"])
		} else {
			got[req.URL.Path] = append(got[req.URL.Path], m["text"])
		}
		raw = append(raw, string(b))
		mu.Unlock()
		if strings.HasSuffix(req.URL.Path, "/broken") {
			w.WriteHeader(500)
		}
	}))
	defer srv.Close()
	r := newRig(t)
	withNotices := func(p *config.Project) *config.Project {
		p.Notifies = []*config.Notify{
			{Kind: "webhook", Name: "ops", URL: srv.URL + "/hook", On: config.NotifyEvents},
			{Kind: "slack", Name: "chat", URL: srv.URL + "/slack", On: []string{"rolled_back"}},
			{Kind: "webhook", Name: "broken", URL: srv.URL + "/broken", On: []string{"succeeded"}},
		}
		p.Services[0].Env["API_TOKEN"] = "tok-very-secret-123"
		p.Sensitive["service.app.env.API_TOKEN"] = true
		return p
	}
	if so := r.apply(withNotices(r.config("v1", nil))); so.Error != "" {
		t.Fatalf("a failing notice must not fail the deploy: %s", so.Error)
	}
	so := r.apply(withNotices(r.config("v2", func(s *config.Service) {
		s.Env["APP_MODE"] = "once"
		s.HealthCheck.Deadline = 5 * time.Second
	})))
	if !so.RolledBack {
		t.Fatalf("%+v", so)
	}
	mu.Lock()
	defer mu.Unlock()
	if hook := strings.Join(got["/hook"], " "); hook != "started succeeded started rolled_back" {
		t.Errorf("webhook notices: %q", hook)
	}
	if slack := got["/slack"]; len(slack) != 1 || !strings.Contains(slack[0], "release 2 failed, rolled back to release 1") {
		t.Errorf("slack notices: %q", slack)
	}
	if broken := got["/broken"]; len(broken) != 1 {
		t.Errorf("the failing endpoint got %d notices", len(broken))
	}
	for _, b := range raw {
		if strings.Contains(b, "tok-very-secret-123") {
			t.Errorf("a notice holds the secret: %s", b)
		}
	}
	warned := false
	for _, e := range r.events {
		warned = warned || e.Type == executor.EventWarning && strings.Contains(e.Detail, `notify webhook "broken" (http://127.0.0.1:`) && strings.Contains(e.Detail, `/...): the endpoint answered 500`)
	}
	if !warned {
		t.Error("no warning for the failing notice")
	}
}

// The build step: build.before runs first, a failing build leaves live alone, and an unchanged
// context reuses the live image without a build.
func TestApplyBuild(t *testing.T) {
	r := newRig(t)
	dir := t.TempDir()
	dockertest.AppContext(t, dir)
	withBuild := func(p *config.Project, before ...string) *config.Project {
		p.Dir = dir
		s := p.Services[0]
		s.Image = r.project + "-app:latest"
		s.Build = config.NewBuild()
		s.Build.Before = before
		return p
	}
	if so := r.apply(withBuild(r.config("v1", nil), "sh", "-c", "echo compiled > stamp.txt")); so.Error != "" || r.get("/") != "version=v1" {
		t.Fatalf("first build: %+v", so)
	}
	if _, err := os.Stat(dir + "/stamp.txt"); err != nil {
		t.Errorf("build.before did not run in the project directory: %v", err)
	}
	// Same context, new spec: the plan reuses the live image, nothing is built.
	pl, err := executor.MakePlan(context.Background(), withBuild(r.config("v2", nil), "true"), r.eng, plan.PlanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ch := pl.Change("app"); ch.ImageID == "" || !hasStep(pl, string(plan.StepImage)) || hasStep(pl, string(plan.StepBuild)) {
		t.Errorf("unchanged context: the plan builds again: %+v", pl.Steps)
	}
	// A broken Dockerfile fails the build; live serves on.
	good, _ := os.ReadFile(dir + "/Dockerfile")
	os.WriteFile(dir+"/Dockerfile", []byte("FROM scratch\nCOPY no-such-file /x\n"), 0o644)
	if so := r.apply(withBuild(r.config("v3", nil), "true")); !strings.Contains(so.Error, "no-such-file") || r.get("/") != "version=v1" {
		t.Errorf("broken build: %q, serving %q", so.Error, r.get("/"))
	}
	os.WriteFile(dir+"/Dockerfile", good, 0o644)
	// A failing build.before says so with its output (the context changed, so a build is due).
	os.WriteFile(dir+"/VERSION", []byte("v4\n"), 0o644)
	p4 := withBuild(r.config("v4", nil), "sh", "-c", "echo compile error: missing semicolon >&2; exit 2")
	if so := r.apply(p4); !strings.Contains(so.Error, "build.before `sh -c") || !strings.Contains(so.Error, "missing semicolon") || r.get("/") != "version=v1" {
		t.Errorf("failing build.before: %q", so.Error)
	}
	if got := r.state(); got != "live:1:running" {
		t.Errorf("containers: %s", got)
	}
}

// The live image is reused only when a build would make the same one: a changed build arg is
// built with, and a new image name (a CI's tag for its commit) is built and tagged, never
// answered with the live image under a tag that does not exist (a new user found both).
func TestApplyBuildInputs(t *testing.T) {
	r := newRig(t)
	dir := t.TempDir()
	dockertest.AppContext(t, dir)
	df, err := os.ReadFile(filepath.Join(dir, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "Dockerfile"), append(df, "ARG FLAVOUR\nENV BUILT_FLAVOUR=$FLAVOUR\n"...), 0o644)
	withBuild := func(tag, flavour string) *config.Project {
		p := r.config("v1", nil)
		p.Dir = dir
		s := p.Services[0]
		s.Image = r.project + "-app:" + tag
		s.Build = config.NewBuild()
		s.Build.Args = map[string]string{"FLAVOUR": flavour}
		return p
	}
	flavour := func(tag string) string {
		env, err := r.eng.ImageEnv(context.Background(), r.project+"-app:"+tag)
		if err != nil {
			t.Fatalf("image %s: %v", tag, err)
		}
		return env["BUILT_FLAVOUR"]
	}
	builds := func(p *config.Project) bool {
		pl, err := executor.MakePlan(context.Background(), p, r.eng, plan.PlanOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return hasStep(pl, string(plan.StepBuild))
	}
	if so := r.apply(withBuild("a", "plain")); so.Error != "" || flavour("a") != "plain" {
		t.Fatalf("first build: %+v", so)
	}
	if builds(withBuild("a", "plain")) {
		t.Error("nothing changed, yet the plan builds")
	}
	// The same context, another arg: built again, with it.
	if !builds(withBuild("a", "spicy")) {
		t.Error("a changed build arg: the plan reuses the live image")
	}
	if so := r.apply(withBuild("a", "spicy")); so.Error != "" || flavour("a") != "spicy" {
		t.Errorf("a changed build arg: %+v, the image was built with %q", so, flavour("a"))
	}
	// The same context and args, another name: built (from the cache) and tagged.
	if !builds(withBuild("b", "spicy")) {
		t.Error("a new image name: the plan reuses the live image")
	}
	if so := r.apply(withBuild("b", "spicy")); so.Error != "" || flavour("b") != "spicy" {
		t.Errorf("a new image name: %+v", so)
	}
	if r.get("/") != "version=v1" {
		t.Errorf("serving %q", r.get("/"))
	}
}

// An app that ignores SIGTERM as PID 1 (a shell script) is killed after stop_timeout at every
// stop: the output says so and points at init = true, which makes it stop at once. Resources and
// log limits reach the engine, and every release carries them, a rolled-back one too.
func TestInitResourcesAndLog(t *testing.T) {
	r := newRig(t)
	shell := func(s *config.Service) {
		s.Env["APP_AS_SHELL"] = "1"
		s.Deploy.StopTimeout = 3 * time.Second
	}
	killed := func() bool {
		for _, e := range r.events {
			if e.Type == executor.EventWarning && strings.Contains(e.Detail, "did not stop within stop_timeout (3s) and was killed") && strings.Contains(e.Detail, "set init = true on service.app") {
				return true
			}
		}
		return false
	}
	for _, v := range []string{"v1", "v2"} {
		if so := r.apply(r.config(v, shell)); so.Error != "" {
			t.Fatal(so.Error)
		}
	}
	if !killed() {
		t.Error("no warning that the release was killed after stop_timeout")
	}
	limited := func(s *config.Service) {
		shell(s)
		s.Init = true
		s.Resources = &config.Resources{Memory: 64 << 20, CPUs: 0.5}
		s.Log = &config.Log{MaxSize: "1m", MaxFiles: 2}
	}
	for _, v := range []string{"v3", "v4"} {
		r.events = nil
		start := time.Now()
		if so := r.apply(r.config(v, limited)); so.Error != "" {
			t.Fatal(so.Error)
		}
		if v == "v4" && (killed() || time.Since(start) > 20*time.Second) {
			t.Errorf("with init = true the release was still killed (%s)", time.Since(start))
		}
	}
	check := func(what string) {
		ins, err := r.eng.Client().ContainerInspect(context.Background(), r.liveID())
		if err != nil {
			t.Fatal(err)
		}
		h := ins.HostConfig
		if h.Init == nil || !*h.Init || h.Memory != 64<<20 || h.NanoCPUs != 5e8 || h.LogConfig.Config["max-size"] != "1m" || h.LogConfig.Config["max-file"] != "2" {
			t.Errorf("%s: init %v, memory %d, cpus %d, log %+v", what, h.Init, h.Memory, h.NanoCPUs, h.LogConfig)
		}
	}
	check("live release 4")
	so, err := r.applier(r.config("v4", limited)).Rollback(context.Background(), "app", 3)
	if err != nil || so.Error != "" {
		t.Fatalf("rollback: %+v %v", so, err)
	}
	check("release 3, rolled back to")
}
