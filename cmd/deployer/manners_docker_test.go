package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/deployer-dev/deployer/executor/docker/dockertest"
	"github.com/deployer-dev/deployer/executor/plan"
)

// runSplit runs the deployer in the rig's directory and returns its stdout and stderr apart,
// and its exit code.
func (r *cliRig) runSplit(env []string, args ...string) (stdout, stderr string, code int) {
	r.t.Helper()
	cmd := exec.Command(deployerBin(r.t), args...)
	cmd.Dir = r.dir
	cmd.Env = append(os.Environ(), env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		r.t.Fatal(err)
	}
	return out.String(), errOut.String(), code
}

// lastLine is the last line of an output.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}

// Ctrl-C (SIGINT to the real binary) while the candidate is health-checked: the deployer says
// "interrupted" (never "context canceled"), exits 130, its last line names the live release,
// which keeps serving, and nothing is left over.
func TestInterruptSaysInterrupted(t *testing.T) {
	r := newCLIRig(t)
	if out, code := r.run(nil, "apply", "-auto-approve"); code != 0 {
		t.Fatalf("first deploy: %d\n%s", code, out)
	}
	cmd := exec.Command(deployerBin(t), "apply", "-auto-approve", "-var", "version=v2", "-var", "mode=slow")
	cmd.Dir = r.dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The slow candidate (it listens after 30 s) is being health-checked once it runs.
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(r.containers(), "candidate:2:running") {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("no running candidate within 60s: %s\n%s%s", r.containers(), stdout.String(), stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	start := time.Now()
	cmd.Process.Signal(os.Interrupt)
	err := cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 130 {
		t.Errorf("interrupted apply: %v, want exit 130\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("the interrupted apply took %s to stop", d)
	}
	if strings.Contains(stdout.String()+stderr.String(), "context canceled") {
		t.Errorf("says context canceled:\nstdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	}
	// The interrupted step (the health check, or under load the one before it) says so, and
	// nothing of the engine call it cut.
	if !regexp.MustCompile(`(?m)^  FAILED  app: check\.\S+ +[0-9.]+s  interrupted$`).MatchString(stdout.String()) {
		t.Errorf("the interrupted step does not say so on stdout:\n%s", stdout.String())
	}
	if !strings.Contains(stderr.String(), "\nInterrupted.\n") {
		t.Errorf("stderr does not say Interrupted:\n%s", stderr.String())
	}
	if last, want := lastLine(stderr.String()), "Live now: service.app release 1 ("+r.project+"-app, running)."; last != want {
		t.Errorf("last line %q, want %q", last, want)
	}
	r.expectOnlyV1("after Ctrl-C")
}

// expectOnlyV1 checks that release 1 (v1) serves, alone: no candidate or lock left.
func (r *cliRig) expectOnlyV1(when string) {
	r.t.Helper()
	if got := r.get("/"); got != "version=v1" {
		r.t.Errorf("%s the service answers %q", when, got)
	}
	if got := r.containers(); got != "live:1:running" {
		r.t.Errorf("%s: %s", when, got)
	}
}

// destroy through the real binary, with the proxy cutover: everything the deployer made goes
// (the releases, the proxy with its state, the network, the key, the lock), the data volume
// stays and the next deploy finds its data; with -delete-volumes a backup is taken and named
// first, and then nothing of the project is left on the engine.
func TestDestroy(t *testing.T) {
	r := newCLIRig(t)
	r.useProxy()
	for _, v := range []string{"v1", "v2"} {
		if out, code := r.run(nil, "apply", "-auto-approve", "-var", "version="+v); code != 0 {
			t.Fatalf("deploy %s: %d\n%s", v, code, out)
		}
	}
	before := dockertest.Objects(r.eng, r.project)
	for _, want := range []string{"container " + r.project + "-proxy", "network " + r.project + "-net", "volume " + r.project + "-proxy-state", "volume " + r.project + "-deployer-key"} {
		if !contains(before, want) {
			t.Fatalf("before destroy, no %s: %q", want, before)
		}
	}
	stdout, stderr, code := r.runSplit(nil, "destroy", "-auto-approve")
	if code != 0 || stderr != "" {
		t.Fatalf("destroy: %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	for _, want := range []string{"container " + r.project + "-proxy", "the project's proxy and its routes (running)", "release 2 of service.app (live, running)",
		"release 1 of service.app (previous, ", "volume " + r.project + "-proxy-state", "the proxy's routes", "  ok      proxy", "  ok      unlock"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("destroy's output lacks %q:\n%s", want, stdout)
		}
	}
	if got := dockertest.Objects(r.eng, r.project); strings.Join(got, ",") != "volume "+r.project+"-data" {
		t.Fatalf("after destroy the engine holds %q, want only the data volume", got)
	}
	if c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(r.port), time.Second); err == nil {
		c.Close()
		t.Errorf("the host port %d still answers after destroy", r.port)
	}
	if out, code := r.run(nil, "apply", "-auto-approve", "-var", "version=v3"); code != 0 {
		t.Fatalf("deploy after destroy: %d\n%s", code, out)
	}
	if h := r.get("/history"); !strings.Contains(h, "started v1") || !strings.Contains(h, "started v3") {
		t.Errorf("the data volume lost its data: %q", h)
	}

	stdout, stderr, code = r.runSplit(nil, "destroy", "-auto-approve", "-delete-volumes")
	m := regexp.MustCompile(`(?m)^Backed up: backup (\S+) of service.app \(` + r.project + `-data\) in (.*)\.$`).FindStringSubmatch(stdout)
	if code != 0 || m == nil {
		t.Fatalf("destroy -delete-volumes: %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if got := dockertest.Objects(r.eng, r.project); len(got) != 0 {
		t.Errorf("after destroy -delete-volumes the engine holds %q", got)
	}
	if _, err := os.Stat(filepath.Join(m[2], r.project, "app", m[1], "manifest.json")); err != nil {
		t.Errorf("the backup named is not in the store: %v", err)
	}
}

// A host port held by a plain process (a listener of this test) after a plan was saved: the
// apply of that plan stops before any candidate is created, says so on stderr, and its last
// line says what is live; a new plan says so too.
func TestPortHeldOutsideDocker(t *testing.T) {
	r := newCLIRig(t)
	if out, code := r.run(nil, "plan", "-out", "p.plan"); code != 0 {
		t.Fatalf("plan -out: %d\n%s", code, out)
	}
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(r.port))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var created []string
	stop := watchCreates(t, r, &created)
	stdout, stderr, code := r.runSplit(nil, "apply", "p.plan")
	stop()
	want := "host port " + strconv.Itoa(r.port) + " of service.app is held by a process outside Docker"
	if code != 1 || !strings.Contains(stderr, "Error: "+want) {
		t.Errorf("apply of the saved plan: %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if len(created) > 0 {
		t.Errorf("created before the port was checked: %q", created)
	}
	if last := lastLine(stderr); last != "Live now: nothing of service.app." {
		t.Errorf("last line %q", last)
	}
	stdout, stderr, code = r.runSplit(nil, "plan")
	if code != 1 || stdout != "" || !strings.Contains(stderr, want) {
		t.Errorf("plan with the port held: %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
}

// watchCreates records the names of the project's containers seen while an apply runs, until
// stop is called.
func watchCreates(t *testing.T, r *cliRig, names *[]string) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			if obs, err := plan.Observe(ctx, r.eng, projectOnly(r.project)); err == nil {
				for _, c := range obs.All {
					if c.Role() != plan.RoleLock && !contains(*names, c.Name) {
						*names = append(*names, c.Name)
					}
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	return func() { cancel(); <-done }
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
