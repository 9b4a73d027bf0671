package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/deployer-dev/deployer/executor"
	"github.com/deployer-dev/deployer/executor/docker/dockertest"
	"github.com/deployer-dev/deployer/executor/plan"
)

// takeoverRig is a service that `docker run` made, with the configuration that takes it over.
func takeoverRig(t *testing.T) *cliRig {
	r := newCLIRig(t)
	ctx := context.Background()
	name := r.project + "-mg"
	cfg, _ := os.ReadFile(filepath.Join(r.dir, "deployer.hcl"))
	os.WriteFile(filepath.Join(r.dir, "deployer.hcl"), []byte(strings.Replace(string(cfg), "service \"app\" {", "service \"app\" {\n  container_name = \""+name+"\"", 1)), 0o644)
	id, err := r.eng.CreateContainer(ctx, executor.ContainerSpec{Name: name, Image: dockertest.AppImage(t, r.eng),
		Env:     map[string]string{"APP_VERSION": "seed", "APP_DATA": "/data"},
		Ports:   []executor.PortBinding{{Container: 8080, HostPort: r.port}},
		Volumes: []executor.VolumeMount{{Name: r.project + "-data", Target: "/data"}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.eng.RemoveContainer(context.Background(), id) })
	r.eng.StartContainer(ctx, id)
	dockertest.WaitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/health", r.port))
	return r
}

// A takeover killed at any point converges on the next apply: the container it took over is
// back in service or kept as the previous release, its data is where it was, and nothing is
// left that the next plan does not explain.
func TestCrashDuringTakeover(t *testing.T) {
	points := takeoverRig(t).killPoints()
	t.Logf("kill points: %s", strings.Join(points, " "))
	for _, point := range points {
		t.Run(point, func(t *testing.T) {
			r := takeoverRig(t)
			ctx := context.Background()
			name := r.project + "-mg"

			out, code := r.run([]string{"DEPLOYER_TEST_KILL_AT=" + point}, "apply", "-auto-approve")
			if code != -int(syscall.SIGKILL) {
				t.Fatalf("not killed at %s (exit %d):\n%s", point, code, out)
			}
			pl, code := r.run(nil, "plan")
			if code != 0 {
				t.Fatalf("plan after the crash: %d\n%s", code, pl)
			}
			out, code = r.run(nil, "apply", "-auto-approve")
			if code != 0 || r.get("/") != "version=v1" {
				t.Fatalf("apply after the crash at %s: %d\nplan:\n%s\napply:\n%s\ncontainers: %s", point, code, pl, out, r.containers())
			}
			if h := r.get("/history"); !strings.Contains(h, "started seed") {
				t.Errorf("the taken-over service's data: %q", h)
			}
			obs, _ := plan.Observe(ctx, r.eng, projectOnly(r.project))
			st := obs.Services["app"]
			if len(st.Previous) != 1 || st.Previous[0].Labels[plan.LabelTakenOver] == "" {
				t.Errorf("the taken-over container is not kept as the previous release: %s", r.containers())
			}
			all, _ := r.eng.AllContainers(ctx)
			for _, c := range all {
				if strings.HasPrefix(c.Name, name) && c.Labels[plan.LabelProject] == "" {
					t.Errorf("%s is left without the deployer's labels", c.Name)
				}
			}
			if out, code := r.run(nil, "plan", "-detailed-exitcode"); code != 0 {
				t.Errorf("plan after converging: %d\n%s", code, out)
			}
		})
	}
}

// A takeover with the proxy cutover killed once the container taken over stopped and gave the
// host port to the proxy (cutover.switched, cutover.set-aside): the new release serves through
// the proxy meanwhile, and the next apply gives the port back to the container taken over,
// starts it and takes it over again, with its data.
func TestCrashDuringProxyTakeover(t *testing.T) {
	for _, point := range []string{plan.PointCutoverSwitched, plan.PointCutoverSetAside} {
		t.Run(point, func(t *testing.T) {
			r := takeoverRig(t)
			r.useProxy()
			if points := r.killPoints(); !slices.Contains(points, point) {
				t.Fatalf("the kill points of the takeover, %q, lack %s", points, point)
			}
			out, code := r.run([]string{"DEPLOYER_TEST_KILL_AT=" + point}, "apply", "-auto-approve")
			if code != -int(syscall.SIGKILL) {
				t.Fatalf("not killed at %s (exit %d):\n%s", point, code, out)
			}
			if got := r.get("/"); got != "version=v1" && got != "version=seed" {
				t.Errorf("after the kill at %s, nothing serves: %q, %s", point, got, r.containers())
			}
			pl, code := r.run(nil, "plan")
			if code != 0 {
				t.Fatalf("plan after the crash: %d\n%s", code, pl)
			}
			out, code = r.run(nil, "apply", "-auto-approve")
			if code != 0 || r.get("/") != "version=v1" {
				t.Fatalf("apply after the crash at %s: %d\nplan:\n%s\napply:\n%s\ncontainers: %s", point, code, pl, out, r.containers())
			}
			if h := r.get("/history"); !strings.Contains(h, "started seed") {
				t.Errorf("the taken-over service's data: %q", h)
			}
			obs, _ := plan.Observe(context.Background(), r.eng, projectOnly(r.project))
			if st := obs.Services["app"]; len(st.Previous) != 1 || st.Previous[0].Labels[plan.LabelTakenOver] == "" {
				t.Errorf("the taken-over container is not kept as the previous release: %s", r.containers())
			}
			if out, code := r.run(nil, "plan", "-detailed-exitcode"); code != 0 {
				t.Errorf("plan after converging: %d\n%s", code, out)
			}
		})
	}
}
