package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/deployer-dev/deployer/executor"
	"github.com/deployer-dev/deployer/executor/docker"
	"github.com/deployer-dev/deployer/executor/docker/dockertest"
	"github.com/deployer-dev/deployer/executor/plan"
	"github.com/deployer-dev/deployer/hclspec"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// deployerBin builds the deployer once for the tests that run it as a separate process (to kill
// it, interrupt it, or run two at once).
func deployerBin(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "deployer-bin")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "deployer")
		build := exec.Command("go", "build", "-o", binPath, ".")
		build.Env = append(os.Environ(), "CGO_ENABLED=0") // static, as releases are: restore's helper runs it FROM scratch
		out, err := build.CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("%v: %s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// cliRig is a configuration directory for the test app, deployed with the real binary.
type cliRig struct {
	t       testing.TB
	eng     *docker.Engine
	dir     string
	project string
	port    int
}

const cliConfig = `
project = %q

variable "version" { default = "v1" }
variable "mode" { default = "healthy" }

service "app" {
  image = %q
  env = {
    APP_VERSION     = var.version
    APP_MODE        = var.mode
    APP_DATA        = "/data"
    APP_START_DELAY = "30s"
  }
  port {
    container = 8080
    host      = %d
  }
  volume "%s-data" { target = "/data" }
  health_check {
    path     = "/health"
    interval = "100ms"
    deadline = "20s"
  }
  hook "before_cutover" {
    command = ["exit", "0"]
  }
  deploy {
    stop_timeout  = "2s"
    keep_releases = 2
  }
}
`

func newCLIRig(t testing.TB) *cliRig {
	eng := dockertest.Engine(t)
	r := &cliRig{t: t, eng: eng, dir: t.TempDir(), project: dockertest.Project(t, eng), port: dockertest.FreePort(t)}
	image := dockertest.AppImage(t, eng)
	cfg := fmt.Sprintf(cliConfig, r.project, image, r.port, r.project)
	if err := os.WriteFile(filepath.Join(r.dir, "deployer.hcl"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return r
}

// killPoints are the kill points of the plan apply would run with these -var NAME=VALUE.
func (r *cliRig) killPoints(vars ...string) []string {
	r.t.Helper()
	opts := hclspec.Options{Dir: r.dir, Env: os.Environ()}
	for _, v := range vars {
		name, value, _ := strings.Cut(v, "=")
		opts.Vars = append(opts.Vars, hclspec.VarArg{Name: name, Value: value})
	}
	res, diags := hclspec.Load(opts)
	if diags.HasErrors() {
		r.t.Fatal(diags)
	}
	pl, err := executor.MakePlan(context.Background(), res.Project, r.eng, plan.PlanOptions{})
	if err != nil {
		r.t.Fatal(err)
	}
	return plan.KillPoints(res.Project, pl)
}

// run runs the deployer in the rig's directory and returns its combined output and exit code.
func (r *cliRig) run(env []string, args ...string) (string, int) {
	r.t.Helper()
	return r.runWith(deployerBin(r.t), env, args...)
}

// runWith is run with another build of the deployer.
func (r *cliRig) runWith(bin string, env []string, args ...string) (string, int) {
	r.t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = r.dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = -int(ws.Signal())
		}
	} else if err != nil {
		r.t.Fatal(err)
	}
	return string(out), code
}

func (r *cliRig) get(path string) string {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d%s", r.port, path))
	if err != nil {
		return "error: " + err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b))
}

// containers lists the project's containers as role:release:state, newest release first.
func (r *cliRig) containers() string {
	obs, err := plan.Observe(context.Background(), r.eng, projectOnly(r.project))
	if err != nil {
		r.t.Fatal(err)
	}
	var parts []string
	for _, c := range obs.All {
		parts = append(parts, fmt.Sprintf("%s:%d:%s", c.Role(), c.Release(), c.State))
	}
	return strings.Join(parts, " ")
}

// Kill the deployer with SIGKILL at every step of a deploy, and inside the cutover: the next
// plan shows what is left, and the next apply converges without losing data or leaving the
// service down.
// The kill points are the plan's (executor.KillPoints).
func TestCrashAtEveryStep(t *testing.T) {
	crashAtEveryStep(t, "restart")
}

// The same through the proxy cutover, with its own points: the proxy set up, the route switched
// before the renames, the drain.
func TestCrashAtEveryStepProxy(t *testing.T) {
	crashAtEveryStep(t, "proxy")
}

func crashAtEveryStep(t *testing.T, cutover string) {
	r := newCLIRig(t)
	if cutover == "proxy" {
		r.useProxy()
	}
	if out, code := r.run(nil, "apply", "-auto-approve"); code != 0 {
		t.Fatalf("first deploy: %d\n%s", code, out)
	}
	points := r.killPoints("version=v2")
	t.Logf("kill points: %s", strings.Join(points, " "))
	for i, point := range points {
		version := fmt.Sprintf("v%d", i+2)
		t.Run(point, func(t *testing.T) {
			out, code := r.run([]string{"DEPLOYER_TEST_KILL_AT=" + point}, "apply", "-auto-approve", "-var", "version="+version)
			if code != -int(syscall.SIGKILL) {
				t.Fatalf("the deployer was not killed at %s (exit %d):\n%s", point, code, out)
			}
			pl, code := r.run(nil, "plan", "-var", "version="+version)
			if code != 0 {
				t.Fatalf("plan after the crash: exit %d\n%s", code, pl)
			}
			out, code = r.run(nil, "apply", "-auto-approve", "-var", "version="+version)
			if code != 0 {
				t.Fatalf("apply after the crash at %s: exit %d\nplan:\n%s\napply:\n%s\ncontainers: %s", point, code, pl, out, r.containers())
			}
			if got := r.get("/"); got != "version="+version {
				t.Fatalf("serving %q after converging, want %s", got, version)
			}
			hist := r.get("/history")
			for j := 1; j < i+2; j++ {
				if !strings.Contains(hist, fmt.Sprintf("started v%d\n", j)) {
					t.Errorf("the data volume lost history of v%d: %q", j, hist)
				}
			}
			// Nothing left over: one live release, previous ones within keep_releases, no
			// candidate, no lock, no stray containers.
			obs, _ := plan.Observe(context.Background(), r.eng, projectOnly(r.project))
			st := obs.Services["app"]
			if obs.Lock != nil || len(st.Candidates) > 0 || len(st.Others) > 0 || len(st.Previous) > 2 || !st.Live.Running() {
				t.Errorf("left over: %s", r.containers())
			}
			// The apply after converging has nothing to do.
			if out, code := r.run(nil, "plan", "-detailed-exitcode", "-var", "version="+version); code != 0 {
				t.Errorf("plan after converging: exit %d\n%s", code, out)
			}
		})
	}
}

// Kill the deployer at every point of a resume (a stopped live release started again) and of
// its verification, through either cutover: the next plan starts or checks the release, and
// the next apply verifies it before calling it live, which then bears its live name again.
func TestCrashWhileResuming(t *testing.T) {
	for _, cutover := range []string{"restart", "proxy"} {
		t.Run(cutover, func(t *testing.T) {
			r := newCLIRig(t)
			if cutover == "proxy" {
				r.useProxy()
			}
			if out, code := r.run(nil, "apply", "-auto-approve"); code != 0 {
				t.Fatalf("first deploy: %d\n%s", code, out)
			}
			ctx := context.Background()
			live := func() *executor.Container {
				obs, err := plan.Observe(ctx, r.eng, projectOnly(r.project))
				if err != nil || obs.Services["app"] == nil || obs.Services["app"].Live == nil {
					t.Fatalf("no live release: %v %s", err, r.containers())
				}
				return obs.Services["app"].Live
			}
			for _, point := range plan.ResumePoints {
				t.Run(point, func(t *testing.T) {
					if err := r.eng.StopContainer(ctx, live().ID, time.Second); err != nil {
						t.Fatal(err)
					}
					if points := r.killPoints(); !slices.Contains(points, point) {
						t.Fatalf("the kill points of a resume, %q, lack %s", points, point)
					}
					out, code := r.run([]string{"DEPLOYER_TEST_KILL_AT=" + point}, "apply", "-auto-approve")
					if code != -int(syscall.SIGKILL) {
						t.Fatalf("the deployer was not killed at %s (exit %d):\n%s", point, code, out)
					}
					pl, code := r.run(nil, "plan", "-detailed-exitcode")
					if code != 2 || !regexp.MustCompile(`service\.app will be (started|health-checked)`).MatchString(pl) {
						t.Errorf("plan after the crash at %s: exit %d, want the release started or checked\n%s", point, code, pl)
					}
					out, code = r.run(nil, "apply", "-auto-approve")
					if code != 0 || !regexp.MustCompile(`(?s)app: resume.*app: verify`).MatchString(out) {
						t.Fatalf("apply after the crash at %s: exit %d, want it to verify the release again\n%s\ncontainers: %s", point, code, out, r.containers())
					}
					if got := r.get("/"); got != "version=v1" {
						t.Errorf("serving %q after converging", got)
					}
					if l := live(); l.Name != r.project+"-app" || !l.Running() {
						t.Errorf("the live release after converging: %s (%s)", l.Name, l.State)
					}
					if out, code := r.run(nil, "plan", "-detailed-exitcode"); code != 0 {
						t.Errorf("plan after converging: exit %d\n%s", code, out)
					}
				})
			}
		})
	}
}

// useProxy switches the rig to the proxy cutover, with a fixed candidate port as users write it
// (the seed's green is on 8081).
func (r *cliRig) useProxy() {
	cfg, _ := os.ReadFile(filepath.Join(r.dir, "deployer.hcl"))
	s := strings.Replace(string(cfg), "  deploy {", "  deploy {\n    cutover = \"proxy\"\n    drain   = \"1s\"", 1)
	s = strings.Replace(s, fmt.Sprintf("    host      = %d\n", r.port), fmt.Sprintf("    host      = %d\n    candidate = %d\n", r.port, dockertest.FreePort(r.t)), 1)
	os.WriteFile(filepath.Join(r.dir, "deployer.hcl"), []byte(s), 0o644)
}

// Kill the deployer at each point of an upgrade of the proxy (a new deployer version replaces
// the proxy container during an apply): the next apply, by the same new version, finishes or
// restarts the upgrade, and one proxy of the new version serves.
func TestCrashDuringProxyUpgrade(t *testing.T) {
	r := newCLIRig(t)
	r.useProxy()
	builds := []string{deployerBin(t), filepath.Join(t.TempDir(), "deployer")}
	build := exec.Command("go", "build", "-ldflags", "-X main.version=upgrade-test", "-o", builds[1], ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if out, code := r.run(nil, "apply", "-auto-approve"); code != 0 {
		t.Fatalf("first deploy: %d\n%s", code, out)
	}
	for i, point := range plan.ProxyUpgradePoints {
		bin := builds[(i+1)%2] // another build than the one whose proxy runs
		version := fmt.Sprintf("v%d", i+2)
		t.Run(point, func(t *testing.T) {
			obs, _ := plan.Observe(context.Background(), r.eng, projectOnly(r.project))
			before := obs.Proxy.ImageID
			out, code := r.runWith(bin, []string{"DEPLOYER_TEST_KILL_AT=" + point}, "apply", "-auto-approve", "-var", "version="+version)
			if code != -int(syscall.SIGKILL) {
				t.Fatalf("the deployer was not killed at %s (exit %d):\n%s", point, code, out)
			}
			if pl, code := r.runWith(bin, nil, "plan", "-var", "version="+version); code != 0 || !strings.Contains(pl, "proxy") {
				t.Errorf("plan after the crash: exit %d\n%s", code, pl)
			}
			out, code = r.runWith(bin, nil, "apply", "-auto-approve", "-var", "version="+version)
			if code != 0 {
				t.Fatalf("apply after the crash at %s: exit %d\n%s\ncontainers: %s", point, code, out, r.containers())
			}
			if got := r.get("/"); got != "version="+version {
				t.Errorf("serving %q after converging, want %s", got, version)
			}
			obs, _ = plan.Observe(context.Background(), r.eng, projectOnly(r.project))
			proxies := 0
			for _, c := range obs.All {
				if c.Role() == plan.RoleProxy {
					proxies++
				}
			}
			if proxies != 1 || obs.Proxy.Name != plan.ProxyName(r.project) || !obs.Proxy.Running() || obs.Proxy.ImageID == before {
				t.Errorf("want one upgraded proxy named %s, running: %s (proxy %+v)", plan.ProxyName(r.project), r.containers(), obs.Proxy)
			}
			if out, code := r.runWith(bin, nil, "plan", "-detailed-exitcode", "-var", "version="+version); code != 0 {
				t.Errorf("plan after converging: exit %d\n%s", code, out)
			}
		})
	}
}

// readEvents starts the deployer with -json and returns a channel of its events.
func startJSON(t *testing.T, r *cliRig, args ...string) (*exec.Cmd, <-chan executor.Event, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(deployerBin(t), args...)
	cmd.Dir = r.dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	events := make(chan executor.Event, 100)
	go func() {
		defer close(events)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var e executor.Event
			if json.Unmarshal(sc.Bytes(), &e) == nil {
				events <- e
			}
		}
	}()
	return cmd, events, &stderr
}

// waitFor reads events until one matches, failing after a timeout.
func waitFor(t *testing.T, events <-chan executor.Event, what string, match func(executor.Event) bool) {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case e, ok := <-events:
			if !ok {
				t.Fatalf("the deployer ended before %s", what)
			}
			if match(e) {
				return
			}
		case <-timeout:
			t.Fatalf("no %s within 30s", what)
		}
	}
}

// Ctrl-C while the candidate is checked: the live release keeps serving, the candidate is
// removed, the lock is released, and a second apply meanwhile is refused at once. (Its words
// are TestInterruptSaysInterrupted's.)
func TestInterruptAndConcurrentApply(t *testing.T) {
	r := newCLIRig(t)
	if out, code := r.run(nil, "apply", "-auto-approve"); code != 0 {
		t.Fatalf("first deploy: %d\n%s", code, out)
	}
	cmd, events, stderr := startJSON(t, r, "apply", "-auto-approve", "-json", "-var", "version=v2", "-var", "mode=slow")
	waitFor(t, events, "the health check of the slow candidate", func(e executor.Event) bool {
		return e.Step == string(plan.StepHealth) && e.Phase == "start"
	})

	out, code := r.run(nil, "apply", "-auto-approve", "-var", "version=v3")
	if code != 1 || !strings.Contains(out, "is held by") || !strings.Contains(out, "pid ") {
		t.Errorf("a second apply during the first: exit %d\n%s", code, out)
	}

	start := time.Now()
	cmd.Process.Signal(os.Interrupt)
	for range events {
	}
	err := cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 130 {
		t.Errorf("interrupted apply: %v, want exit 130 (stderr %s)", err, stderr)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the interrupted apply took %s to stop", d)
	}
	r.expectOnlyV1("after Ctrl-C")
}

func TestApplyCLIBehaviour(t *testing.T) {
	r := newCLIRig(t)

	// No terminal and no -auto-approve: refuse, do nothing.
	out, code := r.run(nil, "apply")
	if code != 1 || !strings.Contains(out, "apply these changes needs confirmation") || r.containers() != "" {
		t.Fatalf("apply without a terminal: exit %d\n%s", code, out)
	}

	// Without a terminal, one line per step with its duration, and a last line saying what is live.
	out, code = r.run(nil, "apply", "-auto-approve")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, out)
	}
	for _, want := range []string{"  ok      app: candidate", "  ok      app: check.health", "  ok      app: start", "  ok      unlock"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, "service.app: release 1 live (image ") {
		t.Errorf("last line: %q", last)
	}

	// A failed deploy exits 1 and says what failed and what still runs.
	out, code = r.run(nil, "apply", "-auto-approve", "-var", "version=v2", "-var", "mode=unhealthy")
	lines = strings.Split(strings.TrimSpace(out), "\n")
	if code != 1 || !strings.Contains(out, "db locked") || !strings.Contains(out, "release 1 (") {
		t.Errorf("failed deploy: exit %d\n%s", code, out)
	}

	// -json: one event per line, each with the format version; the result is last.
	out, code = r.run(nil, "apply", "-auto-approve", "-json", "-var", "version=v2")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, out)
	}
	var last executor.Event
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var e executor.Event
		if err := json.Unmarshal([]byte(line), &e); err != nil || e.FormatVersion != "1" {
			t.Fatalf("not a JSON event: %q", line)
		}
		last = e
	}
	if last.Type != executor.EventStep || last.Step != string(plan.StepUnlock) {
		t.Errorf("last event: %+v", last)
	}

	// A saved plan is applied only while nothing changed.
	if out, code := r.run(nil, "plan", "-out", "v3.plan", "-var", "version=v3"); code != 0 {
		t.Fatalf("plan -out: %s", out)
	}
	if out, code := r.run(nil, "plan", "-out", "v3b.plan", "-var", "version=v3"); code != 0 {
		t.Fatalf("plan -out: %s", out)
	}
	os.WriteFile(filepath.Join(r.dir, "extra.auto.vars.hcl"), []byte("mode = \"healthy\"\n# changed\n"), 0o644)
	cfg, _ := os.ReadFile(filepath.Join(r.dir, "deployer.hcl"))
	os.WriteFile(filepath.Join(r.dir, "deployer.hcl"), bytes.Replace(cfg, []byte(`interval = "100ms"`), []byte(`interval = "200ms"`), 1), 0o644)
	out, code = r.run(nil, "apply", "v3.plan")
	if code != 1 || !strings.Contains(out, "plan v3.plan is stale: the configuration") {
		t.Errorf("stale configuration: exit %d\n%s", code, out)
	}
	os.WriteFile(filepath.Join(r.dir, "deployer.hcl"), cfg, 0o644)
	obs, _ := plan.Observe(context.Background(), r.eng, projectOnly(r.project))
	r.eng.StopContainer(context.Background(), obs.Services["app"].Live.ID, time.Second)
	out, code = r.run(nil, "apply", "v3b.plan")
	if code != 1 || !strings.Contains(out, "plan v3b.plan is stale: what runs on") {
		t.Errorf("stale state: exit %d\n%s", code, out)
	}
	// The next apply starts the stopped release first, then deploys.
	if out, code := r.run(nil, "plan", "-out", "v3c.plan", "-var", "version=v3"); code != 0 {
		t.Fatalf("plan -out: %s", out)
	}
	out, code = r.run(nil, "apply", "v3c.plan")
	if code != 0 || r.get("/") != "version=v3" || !strings.Contains(out, "app: resume") {
		t.Errorf("apply of a fresh plan: exit %d\n%s", code, out)
	}

	// releases and status.
	out, code = r.run(nil, "releases", "service.app")
	if code != 0 || !strings.Contains(out, "RELEASE") || !strings.Contains(out, "live") || !strings.Contains(out, "previous") {
		t.Errorf("releases: %d\n%s", code, out)
	}
	out, code = r.run(nil, "status")
	if code != 0 || !strings.Contains(out, "health    healthy") {
		t.Errorf("status: %d\n%s", code, out)
	}
	out, code = r.run(nil, "rollback", "service.app", "-to", "99")
	if code != 1 || !strings.Contains(out, "release 99 of service.app is not kept on this host; kept: ") {
		t.Errorf("rollback to a release that is gone: %d\n%s", code, out)
	}
	out, code = r.run(nil, "unlock")
	if code != 1 || !strings.Contains(out, "pass -force") {
		t.Errorf("unlock without -force: %d\n%s", code, out)
	}
	out, code = r.run(nil, "unlock", "-force")
	if code != 0 || !strings.Contains(out, "was not held") {
		t.Errorf("unlock: %d\n%s", code, out)
	}
}
