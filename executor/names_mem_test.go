package executor_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor"
	"github.com/deployer-dev/deployer/executor/engine"
	"github.com/deployer-dev/deployer/executor/engine/memengine"
	"github.com/deployer-dev/deployer/executor/plan"
)

// Another project on the same engine cannot touch this one's names or volumes: every name the
// deployer derives, taken by anything that is not the project's own, stops plan and apply at
// once, naming what holds it, before anything is removed.

// collisions counts the collisions these tests try, for the closing note (go test -v prints it).
var collisions atomic.Int64

// projectOf is a configuration of project name, with one service of the test app, on the rig's
// engine: another project beside the rig's own. It mounts the rig's data volume unless mod
// says otherwise.
func (r *memRig) projectOf(name, service, v string, mod func(s *config.Service)) *config.Project {
	p := r.config(v, func(s *config.Service) {
		s.Name, s.ContainerName = service, name+"-"+service
		s.Ports[0].Host = freePort(r.t)
		s.Backup, s.Hooks = nil, nil
		if mod != nil {
			mod(s)
		}
	})
	p.Name = name
	return p
}

// fullConfig is the rig's project with everything that derives a name: the proxy, a built
// image, a hook, a backup, a migration.
func (r *memRig) fullConfig(v string, mod func(s *config.Service)) *config.Project {
	p := r.config(v, func(s *config.Service) {
		s.Deploy.Cutover = config.CutoverProxy
		s.Image = r.project + "-app:latest"
		s.Build = &config.Build{Context: ".", Dockerfile: "Dockerfile"}
		s.SQLite = []*config.SQLite{{Name: "db", Volume: r.project + "-data", Path: "app.db", SeedIfEmpty: []string{"seed"}}}
		s.Migration = &config.Migration{Command: []string{"migrate"}, SQLite: "db", DryRun: true, Deadline: time.Minute}
		if mod != nil {
			mod(s)
		}
	})
	if err := os.WriteFile(filepath.Join(p.Dir, "Dockerfile"), []byte("FROM scratch\n"), 0o644); err != nil {
		r.t.Fatal(err)
	}
	return p
}

// squatter is something on the engine under a name of the project's, made by someone else.
type squatter struct {
	kind   string // container, volume, mounted (a volume a container mounts), network, image
	name   string
	labels map[string]string
}

// make puts the squatter on the engine.
func (sq squatter) make(t *testing.T, eng *memengine.Engine) {
	ctx := context.Background()
	var err error
	switch sq.kind {
	case "container":
		_, err = eng.CreateContainer(ctx, executor.ContainerSpec{Name: sq.name, Image: memApp, Labels: sq.labels})
	case "volume":
		if len(sq.labels) == 0 {
			eng.VolumeDir(sq.name) // a volume without labels
		} else {
			err = eng.CreateVolume(ctx, sq.name, sq.labels)
		}
	case "mounted":
		_, err = eng.CreateContainer(ctx, executor.ContainerSpec{Name: "squatter-of-" + sq.name, Image: memApp, Labels: sq.labels,
			Volumes: []executor.VolumeMount{{Name: sq.name, Target: "/data"}}})
	case "network":
		_, err = eng.EnsureNetwork(ctx, sq.name, sq.labels)
	case "image":
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM scratch\nLABEL squat=1\n"), 0o644)
		eng.Buildable(sq.name, memengine.App)
		_, err = eng.BuildImage(ctx, executor.BuildOptions{Dir: dir, Dockerfile: "Dockerfile", Tag: sq.name, Labels: sq.labels})
	}
	if err != nil {
		t.Fatalf("squat %s %s: %v", sq.kind, sq.name, err)
	}
}

// squatters are every name the project derives (found by grepping the executor for each name
// it builds), each taken by another project and by something the deployer did not make, where
// that is not a takeover.
func squatters(project string) []squatter {
	other := map[string]string{engine.LabelProject: "squatter-q", engine.LabelService: "x", engine.LabelRole: "live"}
	none := map[string]string{}
	c := project + "-app"
	var out []squatter
	// The container_name: a container the deployer did not make under it is taken over, not
	// refused (takeover.go); another project's is refused. A name cutovers set the live release
	// aside under is taken over only when an interrupted takeover set it aside (the release that
	// replaced it recorded it): anything else is refused.
	out = append(out, squatter{"container", c, other})
	out = append(out, squatter{"container", c + "-old-2", other}, squatter{"container", c + "-old-2", none})
	for _, n := range []string{
		plan.LockName(project), plan.ProxyName(project), plan.ProxyName(project) + "-next",
		c + "-green", c + "-r1", c + "-r7", c + "-migrated-3", c + "-migration-3", c + "-migration-dry-run-3",
		c + "-before-cutover-3", c + "-seed-3",
		c + "-snapshot", c + "-schema", c + "-clone", c + "-safety", c + "-put-back", c + "-safety-source",
		c + "-restore-source", c + "-restore-" + project + "-data",
	} {
		out = append(out, squatter{"container", n, other}, squatter{"container", n, none})
	}
	for _, n := range []string{project + "-deployer-key", plan.ProxyName(project) + "-state", c + "-snapshots", c + "-migration", c + "-safety", project + "-data"} {
		out = append(out, squatter{"volume", n, other})
	}
	for _, n := range []string{project + "-deployer-key", c + "-snapshots", c + "-migration", c + "-safety"} {
		out = append(out, squatter{"volume", n, none}) // the deployer labels its own
	}
	// A volume without labels that something else mounts: another project's container, or one
	// the deployer did not make.
	for _, n := range []string{plan.ProxyName(project) + "-state", project + "-data"} {
		out = append(out, squatter{"mounted", n, other}, squatter{"mounted", n, none})
	}
	out = append(out,
		squatter{"network", plan.NetworkName(project), other},
		squatter{"network", plan.NetworkName(project), none},
		squatter{"network", plan.NetworkName(project) + "-subnet-probe", other},
		squatter{"network", plan.NetworkName(project) + "-subnet-probe", none},
		squatter{"image", project + "-app:latest", other})
	return out
}

// Each name the project derives, held by something else, stops the plan at once with an error
// naming the name and what holds it; the engine is left as it was.
func TestMemNameTakenStopsPlan(t *testing.T) {
	probe := newMemRig(t, config.CutoverProxy)
	// With nothing in the way, the same configuration plans.
	if _, err := executor.MakePlan(context.Background(), probe.fullConfig("v1", nil), probe.eng, plan.PlanOptions{}); err != nil {
		t.Fatalf("on an engine of its own: %v", err)
	}
	for _, sq := range squatters(probe.project) {
		owner := "not made by the deployer"
		if sq.labels[engine.LabelProject] != "" {
			owner = `project "squatter-q"`
		}
		t.Run(sq.kind+" "+strings.TrimPrefix(sq.name, probe.project)+" "+owner, func(t *testing.T) {
			t.Parallel()
			r := newMemRig(t, config.CutoverProxy)
			r.project = probe.project // the names of the table
			sq.make(t, r.eng)
			collisions.Add(1)
			_, err := executor.MakePlan(context.Background(), r.fullConfig("v1", nil), r.eng, plan.PlanOptions{})
			if err == nil {
				t.Fatalf("the plan went ahead with %s %s taken", sq.kind, sq.name)
			}
			if testing.Verbose() {
				t.Log(err)
			}
			for _, want := range []string{sq.name, owner, "nothing was changed"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("the error does not say %q:\n%v", want, err)
				}
			}
			if obs, _ := plan.Observe(context.Background(), r.eng, projectOnly(r.project)); len(obs.All) != 0 {
				t.Errorf("the plan made containers: %+v", obs.All)
			}
		})
	}
	t.Logf("%d names taken", len(squatters(probe.project)))
}

// Names the configuration derives twice, for two of its own objects, are refused by the plan
// too: a service beside another's candidate, a service named as the proxy, a volume named as
// the deployer's scratch volume.
func TestMemNamesCollideInTheConfiguration(t *testing.T) {
	r := newMemRig(t, config.CutoverProxy)
	// beside adds a service of that name to the project, as a copy of the app.
	beside := func(name string) func(p *config.Project) {
		return func(p *config.Project) {
			s := *p.Services[0]
			s.Name, s.ContainerName, s.Backup = name, r.project+"-"+name, nil
			p.Services = append(p.Services, &s)
		}
	}
	for _, c := range []struct {
		name string
		mod  func(p *config.Project)
		want string
	}{
		{"candidate", beside("app-green"), "container " + r.project + "-app-green is both service.app's candidate and service.app-green's live release"},
		{"proxy", beside("proxy"), "container " + r.project + "-proxy is both the project's proxy and service.proxy's live release"},
		{"previous release", beside("app-r1"), "container " + r.project + "-app-r1 is both service.app-r1's live release and service.app's previous releases"},
		{"scratch volume", func(p *config.Project) {
			p.Services[0].Volumes = append(p.Services[0].Volumes, &config.Volume{Name: r.project + "-app-snapshots", Target: "/snap"})
		}, "service.app mounts a volume named " + r.project + "-app-snapshots, the name of service.app's backup scratch volume"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := r.config("v1", nil)
			c.mod(p)
			collisions.Add(1)
			_, err := executor.MakePlan(context.Background(), p, r.eng, plan.PlanOptions{})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("plan: %v, want %q", err, c.want)
			}
		})
	}
}

// Collisions by construction: project "P-app"'s service "green" runs P-app-green, the name of
// project "P"'s candidate; project "P" service "b-c" and project "P-b" service "c" both run
// "P-b-c". The labels tell them apart: each plan names the other project, and the first
// project's deploys go on untouched.
func TestMemProjectsCollideByConstruction(t *testing.T) {
	r := newMemRig(t, config.CutoverRestart)
	p := r.config("v1", nil)
	if so := r.apply(p); so.Error != "" {
		t.Fatal(so.Error)
	}
	other := r.projectOf(r.project+"-app", "green", "q1", func(s *config.Service) {
		s.Volumes = []*config.Volume{{Name: r.project + "-app-data", Target: "/data"}}
	})
	if so := r.apply(other); so.Error != "" {
		t.Fatal(so.Error)
	}
	collisions.Add(1)
	_, err := executor.MakePlan(context.Background(), r.config("v2", nil), r.eng, plan.PlanOptions{})
	want := "the container name " + r.project + "-app-green (service.app's candidate) is taken by project \"" + r.project + "-app\"'s service.green"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("plan beside project %s: %v, want %q", other.Name, err, want)
	}
	// "X" service "b-c" against "X-b" service "c": whichever comes second is refused.
	x := r.project + "-x"
	bc := r.projectOf(x, "b-c", "bc1", func(s *config.Service) {
		s.Volumes = []*config.Volume{{Name: x + "-bc-data", Target: "/data"}}
	})
	if so := r.apply(bc); so.Error != "" {
		t.Fatal(so.Error)
	}
	c := r.projectOf(x+"-b", "c", "c1", func(s *config.Service) {
		s.Volumes = []*config.Volume{{Name: x + "-c-data", Target: "/data"}}
	})
	collisions.Add(1)
	_, err = executor.MakePlan(context.Background(), c, r.eng, plan.PlanOptions{})
	want = "the container name " + x + "-b-c (service.c's live release) is taken by project \"" + x + "\"'s service.b-c"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("plan of %s: %v, want %q", c.Name, err, want)
	}
	if !r.serves("v1") {
		t.Errorf("project %s's service stopped serving", r.project)
	}
}

// A plan made before another project took a name is applied in vain: apply checks again inside
// the lock, fails at once naming what holds the name, and removes nothing: the live release
// serves on, the squatter stays.
func TestMemNameTakenStopsApply(t *testing.T) {
	other := map[string]string{engine.LabelProject: "squatter-q", engine.LabelService: "x", engine.LabelRole: "live"}
	for _, c := range []struct {
		name string
		sq   func(r *memRig) squatter
		want string
	}{
		{"candidate", func(r *memRig) squatter { return squatter{"container", r.project + "-app-green", other} }, `project "squatter-q"`},
		{"previous release", func(r *memRig) squatter { return squatter{"container", r.project + "-app-r1", nil} }, "not made by the deployer"},
		{"proxy", func(r *memRig) squatter { return squatter{"container", r.project + "-proxy-next", other} }, `project "squatter-q"`},
		{"data volume", func(r *memRig) squatter { return squatter{"mounted", r.project + "-data", other} }, `project "squatter-q"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			r := newMemRig(t, config.CutoverProxy)
			if so := r.apply(r.config("v1", nil)); so.Error != "" {
				t.Fatal(so.Error)
			}
			before := r.state()
			p := r.config("v2", nil)
			pl := r.plan(p)
			sq := c.sq(r)
			sq.make(t, r.eng)
			collisions.Add(1)
			out, err := r.applier(p).Apply(context.Background(), pl)
			if err == nil || !strings.Contains(err.Error(), sq.name) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("apply: %v %+v, want an error naming %s and %s", err, out, sq.name, c.want)
			}
			if !r.serves("v1") || r.state() != before {
				t.Errorf("the project changed: serving %q, containers %s (before: %s)", r.get("/"), r.state(), before)
			}
			if _, err := r.eng.Inspect(context.Background(), sq.name); sq.kind == "container" && err != nil {
				t.Errorf("the squatter is gone: %v", err)
			}
		})
	}
}

// A container of the lock's name that is not the project's lock fails apply at once, naming it,
// whatever -lock-timeout allows: no wait would end it.
func TestMemLockNameSquatted(t *testing.T) {
	r := newMemRig(t, config.CutoverRestart)
	p := r.config("v1", nil)
	pl := r.plan(p)
	for _, labels := range []map[string]string{nil, {engine.LabelProject: "squatter-q", engine.LabelRole: plan.RoleLock}} {
		ctx := context.Background()
		id, err := r.eng.CreateContainer(ctx, executor.ContainerSpec{Name: plan.LockName(r.project), Image: memApp, Labels: labels})
		if err != nil {
			t.Fatal(err)
		}
		a := r.applier(p)
		a.LockTimeout = time.Minute
		start := time.Now()
		collisions.Add(1)
		_, err = a.Apply(ctx, pl)
		if err == nil || !strings.Contains(err.Error(), "the deploy lock's name "+plan.LockName(r.project)+" is taken by") {
			t.Fatalf("apply: %v", err)
		}
		took := time.Since(start)
		if took > 5*time.Second {
			t.Errorf("apply took %s to fail, within a lock timeout of %s", took, a.LockTimeout)
		}
		t.Logf("the squatted lock refused in %s (lock timeout %s)", took.Round(time.Microsecond), a.LockTimeout)
		if _, err := r.eng.Inspect(ctx, id); err != nil {
			t.Errorf("the squatter is gone: %v", err)
		}
		if obs, _ := plan.Observe(ctx, r.eng, projectOnly(r.project)); len(obs.Services) != 0 {
			t.Errorf("apply changed the project: %+v", obs.All)
		}
		r.eng.RemoveContainer(ctx, id)
	}
	// A lock released and taken again without end (here: always taken when looked for, gone
	// when looked at) stops at the lock timeout instead of spinning.
	r.eng.Fail("create", plan.LockName(r.project), 1<<30, engine.ErrNameTaken)
	a := r.applier(p)
	a.LockTimeout = 300 * time.Millisecond
	start := time.Now()
	if _, err := a.Apply(context.Background(), pl); err == nil || !strings.Contains(err.Error(), "taken and released again and again") {
		t.Fatalf("apply with a lock name that flickers: %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("took %s to give up, with a lock timeout of %s", took, a.LockTimeout)
	}
}

// The data volume: the deployer creates it with the project's label. Another project may mount
// it only when both declare it shared; either side alone is refused, naming the other.
func TestMemSharedVolume(t *testing.T) {
	r := newMemRig(t, config.CutoverRestart)
	ctx := context.Background()
	data := r.project + "-data"
	shared := func(on bool) func(s *config.Service) {
		return func(s *config.Service) { s.Volumes[0].Shared = on }
	}
	if so := r.apply(r.config("v1", nil)); so.Error != "" {
		t.Fatal(so.Error)
	}
	if v, err := r.eng.InspectVolume(ctx, data); err != nil || v.Labels[engine.LabelProject] != r.project || v.Labels[engine.LabelRole] != plan.RoleData {
		t.Fatalf("the data volume's labels: %+v %v", v, err)
	}
	q := r.project + "-q"
	for _, c := range []struct {
		mine, theirs bool
		want         string
	}{
		{false, false, "the volume " + data + " (mounted by service.web) is labelled for project \"" + r.project + "\" (role \"data\"): a volume holds one project's data"},
		{false, true, "the volume " + data + " (mounted by service.web) is labelled for project \"" + r.project + "\" (role \"data\"), and project \"" + r.project + "\" does not declare it shared"},
	} {
		collisions.Add(1)
		_, err := executor.MakePlan(ctx, r.projectOf(q, "web", "q1", shared(c.theirs)), r.eng, plan.PlanOptions{})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("mine shared %v, theirs %v: %v, want %q", c.mine, c.theirs, err, c.want)
		}
	}
	// Both declare it shared: both deploy, and both read and write it.
	if so := r.apply(r.config("v2", shared(true))); so.Error != "" {
		t.Fatal(so.Error)
	}
	qp := r.projectOf(q, "web", "q1", shared(true))
	if so := r.apply(qp); so.Error != "" {
		t.Fatal(so.Error)
	}
	if h := getPath(qp.Services[0].Ports[0].Host, "/history"); !strings.Contains(h, "started v1") || !strings.Contains(h, "started q1") {
		t.Errorf("the shared volume's history, as project %s reads it: %q", q, h)
	}
	// The first project stops sharing it: its own plan is refused while the other mounts it.
	collisions.Add(1)
	_, err := executor.MakePlan(ctx, r.config("v3", nil), r.eng, plan.PlanOptions{})
	if err == nil || !strings.Contains(err.Error(), "is in use by project \""+q+"\"'s service.web") {
		t.Fatalf("unshared while the other mounts it: %v", err)
	}
	// A container the deployer did not make that mounts a volume is refused unless shared.
	sq := squatter{"mounted", r.project + "-data2", nil}
	sq.make(t, r.eng)
	two := func(on bool) func(s *config.Service) {
		return func(s *config.Service) {
			s.Volumes = append(s.Volumes, &config.Volume{Name: sq.name, Target: "/data2", Shared: on})
			s.Volumes[0].Shared = true
		}
	}
	collisions.Add(1)
	if _, err := executor.MakePlan(ctx, r.config("v3", two(false)), r.eng, plan.PlanOptions{}); err == nil || !strings.Contains(err.Error(), "not made by the deployer: set shared = true") {
		t.Fatalf("a volume a foreign container mounts: %v", err)
	}
	if _, err := executor.MakePlan(ctx, r.config("v3", two(true)), r.eng, plan.PlanOptions{}); err != nil {
		t.Fatalf("declared shared: %v", err)
	}
}

// A restore replaces a volume's files only when nothing but the live release it stops runs on
// it: another project's running container (sharing it), or one the deployer did not make, stops
// the restore before anything is touched.
func TestMemRestoreRefusesVolumeInUse(t *testing.T) {
	r := newMemRig(t, config.CutoverRestart)
	ctx := context.Background()
	share := func(s *config.Service) { s.Volumes[0].Shared = true }
	if so := r.apply(r.config("v1", share)); so.Error != "" {
		t.Fatal(so.Error)
	}
	p := r.config("v2", share)
	if so := r.apply(p); so.Error != "" {
		t.Fatal(so.Error)
	}
	a := r.applier(p)
	m, err := a.Backup(ctx, "app")
	if err != nil {
		t.Fatal(err)
	}
	qp := r.projectOf(r.project+"-q", "web", "q1", share)
	if so := r.apply(qp); so.Error != "" {
		t.Fatal(so.Error)
	}
	collisions.Add(1)
	_, err = a.PrepareRestore(ctx, "app", m.ID, executor.RestoreOptions{})
	want := "volume " + r.project + "-data is mounted by project \"" + qp.Name + "\"'s service.web"
	if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "nothing was restored") {
		t.Fatalf("restore beside another project's running container: %v, want %q", err, want)
	}
	// Checked again in the lock: a plan prepared before the other started is refused too.
	obs, _ := plan.Observe(ctx, r.eng, projectOnly(qp.Name))
	id := obs.Services["web"].Live.ID
	r.eng.StopContainer(ctx, id, time.Second)
	rp, err := a.PrepareRestore(ctx, "app", m.ID, executor.RestoreOptions{})
	if err != nil {
		t.Fatalf("with the other project's container stopped: %v", err)
	}
	r.eng.StartContainer(ctx, id)
	collisions.Add(1)
	if _, err := a.Restore(ctx, "app", rp); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("restore: %v, want %q", err, want)
	}
	if !r.serves("v2") {
		t.Error("the live release stopped")
	}
}

// A name taken after the checks (between them and the moment the deployer creates the object)
// is refused by the engine: the deployer then names the holder and keeps what it would have
// replaced. Here release 1's previous-release name is taken while release 2 goes live: release 1
// is not lost.
func TestMemPreviousNameTakenMidApply(t *testing.T) {
	r := newMemRig(t, config.CutoverRestart)
	ctx := context.Background()
	if so := r.apply(r.config("v1", nil)); so.Error != "" {
		t.Fatal(so.Error)
	}
	name := r.project + "-app-r1"
	r.crash = func(point string) {
		if point == string(plan.StepCleanup) {
			if _, err := r.eng.Inspect(ctx, name); err != nil {
				squatter{"container", name, nil}.make(t, r.eng)
			}
		}
	}
	collisions.Add(1)
	so := r.apply(r.config("v2", nil))
	r.crash = nil
	if !r.serves("v2") {
		t.Fatalf("release 2 does not serve: %+v", so)
	}
	obs, err := plan.Observe(ctx, r.eng, projectOnly(r.project))
	if err != nil {
		t.Fatal(err)
	}
	kept := false
	for _, c := range obs.All {
		kept = kept || c.Release() == 1 && c.Service() == "app"
	}
	if !kept {
		t.Errorf("release 1 is gone: %s", r.state())
	}
	if st, err := r.eng.Inspect(ctx, name); err != nil || st.Spec.Labels[engine.LabelProject] != "" {
		t.Errorf("the squatter: %+v %v", st, err)
	}
	found := false
	for _, e := range r.events {
		found = found || strings.Contains(e.Detail, "the container name "+name+" (service.app's previous release) is taken by container "+name)
	}
	if !found {
		t.Errorf("no event names the squatter: %v", r.steps())
	}
}

// rollback and an on-demand backup check the names they use too: another project's container
// under the candidate's name stops the rollback, another project's volume under the backup's
// scratch name stops the backup, each naming it, with the live release untouched.
func TestMemNameTakenStopsRollbackAndBackup(t *testing.T) {
	r := newMemRig(t, config.CutoverRestart)
	ctx := context.Background()
	for _, v := range []string{"v1", "v2"} {
		if so := r.apply(r.config(v, nil)); so.Error != "" {
			t.Fatal(so.Error)
		}
	}
	other := map[string]string{engine.LabelProject: "squatter-q", engine.LabelService: "x"}
	p := r.config("v2", nil)
	squatter{"container", r.project + "-app-green", other}.make(t, r.eng)
	collisions.Add(1)
	if _, err := r.applier(p).Rollback(ctx, "app", 0); err == nil || !strings.Contains(err.Error(), r.project+"-app-green (service.app's candidate) is taken by project \"squatter-q\"") {
		t.Errorf("rollback: %v", err)
	}
	squatter{"volume", r.project + "-app-snapshots", other}.make(t, r.eng)
	collisions.Add(1)
	if _, err := r.applier(p).Backup(ctx, "app"); err == nil || !strings.Contains(err.Error(), r.project+"-app-snapshots (service.app's backup scratch volume) is taken by a volume labelled for project \"squatter-q\"") {
		t.Errorf("backup: %v", err)
	}
	if !r.serves("v2") || r.state() != "previous:1:created live:2:running" {
		t.Errorf("the project changed: %s", r.state())
	}
}
