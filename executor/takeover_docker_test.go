package executor_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/network"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor"
	"github.com/deployer-dev/deployer/executor/docker/dockertest"
	"github.com/deployer-dev/deployer/executor/plan"
)

// takeoverPlan plans p and checks that it takes over the container name, as the plan says it.
func (r *rig) takeoverPlan(p *config.Project, name, made string) *plan.Plan {
	r.t.Helper()
	pl, err := executor.MakePlan(context.Background(), p, r.eng, plan.PlanOptions{})
	if err != nil {
		r.t.Fatal(err)
	}
	ch := pl.Change("app")
	if ch.Action != plan.ActionTakeover || ch.Takeover == nil || ch.Takeover.Name != name || ch.Takeover.Made != made || pl.Summary.TakeOver != 1 {
		r.t.Fatalf("plan: %+v %+v", ch, ch.Takeover)
	}
	var text strings.Builder
	pl.WriteText(&text, plan.RenderOptions{})
	for _, want := range []string{"will be taken over (container " + name + " -> release 2)", "made by    " + made, fmt.Sprintf("ports      %d->8080", r.port), "1 to take over"} {
		if !strings.Contains(text.String(), want) {
			r.t.Errorf("plan text lacks %q:\n%s", want, text.String())
		}
	}
	return pl
}

// A service started by the seed's shell steps (`docker run -d --name ... -p 8080:5000 -v
// manual_instance:/app/instance ...`) is taken over by the first apply, in both cutovers: its
// data volume is backed up first and kept, the new release replaces it blue-green, and it is
// kept as release 1 with the deployer's labels, so that a rollback returns to it.
func TestTakeOverDockerRun(t *testing.T) {
	for _, cutover := range []string{"restart", "proxy"} {
		t.Run(cutover, func(t *testing.T) {
			r := newRig(t)
			ctx := context.Background()
			name := r.project + "-mg"
			id, err := r.eng.CreateContainer(ctx, executor.ContainerSpec{Name: name, Image: r.image, Restart: "always",
				Env:     map[string]string{"APP_VERSION": "seed", "APP_DATA": "/data"},
				Ports:   []executor.PortBinding{{Container: 8080, HostPort: r.port}},
				Volumes: []executor.VolumeMount{{Name: r.project + "-data", Target: "/data"}}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { r.eng.RemoveContainer(context.Background(), id) })
			if err := r.eng.StartContainer(ctx, id); err != nil {
				t.Fatal(err)
			}
			dockertest.WaitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/health", r.port))
			store := localStore(t)
			mod := func(s *config.Service) {
				s.ContainerName = name
				s.SQLite = nil
				if cutover == "proxy" {
					s.Deploy.Cutover = "proxy"
					s.Ports[0].Candidate = dockertest.FreePort(t)
				}
			}
			if cutover == "proxy" {
				r.self = staticDeployer(t)
			}
			p := r.configWithStore("v1", store, mod)
			pl := r.takeoverPlan(p, name, "docker run")
			var so *executor.ServiceOutcome
			if cutover == "restart" {
				// Through a saved plan, as `plan -out` then `apply PLANFILE` do: the file keeps
				// no spec of the container (its raw environment), and apply reads it again.
				path := filepath.Join(t.TempDir(), "plan.json")
				if err := plan.WritePlanFile(path, &plan.SavedPlan{Plan: pl}); err != nil {
					t.Fatal(err)
				}
				saved, err := plan.ReadPlanFile(path)
				if err != nil {
					t.Fatal(err)
				}
				out, err := r.applier(p).Apply(ctx, saved.Plan)
				if err != nil || len(out.Services) != 1 {
					t.Fatalf("apply of the saved plan: %+v %v", out, err)
				}
				so = out.Services[0]
			} else {
				so = r.apply(p)
			}
			if so.Error != "" || so.Release != 2 {
				t.Fatalf("apply: %+v", so)
			}
			if got := r.get("/"); got != "version=v1" {
				t.Fatalf("serving %q", got)
			}
			want := "previous:1:created live:2:running"
			if cutover == "proxy" {
				want = "proxy:0:running " + want
			}
			if got := r.state(); got != want {
				t.Errorf("containers: %s", got)
			}
			// The data volume is the one it used: both wrote to its history.
			if h := r.get("/history"); !strings.Contains(h, "started seed") || !strings.Contains(h, "started v1") {
				t.Errorf("history: %q", h)
			}
			// Its data was backed up before the cutover, as release 1.
			if l := r.backups(store, mod, ""); len(l.Complete) != 1 || l.Complete[0].Release != 1 {
				t.Errorf("backups: %+v", l)
			}
			obs, _ := plan.Observe(ctx, r.eng, projectOnly(r.project))
			prev := obs.Services["app"].Previous[0]
			if prev.Name != name+"-r1" || prev.Labels[plan.LabelTakenOver] != "docker run" {
				t.Errorf("the previous release: %s %v", prev.Name, prev.Labels)
			}
			// It records what it ran, for the diff of a later plan (a saved plan too).
			if doc := prev.Labels[plan.LabelSpecDoc]; !strings.Contains(doc, `"image"`) || !strings.Contains(doc, "APP_VERSION") {
				t.Errorf("the taken-over release's spec doc: %q", doc)
			}
			if cutover == "proxy" {
				warned := false
				for _, e := range r.events {
					warned = warned || strings.Contains(e.Detail, "the container being taken over ("+name+") publishes the host port itself")
				}
				if !warned {
					t.Error("the one-time window is not announced")
				}
			}
			// deployer rollback returns to it.
			back, err := r.applier(p).Rollback(ctx, "app", 1)
			if err != nil || back.Error != "" || r.get("/") != "version=seed" {
				t.Fatalf("rollback to the taken-over release: %+v %v, serving %q", back, err, r.get("/"))
			}
			// And the service deploys on from there.
			if so := r.apply(r.configWithStore("v2", store, mod)); so.Error != "" || r.get("/") != "version=v2" {
				t.Fatalf("apply after the rollback: %+v", so)
			}
		})
	}
}

// A service started by `docker-compose up -d` whose volume compose named after its project is
// refused until the configuration names that volume (saying what to write); then it is taken
// over, kept without compose's labels, and rolled back to.
func TestTakeOverCompose(t *testing.T) {
	compose, err := exec.LookPath("docker-compose")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("CI has docker-compose (.ci/run installs it)")
		}
		t.Skip("no docker-compose")
	}
	r := newRig(t)
	ctx := context.Background()
	name := r.project + "-mg"
	cp := strings.ReplaceAll(r.project, "-", "") + "c" // compose's project name
	dir := t.TempDir()
	yml := fmt.Sprintf(`version: "3"
services:
  manual:
    image: %s
    container_name: %s
    restart: unless-stopped
    environment:
      APP_VERSION: compose
      APP_DATA: /data
    ports:
      - "%d:8080"
    volumes:
      - instance:/data
volumes:
  instance: {}
`, r.image, name, r.port)
	os.WriteFile(filepath.Join(dir, "docker-compose.yml"), []byte(yml), 0o644)
	up := exec.Command(compose, "-p", cp, "up", "-d", "manual")
	up.Dir = dir
	if out, err := up.CombinedOutput(); err != nil {
		t.Fatalf("docker-compose up: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		c := context.Background()
		r.eng.RemoveContainer(c, name)
		all, _ := r.eng.AllContainers(c)
		for _, x := range all {
			if strings.HasPrefix(x.Name, name) {
				r.eng.RemoveContainer(c, x.ID)
			}
		}
		r.eng.Client().NetworkRemove(c, cp+"_default")
		r.eng.Client().VolumeRemove(c, cp+"_instance", true)
	})
	dockertest.WaitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/health", r.port))
	wrong := func(s *config.Service) { s.ContainerName = name }
	_, err = executor.MakePlan(ctx, r.config("v1", wrong), r.eng, plan.PlanOptions{})
	want := fmt.Sprintf(`it mounts volume "%s_instance" at /data, where the configuration mounts "%s-data": to keep its data, write volume "%s_instance" { target = "/data" }`, cp, r.project, cp)
	if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "nothing was changed") {
		t.Fatalf("plan with compose's volume under another name: %v", err)
	}
	right := func(s *config.Service) {
		s.ContainerName = name
		s.Volumes = []*config.Volume{{Name: cp + "_instance", Target: "/data"}}
	}
	p := r.config("v1", right)
	r.takeoverPlan(p, name, fmt.Sprintf("docker-compose project %q service %q", cp, "manual"))
	if so := r.apply(p); so.Error != "" || so.Release != 2 || r.get("/") != "version=v1" {
		t.Fatalf("apply: %+v, serving %q", so, r.get("/"))
	}
	if h := r.get("/history"); !strings.Contains(h, "started compose") {
		t.Errorf("the compose service's data is not there: %q", h)
	}
	prev, err := r.eng.Inspect(ctx, name+"-r1")
	if err != nil {
		t.Fatal(err)
	}
	for k := range prev.Spec.Labels {
		if strings.HasPrefix(k, "com.docker.compose.") {
			t.Errorf("the kept release still has compose's label %s", k)
		}
	}
	if prev.Spec.Restart != "" && prev.Spec.Restart != "no" {
		t.Errorf("the kept release restarts by itself: %q", prev.Spec.Restart)
	}
	if _, err := r.eng.Client().NetworkInspect(ctx, cp+"_default", network.InspectOptions{}); err != nil {
		t.Logf("compose's network is gone: %v", err)
	}
	back, err := r.applier(p).Rollback(ctx, "app", 1)
	if err != nil || back.Error != "" || r.get("/") != "version=compose" {
		t.Fatalf("rollback: %+v %v, serving %q", back, err, r.get("/"))
	}
}
