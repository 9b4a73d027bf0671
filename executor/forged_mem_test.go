package executor_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor"
	"github.com/deployer-dev/deployer/executor/engine"
	"github.com/deployer-dev/deployer/executor/engine/memengine"
	"github.com/deployer-dev/deployer/executor/plan"
)

// Labels alone never make a container the project's: it is one of its releases, its proxy or
// its lock only when it bears the name the deployer derives for that (from the configuration's
// container_name) and its labels agree with the name. Anything else labelled for the project is
// shown as ignored and never removed, renamed, started, routed to, backed up from or restored
// into. These tests forge labels as another user of the engine would, with plain engine calls.

// forgeries counts the attacks these tests try, for the closing note (go test -v prints it).
var forgeries atomic.Int64

// labelsOf are the labels of the container of that name, with changes (an empty value
// removes a label).
func labelsOf(t testing.TB, eng executor.Engine, name string, changes map[string]string) map[string]string {
	t.Helper()
	st, err := eng.Inspect(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for k, v := range st.Spec.Labels {
		out[k] = v
	}
	for k, v := range changes {
		if v == "" {
			delete(out, k)
		} else {
			out[k] = v
		}
	}
	return out
}

// forge creates (and starts, when run) a container of the app with those labels, as anyone who
// can use the engine can; it serves version (APP_VERSION) from a volume of the attacker's.
func (r *memRig) forge(name string, labels map[string]string, version string, run bool) string {
	r.t.Helper()
	forgeries.Add(1)
	ctx := context.Background()
	id, err := r.eng.CreateContainer(ctx, executor.ContainerSpec{Name: name, Image: memApp, Labels: labels,
		Env:     map[string]string{"APP_VERSION": version, "APP_DATA": "/data", "APP_PORT": strconv.Itoa(r.appPort)},
		Volumes: []executor.VolumeMount{{Name: "attacker-" + r.project, Target: "/data"}}})
	if err != nil {
		r.t.Fatal(err)
	}
	if run {
		if err := r.eng.StartContainer(ctx, id); err != nil {
			r.t.Fatal(err)
		}
	}
	return id
}

// deploy applies the configuration at each version in turn.
func (r *memRig) deploy(versions ...string) {
	r.t.Helper()
	for _, v := range versions {
		if so := r.apply(r.config(v, nil)); so.Error != "" {
			r.t.Fatal(so.Error)
		}
	}
}

// withoutApp applies the project with another service instead of service.app, which leaves the
// configuration, and returns that configuration.
func (r *memRig) withoutApp() *config.Project {
	r.t.Helper()
	p := r.config("w1", func(s *config.Service) {
		s.Name, s.ContainerName = "other", r.project+"-other"
		s.Volumes = []*config.Volume{{Name: r.project + "-other-data", Target: "/data"}}
		s.Backup, s.Ports[0].Host = nil, freePort(r.t)
	})
	if out := r.applyAll(p); out.Failed() {
		r.t.Fatalf("apply without service.app: %s", errorsOf(out))
	}
	return p
}

// stillThere fails unless the containers exist, in the state given ("" for any).
func (r *memRig) stillThere(state string, ids ...string) {
	r.t.Helper()
	for _, id := range ids {
		st, err := r.eng.Inspect(context.Background(), id)
		switch {
		case err != nil:
			r.t.Errorf("the forged container %s is gone: %v", id[:12], err)
		case state != "" && st.Status != state:
			r.t.Errorf("the forged container %s is %s, want %s", st.Name, st.Status, state)
		}
	}
}

// ignoredSays fails unless the plan shows a container as ignored with every part of want.
func ignoredSays(t testing.TB, list []plan.Ignored, name string, want ...string) {
	t.Helper()
	for _, ig := range list {
		if ig.Container != name {
			continue
		}
		for _, w := range want {
			if !strings.Contains(ig.Reason, w) {
				t.Errorf("ignored %s: %q does not say %q", name, ig.Reason, w)
			}
		}
		return
	}
	t.Errorf("%s is not shown as ignored: %+v", name, list)
}

// A container labelled as a previous release of the service, under a name of the attacker's
// (finding 1 of the review): rollback brings back the genuine previous release, never it. Under
// a name the service derives but with a release number that disagrees with its name, it stops
// the plan instead, naming it. The forgeries stay as they are.
func TestMemForgedPreviousRelease(t *testing.T) {
	forCutovers(t, func(t *testing.T, r *memRig) {
		ctx := context.Background()
		r.deploy("v1", "v2")
		prev := r.project + "-app-r1"
		evil := r.forge("attacker-evil-prev", labelsOf(t, r.eng, prev, map[string]string{engine.LabelRelease: "9", engine.LabelAddress: ""}), "PWNED", false)
		pl := r.plan(r.config("v2", nil))
		ignoredSays(t, pl.Ignored, "attacker-evil-prev", `a previous release of service.app (release "9")`, "its name is none of those service.app's container_name "+r.project+"-app gives")
		if pl.HasChanges() {
			t.Errorf("the forged release makes a change: %+v", pl.Changes[0])
		}
		so, err := r.applier(r.config("v2", nil)).Rollback(ctx, "app", 0)
		if err != nil || so.Error != "" || so.Release != 1 || !r.serves("v1") {
			t.Fatalf("rollback: %+v %v, serving %q", so, err, r.get("/"))
		}
		if so, err := r.applier(r.config("v2", nil)).Rollback(ctx, "app", 9); err == nil && !strings.Contains(so.Error, "release 9 of service.app is not kept on this host; kept: 2") {
			t.Errorf("rollback -to 9 (the forged release): %+v", so)
		}
		r.stillThere("created", evil)

		// Under the name of a previous release, with another number on its label.
		wrong := r.forge(r.project+"-app-r60", labelsOf(t, r.eng, r.project+"-app-r2", map[string]string{engine.LabelRelease: "53"}), "PWNED", false)
		_, err = executor.MakePlan(ctx, r.config("v3", nil), r.eng, plan.PlanOptions{})
		wantRefused(t, "a derived name with another release", err, r.project+"-app-r60", "labelled for this project that is not it", "its name says release 60 and its label 53")
		r.stillThere("created", wrong)
		if !r.serves("v1") {
			t.Errorf("serving %q", r.get("/"))
		}
	})
}

// A container labelled as the live release, under a name of the attacker's and naming itself as
// the live name (finding 2), mounting a volume of the attacker's (finding 3): status shows the
// genuine live release; apply neither removes the genuine one as a leftover candidate nor
// touches the forged one; a backup is of the genuine one (the real engine's test restores it:
// TestForgedOnTheEngine).
func TestMemForgedLiveRelease(t *testing.T) {
	forCutovers(t, func(t *testing.T, r *memRig) {
		ctx := context.Background()
		p := r.config("v1", nil)
		if so := r.apply(p); so.Error != "" {
			t.Fatal(so.Error)
		}
		live := r.project + "-app"
		evil := r.forge("attacker-evil-live", labelsOf(t, r.eng, live, map[string]string{
			engine.LabelRelease: "50", engine.LabelAddress: "", engine.LabelLiveName: "attacker-evil-live"}), "PWNED", true)
		st, err := executor.GetStatus(ctx, p, r.eng, "", false)
		if err != nil {
			t.Fatal(err)
		}
		if s := st.Services[0]; s.LiveRelease != 1 || s.Container != live {
			t.Errorf("status shows release %d (%s) as live", s.LiveRelease, s.Container)
		}
		ignoredSays(t, st.Ignored, "attacker-evil-live", `release "50"`, "none of those service.app's container_name")
		pl := r.plan(r.config("v2", nil))
		for _, step := range pl.Steps {
			if step.ContainerID != "" {
				t.Errorf("the plan acts on a container: %s %s", step.Name, step.Detail)
			}
		}
		if so := r.apply(r.config("v2", nil)); so.Error != "" || so.Release != 2 || !r.serves("v2") {
			t.Fatalf("apply beside the forged live release: %+v, serving %q", so, r.get("/"))
		}
		r.stillThere("running", evil)
		m, err := r.applier(r.config("v2", nil)).Backup(ctx, "app")
		if err != nil || m.Release != 2 {
			t.Fatalf("backup: %+v %v", m, err)
		}
		if b, _ := os.ReadFile(filepath.Join(r.eng.VolumeDir("attacker-"+r.project), "history")); !strings.Contains(string(b), "started PWNED") || strings.Contains(string(b), "started v2") {
			t.Errorf("the attacker's volume: %q", b)
		}
		r.stillThere("running", evil)
	})
}

// Labels that are not the deployer's form (finding 4): a release that is not a number from 1 to
// 10^9, a spec that does not parse, an address that is none, a service that is no service
// name, a live name naming itself. Each such container is ignored: the genuine live release is
// neither removed nor renamed, release numbers go on from the genuine ones, and nothing forged
// is started or removed, even when its service leaves the configuration.
func TestMemGarbageLabels(t *testing.T) {
	forCutovers(t, func(t *testing.T, r *memRig) {
		ctx := context.Background()
		if so := r.apply(r.config("v1", nil)); so.Error != "" {
			t.Fatal(so.Error)
		}
		base := func(changes map[string]string) map[string]string {
			return labelsOf(t, r.eng, r.project+"-app", changes)
		}
		var ids []string
		for i, changes := range []map[string]string{
			{engine.LabelRelease: "99999999999999999999"}, {engine.LabelRelease: "-1"}, {engine.LabelRelease: "0"},
			{engine.LabelRelease: "007"}, {engine.LabelRelease: "1e3"}, {engine.LabelRelease: " 5"}, {engine.LabelRelease: "+5"},
			{engine.LabelRelease: "1000000001"}, {engine.LabelRelease: "0x10"}, {engine.LabelRelease: ""},
			{engine.LabelSpecDoc: "{{{"}, {engine.LabelAddress: "999.1.1.1"}, {engine.LabelService: "../../etc"},
			{engine.LabelService: "\x1b[2J"}, {engine.LabelRole: "previous"}, {engine.LabelRole: "weird"},
		} {
			name := fmt.Sprintf("attacker-garbage%d", i)
			changes[engine.LabelLiveName] = name
			ids = append(ids, r.forge(name, base(changes), "PWNED", false))
		}
		// The same garbage under names the service derives stops the plan instead.
		for i, changes := range []map[string]string{
			{engine.LabelRelease: "99999999999999999999"}, {engine.LabelSpecDoc: "{{{"}, {engine.LabelAddress: "999.1.1.1"}, {engine.LabelRole: "previous"},
		} {
			name := fmt.Sprintf("%s-app-old-%d", r.project, 70+i)
			ids = append(ids, r.forge(name, base(changes), "PWNED", false))
			_, err := executor.MakePlan(ctx, r.config("v2", nil), r.eng, plan.PlanOptions{})
			wantRefused(t, "garbage under "+name, err, name, "labelled for this project that is not it")
			r.eng.RenameContainer(ctx, name, fmt.Sprintf("attacker-garbage-renamed-%d", i))
		}
		pl := r.plan(r.config("v2", nil))
		if len(pl.Ignored) != len(ids) {
			t.Errorf("%d ignored, want %d: %+v", len(pl.Ignored), len(ids), pl.Ignored)
		}
		for _, ig := range pl.Ignored {
			if strings.ContainsRune(ig.Reason, 0x1b) {
				t.Errorf("an escape sequence of a label reaches the output: %q", ig.Reason)
			}
		}
		for i, v := range []string{"v2", "v3"} {
			if so := r.apply(r.config(v, nil)); so.Error != "" || so.Release != i+2 || !r.serves(v) {
				t.Fatalf("apply %s beside the garbage: %+v, serving %q", v, so, r.get("/"))
			}
		}
		if so, err := r.applier(r.config("v3", nil)).Rollback(ctx, "app", 0); err != nil || so.Release != 2 || !r.serves("v2") {
			t.Fatalf("rollback: %+v %v", so, err)
		}
		// The service leaves the configuration: its own containers go, nothing forged does.
		other := r.withoutApp()
		obs, _ := plan.Observe(ctx, r.eng, other)
		if obs.Services["app"] != nil {
			t.Errorf("service.app's containers stay: %s", r.state())
		}
		r.stillThere("created", ids...)
	})
}

// A container run by hand from the service's built image (finding 5: an operator's debug
// container, a compose service of the image) is none of the project's: the image carries its
// project in labels of its own, which containers do not read as theirs. One run from an image
// built before (labelled deployer.project and deployer.service, which containers inherit) has
// no role: it is shown as ignored, neither taken over nor removed, even when its service goes.
func TestMemHandRunFromTheImage(t *testing.T) {
	r := newMemRig(t, config.CutoverProxy)
	ctx := context.Background()
	shared := false
	cfg := func(v string) *config.Project {
		p := r.config(v, func(s *config.Service) {
			s.Image = r.project + "-app:latest"
			s.Build = &config.Build{Context: ".", Dockerfile: "Dockerfile"}
			s.Volumes[0].Shared = shared
		})
		os.WriteFile(filepath.Join(p.Dir, "Dockerfile"), []byte("FROM scratch\n"), 0o644)
		return p
	}
	p := cfg("v1")
	r.eng.Buildable(r.project+"-app:latest", memengine.App)
	if so := r.apply(p); so.Error != "" {
		t.Fatal(so.Error)
	}
	labels, err := r.eng.ImageLabels(ctx, r.project+"-app:latest")
	if err != nil || labels[plan.LabelImageProject] != r.project || labels[plan.LabelImageService] != "app" || labels[engine.LabelProject] != "" || labels[engine.LabelService] != "" {
		t.Fatalf("the built image's labels: %v %v", labels, err)
	}
	// docker run -d -v DATA:/data IMAGE
	forgeries.Add(1)
	debug, err := r.eng.CreateContainer(ctx, executor.ContainerSpec{Name: "operator-debug", Image: r.project + "-app:latest",
		Env: map[string]string{"APP_VERSION": "debug", "APP_PORT": strconv.Itoa(r.appPort)}, Volumes: []executor.VolumeMount{{Name: r.project + "-data", Target: "/data"}}})
	if err != nil {
		t.Fatal(err)
	}
	r.eng.StartContainer(ctx, debug)
	// The same from an image built before (its labels: deployer.project, deployer.service).
	old := r.project + "-app:before"
	r.eng.Buildable(old, memengine.App)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM scratch\nLABEL old=1\n"), 0o644)
	if _, err := r.eng.BuildImage(ctx, executor.BuildOptions{Dir: dir, Dockerfile: "Dockerfile", Tag: old,
		Labels: map[string]string{engine.LabelProject: r.project, engine.LabelService: "app"}}); err != nil {
		t.Fatal(err)
	}
	forgeries.Add(1)
	debugOld, err := r.eng.CreateContainer(ctx, executor.ContainerSpec{Name: "operator-debug-old", Image: old,
		Env: map[string]string{"APP_VERSION": "debug", "APP_PORT": strconv.Itoa(r.appPort)}, Volumes: []executor.VolumeMount{{Name: r.project + "-data", Target: "/data"}}})
	if err != nil {
		t.Fatal(err)
	}
	r.eng.StartContainer(ctx, debugOld)
	// Both mount the service's volume: that is refused, naming them, unless it is declared
	// shared (as for any container that is not one of the project's).
	_, err = executor.MakePlan(ctx, cfg("v2"), r.eng, plan.PlanOptions{})
	wantRefused(t, "a volume the hand-run containers mount", err, "is in use by container operator-debug", "set shared = true")
	r.eng.StopContainer(ctx, debug, 0)
	r.eng.RemoveContainer(ctx, debug)
	_, err = executor.MakePlan(ctx, cfg("v2"), r.eng, plan.PlanOptions{})
	wantRefused(t, "a volume the hand-run container of an older image mounts", err, "is in use by container operator-debug-old (labelled for this project, but none of its own", "set shared = true")
	shared = true
	debug, err = r.eng.CreateContainer(ctx, executor.ContainerSpec{Name: "operator-debug", Image: r.project + "-app:latest",
		Env: map[string]string{"APP_VERSION": "debug", "APP_PORT": strconv.Itoa(r.appPort)}, Volumes: []executor.VolumeMount{{Name: r.project + "-data", Target: "/data"}}})
	if err != nil {
		t.Fatal(err)
	}
	r.eng.StartContainer(ctx, debug)
	pl := r.plan(cfg("v2"))
	if len(pl.Ignored) != 1 {
		t.Errorf("ignored: %+v", pl.Ignored)
	}
	ignoredSays(t, pl.Ignored, "operator-debug-old", "has no role", "it is left alone")
	if ch := pl.Changes[0]; ch.Takeover != nil || ch.Action != plan.ActionReplace {
		t.Errorf("the plan: %+v", ch)
	}
	if so := r.apply(cfg("v2")); so.Error != "" || !r.serves("v2") {
		t.Fatalf("apply: %+v", so)
	}
	// The service leaves the configuration: its releases go, the debug containers stay.
	r.withoutApp()
	r.stillThere("running", debug, debugOld)
}

// An unlabelled container under a name cutovers set the live release aside under (finding 6)
// is not taken over: only the one an interrupted takeover set aside is, which the release made
// to replace it recorded. The squatted name stops plan, apply and rollback, naming it.
func TestMemSetAsideNameSquatted(t *testing.T) {
	forCutovers(t, func(t *testing.T, r *memRig) {
		ctx := context.Background()
		r.deploy("v1", "v2")
		name := r.project + "-app-old-7"
		forgeries.Add(1)
		id, err := r.eng.CreateContainer(ctx, executor.ContainerSpec{Name: name, Image: memApp,
			Env:     map[string]string{"APP_VERSION": "PWNED", "APP_DATA": "/data", "APP_PORT": strconv.Itoa(r.appPort)},
			Volumes: []executor.VolumeMount{{Name: r.project + "-data", Target: "/data"}}})
		if err != nil {
			t.Fatal(err)
		}
		_, err = executor.MakePlan(ctx, r.config("v3", nil), r.eng, plan.PlanOptions{})
		wantRefused(t, "plan", err, name, "not made by the deployer", "no interrupted takeover of the deployer set it aside", "rename it back to "+r.project+"-app")
		_, err = r.applier(r.config("v2", nil)).Rollback(ctx, "app", 0)
		wantRefused(t, "rollback", err, name, "no interrupted takeover")
		r.stillThere("created", id)
		if !r.serves("v2") || r.state() != "previous:1:created live:2:running" {
			t.Errorf("the project changed: serving %q, %s", r.get("/"), r.state())
		}
	})
}

// A takeover interrupted once the container taken over was set aside (at every kill point of
// the cutover) is finished by the next apply: the container is kept as the release before the
// one that replaced it, under its own number (never the next release's), and later deploys and
// a rollback number and find every release. With the proxy cutover, every kill point of the
// takeover leaves the service served (by the container taken over, or the new release through
// the proxy), and the next apply converges with the container's data.
func TestMemTakeoverInterrupted(t *testing.T) {
	forCutovers(t, func(t *testing.T, r *memRig) {
		ctx, cutover := context.Background(), r.cutover
		// The restart cutover stops the container before the new release starts: only the
		// points from its stop on are of interest, and nothing serves at the first three.
		// With the proxy, the container taken over publishes the host port itself: the switch
		// stops it and gives the port to the proxy, routed to the new release. A kill there
		// (cutover.switched, cutover.set-aside) leaves the new release serving through the
		// proxy; the next apply gives the port back to the container taken over, starts it, and
		// takes it over again.
		points := []string{plan.PointCutoverStopped, plan.PointCutoverRenamed, plan.PointCutoverCreated, string(plan.StepVerify), plan.PointCleanupKept}
		if cutover == config.CutoverProxy {
			runByHand(t, r)
			points = plan.KillPoints(r.config("v1", nil), r.plan(r.config("v1", nil)))
			for _, want := range []string{plan.PointCutoverSwitched, plan.PointCutoverSetAside, string(plan.StepVerify), plan.PointCleanupKept} {
				if !slices.Contains(points, want) {
					t.Fatalf("the kill points of a takeover %q lack %s", points, want)
				}
			}
		}
		for _, point := range points {
			t.Run(point, func(t *testing.T) {
				r := newMemRig(t, cutover)
				runByHand(t, r)
				if !r.crashAt(r.config("v1", nil), point) {
					t.Fatalf("the takeover never reached %s: %v %s", point, r.steps(), r.state())
				}
				if body := r.get("/"); cutover == config.CutoverProxy && body != "version=by-hand" && body != "version=v1" && !r.serves("v1") && !r.serves("by-hand") {
					t.Errorf("after the crash at %s, nothing serves: %q, %s", point, r.get("/"), r.state())
				}
				if out := r.applyAll(r.config("v1", nil)); out.Failed() || !r.serves("v1") {
					t.Fatalf("apply after the crash at %s: %s, serving %q, %s\n%s", point, errorsOf(out), r.get("/"), r.state(), strings.Join(r.steps(), " "))
				}
				if h := r.get("/history"); !strings.Contains(h, "started by-hand") {
					t.Errorf("after the crash at %s and an apply, the data of the container taken over is gone: %q", point, h)
				}
				if got := r.state(); got != "previous:1:created live:2:running" {
					t.Errorf("after the crash at %s and an apply: %s", point, got)
				}
				if so := r.apply(r.config("v2", nil)); so.Error != "" || so.Release != 3 {
					t.Fatalf("the next deploy: %+v", so)
				}
				if so, err := r.applier(r.config("v2", nil)).Rollback(ctx, "app", 1); err != nil || so.Release != 1 || !r.serves("by-hand") {
					t.Fatalf("rollback to the container taken over: %+v %v, serving %q", so, err, r.get("/"))
				}
				if got := r.state(); got != "live:1:running previous:2:created previous:3:created" {
					t.Errorf("after the rollback: %s", got)
				}
			})
		}
	})
}

// runByHand runs what the operator had: docker run -d --name NAME -p PORT -v DATA:/data app.
func runByHand(t *testing.T, r *memRig) {
	ctx := context.Background()
	id, err := r.eng.CreateContainer(ctx, executor.ContainerSpec{Name: r.project + "-app", Image: memApp,
		Env:     map[string]string{"APP_VERSION": "by-hand", "APP_DATA": "/data", "APP_PORT": strconv.Itoa(r.appPort)},
		Ports:   []executor.PortBinding{{Container: r.appPort, HostPort: r.port}},
		Volumes: []executor.VolumeMount{{Name: r.project + "-data", Target: "/data"}}})
	if err != nil {
		t.Fatal(err)
	}
	r.eng.StartContainer(ctx, id)
}

// A takeover killed where the container taken over is stopped, then the apply that recovers
// it killed at every point of starting it again: the container keeps its name (set aside with
// no release recording it, the next plan would refuse it as a stranger's), and the next apply
// takes it over with its data.
func TestMemTakeoverResumeInterrupted(t *testing.T) {
	forCutovers(t, func(t *testing.T, r *memRig) {
		first := map[config.Cutover]string{config.CutoverRestart: plan.PointCutoverStopped, config.CutoverProxy: plan.PointCutoverSwitched}[r.cutover]
		for _, point := range plan.ResumePoints {
			t.Run(point, func(t *testing.T) {
				r := newMemRig(t, r.cutover)
				runByHand(t, r)
				p := r.config("v1", nil)
				if !r.crashAt(p, first) {
					t.Fatalf("the takeover never reached %s: %s", first, r.state())
				}
				if !r.crashAt(p, point) {
					t.Fatalf("the apply after the crash at %s never reached %s: %s", first, point, r.state())
				}
				if out := r.applyAll(p); out.Failed() || !r.serves("v1") {
					t.Fatalf("apply after the crashes at %s and %s: %s, serving %q, %s\n%s", first, point, errorsOf(out), r.get("/"), r.state(), strings.Join(r.steps(), " "))
				}
				if h := r.get("/history"); !strings.Contains(h, "started by-hand") {
					t.Errorf("the data of the container taken over is gone: %q", h)
				}
				if got := r.state(); got != "previous:1:created live:2:running" {
					t.Errorf("after the crashes and an apply: %s", got)
				}
				assertConverged(t, r, p, first+"+"+point)
			})
		}
	})
}

// A container labelled as the project's proxy under another name (finding 8), even with a
// release number sorting before the real proxy's: never started, never routed to, never
// removed; the proxy bearing the project's name serves.
func TestMemForgedProxy(t *testing.T) {
	r := newMemRig(t, config.CutoverProxy)
	ctx := context.Background()
	p := r.config("v1", nil)
	if so := r.apply(p); so.Error != "" {
		t.Fatal(so.Error)
	}
	forgeries.Add(1)
	fake, err := r.eng.CreateContainer(ctx, executor.ContainerSpec{Name: "attacker-fakeproxy", Image: memProxy, Cmd: []string{"proxy", "serve"}, HostNetwork: true,
		Labels: map[string]string{engine.LabelProject: r.project, engine.LabelRole: plan.RoleProxy, engine.LabelRelease: "-1"}})
	if err != nil {
		t.Fatal(err)
	}
	st, err := executor.GetStatus(ctx, p, r.eng, "", false)
	if err != nil || st.Proxy == nil || st.Proxy.Container != plan.ProxyName(r.project) {
		t.Fatalf("status shows the proxy %+v (%v)", st.Proxy, err)
	}
	ignoredSays(t, st.Ignored, "attacker-fakeproxy", "the project's proxy", "is named "+plan.ProxyName(r.project))
	if so := r.apply(r.config("v2", nil)); so.Error != "" || !r.serves("v2") {
		t.Fatalf("apply: %+v", so)
	}
	r.stillThere("created", fake)
	// Nor is a container labelled as the lock under another name the lock: apply does not
	// wait for it, and unlock -force leaves it.
	forgeries.Add(1)
	lock, err := r.eng.CreateContainer(ctx, executor.ContainerSpec{Name: "attacker-lock", Image: memApp,
		Labels: map[string]string{engine.LabelProject: r.project, engine.LabelRole: plan.RoleLock, plan.LabelHolder: "attacker"}})
	if err != nil {
		t.Fatal(err)
	}
	if held, err := executor.Unlock(ctx, r.eng, r.project); err != nil || held != nil {
		t.Errorf("unlock -force: %+v %v", held, err)
	}
	if so := r.apply(r.config("v3", nil)); so.Error != "" || !r.serves("v3") {
		t.Fatalf("apply beside the forged lock: %+v", so)
	}
	r.stillThere("created", lock)
}

// addresses on the project's network (finding 9): a container anyone connected with the lowest
// free fixed addresses does not stop a deploy (they are counted as taken); one that takes a
// release's address after it was chosen is named in the error, and the live release serves on.
func TestMemAddressSquat(t *testing.T) {
	r := newMemRig(t, config.CutoverRestart)
	ctx := context.Background()
	if so := r.apply(r.config("v1", nil)); so.Error != "" {
		t.Fatal(so.Error)
	}
	net := plan.NetworkName(r.project)
	fixed, err := r.eng.EnsureNetwork(ctx, net, map[string]string{engine.LabelProject: r.project})
	if err != nil || fixed == "" {
		t.Fatalf("the network's fixed range: %q %v", fixed, err)
	}
	live, _ := r.eng.Inspect(ctx, r.project+"-app")
	base := live.Spec.IP[:strings.LastIndex(live.Spec.IP, ".")+1]
	last, _ := strconv.Atoi(live.Spec.IP[len(base):])
	// docker network connect --ip ADDR NET squatter, for the next addresses.
	for i := 1; i <= 3; i++ {
		forgeries.Add(1)
		id, err := r.eng.CreateContainer(ctx, executor.ContainerSpec{Name: fmt.Sprintf("attacker-addr-%d", i), Image: memApp, Network: net, IP: base + strconv.Itoa(last+i),
			Env: map[string]string{"APP_VERSION": "PWNED", "APP_PORT": strconv.Itoa(r.appPort)}})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.eng.StartContainer(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if so := r.apply(r.config("v2", nil)); so.Error != "" || !r.serves("v2") {
		t.Fatalf("apply beside the squatted addresses: %+v", so)
	}
	// Taken between the choice and the start: the new live release's address, right after
	// the restart cutover created it.
	squatted := ""
	r.crash = func(point string) {
		if point != plan.PointCutoverCreated || squatted != "" {
			return
		}
		st, err := r.eng.Inspect(ctx, r.project+"-app")
		if err != nil {
			t.Error(err)
			return
		}
		forgeries.Add(1)
		squatted = st.Spec.IP
		id, err := r.eng.CreateContainer(ctx, executor.ContainerSpec{Name: "attacker-addr-race", Image: memApp, Network: net, IP: st.Spec.IP,
			Env: map[string]string{"APP_VERSION": "PWNED", "APP_PORT": strconv.Itoa(r.appPort)}})
		if err == nil {
			err = r.eng.StartContainer(ctx, id)
		}
		if err != nil {
			t.Error(err)
		}
	}
	so := r.apply(r.config("v3", nil))
	r.crash = nil
	if squatted == "" {
		t.Fatal("the cutover never created the new release")
	}
	want := "the address " + squatted + " on network " + net + ", given to " + r.project + "-app, is taken by container attacker-addr-race"
	if !strings.Contains(so.Error, want) || !r.serves("v2") {
		t.Errorf("apply with the address taken meanwhile: %q (want %q), serving %q", so.Error, want, r.get("/"))
	}
}

// Two containers that are each the live release by name and labels (one set aside, one forged
// under a set-aside name, nothing bearing the live name): plan, apply and rollback stop with an
// error naming both, and nothing is removed, renamed or started.
func TestMemTwoClaimsToLive(t *testing.T) {
	r := newMemRig(t, config.CutoverRestart)
	ctx := context.Background()
	r.deploy("v1", "v2")
	live := r.project + "-app"
	labels := labelsOf(t, r.eng, live, map[string]string{engine.LabelRelease: "9", engine.LabelAddress: ""})
	// An interrupted restart cutover: the live release stopped and set aside.
	r.eng.StopContainer(ctx, live, 0)
	if err := r.eng.RenameContainer(ctx, live, live+"-old-2"); err != nil {
		t.Fatal(err)
	}
	evil := r.forge(live+"-old-9", labels, "PWNED", false)
	p := r.config("v3", nil)
	_, err := executor.MakePlan(ctx, p, r.eng, plan.PlanOptions{})
	wantRefused(t, "plan", err, "2 containers claim to be service.app's live release", live+"-old-9 (release 9", live+"-old-2 (release 2", "none of them is acted on")
	_, err = r.applier(p).Rollback(ctx, "app", 0)
	wantRefused(t, "rollback", err, "2 containers claim to be service.app's live release")
	_, err = r.applier(p).Backup(ctx, "app")
	wantRefused(t, "backup", err, "2 containers claim to be service.app's live release")
	st, err := executor.GetStatus(ctx, p, r.eng, "", false)
	if err != nil || len(st.Conflicts) != 1 || st.Services[0].LiveRelease != 0 {
		t.Errorf("status: %+v %v", st, err)
	}
	r.stillThere("created", evil)
	r.stillThere("exited", live+"-old-2")
	// Once the forged one goes, the next apply resumes release 2 and deploys.
	r.eng.RemoveContainer(ctx, evil)
	if so := r.apply(p); so.Error != "" || !r.serves("v3") {
		t.Fatalf("apply: %+v", so)
	}
}

// A container_name changed in the configuration: the releases under the old name are no longer
// the service's (a name the configuration does not derive could be anyone's). They are shown as
// ignored, saying how to keep them (rename them to the new names), and the plan is refused
// while they mount the service's volume; renamed, they are the service's releases again.
func TestMemContainerNameChanged(t *testing.T) {
	r := newMemRig(t, config.CutoverProxy)
	ctx := context.Background()
	r.deploy("v1", "v2")
	old, renamed := r.project+"-app", r.project+"-renamed"
	p := r.config("v3", func(s *config.Service) { s.ContainerName = renamed })
	_, err := executor.MakePlan(ctx, p, r.eng, plan.PlanOptions{})
	wantRefused(t, "plan under the new name", err, "is in use by container "+old+" (labelled for this project, but none of its own")
	obs, _ := plan.Observe(ctx, r.eng, p)
	ignoredSays(t, obs.Ignored, old, "made when the container_name was \""+old+"\"", "docker rename "+old+" "+renamed)
	ignoredSays(t, obs.Ignored, old+"-r1", "docker rename "+old+"-r1 "+renamed+"-r1")
	for _, n := range []string{"", "-r1"} {
		if err := r.eng.RenameContainer(ctx, old+n, renamed+n); err != nil {
			t.Fatal(err)
		}
	}
	pl := r.plan(p)
	if ch := pl.Changes[0]; ch.Action != plan.ActionReplace || ch.LiveRelease != 2 || ch.NextRelease != 3 || len(pl.Ignored) != 0 {
		t.Errorf("the plan after the renames: %+v, ignored %+v", ch, pl.Ignored)
	}
	if so := r.apply(p); so.Error != "" || so.Release != 3 || !r.serves("v3") {
		t.Fatalf("apply under the new name: %+v", so)
	}
	if so, err := r.applier(p).Rollback(ctx, "app", 1); err != nil || so.Error != "" || !r.serves("v1") {
		t.Fatalf("rollback to release 1, made under the old name: %+v %v", so, err)
	}
}

// A migration's mark under a name the service does not derive does not make apply skip the
// migration; nor is a container of the project with no service, or another's, anything.
func TestMemForgedMarks(t *testing.T) {
	r := newMemRig(t, config.CutoverRestart)
	if so := r.apply(r.config("v1", nil)); so.Error != "" {
		t.Fatal(so.Error)
	}
	live := r.project + "-app"
	r.forge("attacker-migrated", labelsOf(t, r.eng, live, map[string]string{engine.LabelRole: plan.RoleMigrated, "deployer.migration-key": "0123456789abcdef01234567"}), "PWNED", false)
	r.forge(live+"-migrated-5", labelsOf(t, r.eng, live, map[string]string{engine.LabelRole: plan.RoleMigrated, engine.LabelRelease: "4"}), "PWNED", false)
	r.forge("attacker-noservice", map[string]string{engine.LabelProject: r.project, engine.LabelRole: plan.RoleLive, engine.LabelRelease: "3"}, "PWNED", false)
	obs, err := plan.Observe(context.Background(), r.eng, r.config("v1", nil))
	if err != nil {
		t.Fatal(err)
	}
	if st := obs.Services["app"]; len(st.Migrated) != 0 || st.Live == nil || st.Live.Name != live {
		t.Errorf("service.app: %+v", st)
	}
	ignoredSays(t, obs.Ignored, "attacker-migrated", "the mark of a migration of service.app")
	ignoredSays(t, obs.Ignored, live+"-migrated-5", "its name says release 5 and its label 4")
	ignoredSays(t, obs.Ignored, "attacker-noservice", "it names no service")
}

// Release labels are read strictly.
func TestParseRelease(t *testing.T) {
	for in, want := range map[string]int{
		"1": 1, "42": 42, "1000000000": 1000000000,
		"": 0, "0": 0, "-1": 0, "+1": 0, " 1": 0, "1 ": 0, "01": 0, "1e3": 0, "0x10": 0, "1000000001": 0,
		"99999999999999999999": 0, "١": 0, "1.0": 0,
	} {
		forgeries.Add(1)
		got, ok := engine.ParseRelease(in)
		if got != want || ok != (want != 0) {
			t.Errorf("ParseRelease(%q) = %d, %v; want %d", in, got, ok, want)
		}
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	if testing.Verbose() {
		fmt.Printf("forged containers, images and labels tried: %d; names taken: %d\n", forgeries.Load(), collisions.Load())
	}
	os.Exit(code)
}

// Volumes labelled as a service's scratch volume or safety copy under names the deployer does
// not give them: the next apply neither removes them nor puts one back into the service's data
// (a safety copy is put back when the live release is found stopped after a held migration).
func TestMemForgedScratchAndSafety(t *testing.T) {
	r := newMemRig(t, config.CutoverRestart)
	ctx := context.Background()
	r.deploy("v1")
	data := r.project + "-data"
	forged := map[string]map[string]string{
		"attacker-scratch":         {engine.LabelProject: r.project, engine.LabelService: "app", engine.LabelRole: plan.RoleScratch},
		"attacker-safety":          {engine.LabelProject: r.project, engine.LabelService: "app", engine.LabelRole: plan.RoleSafety, plan.LabelVolume: data, engine.LabelRelease: "1"},
		r.project + "-x-snapshots": {engine.LabelProject: r.project, engine.LabelService: "../x", engine.LabelRole: plan.RoleScratch},
	}
	for name, labels := range forged {
		forgeries.Add(1)
		if err := r.eng.CreateVolume(ctx, name, labels); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(r.eng.VolumeDir(name), "history"), []byte("started PWNED\n"), 0o644)
	}
	r.eng.StopContainer(ctx, r.project+"-app", 0) // as a crash in a held migration leaves it
	pl := r.plan(r.config("v1", nil))
	for _, step := range pl.Steps {
		if step.Volume != "" {
			t.Errorf("the plan acts on a volume: %s %s", step.Name, step.Detail)
		}
	}
	n := 0
	for _, ig := range pl.Ignored {
		if forged[ig.Volume] != nil {
			n++
		}
	}
	if n != len(forged) {
		t.Errorf("ignored: %+v", pl.Ignored)
	}
	if out := r.applyAll(r.config("v1", nil)); out.Failed() || !r.serves("v1") {
		t.Fatalf("apply: %s", errorsOf(out))
	}
	for name := range forged {
		if _, err := r.eng.InspectVolume(ctx, name); err != nil {
			t.Errorf("the volume %s is gone: %v", name, err)
		}
	}
	if h := r.get("/history"); strings.Contains(h, "PWNED") || !strings.Contains(h, "started v1") {
		t.Errorf("the service's data: %q", h)
	}
}
