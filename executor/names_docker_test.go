package executor_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor"
	"github.com/deployer-dev/deployer/executor/docker/dockertest"
	"github.com/deployer-dev/deployer/executor/plan"
)

// besides returns a rig of another project on the same engine, named name (removed when the
// test ends).
func (r *rig) besides(name string) *rig {
	r.t.Cleanup(func() { dockertest.RemoveProject(r.eng, name) })
	return &rig{t: r.t, eng: r.eng, project: name, image: r.image, port: dockertest.FreePort(r.t)}
}

// squat creates a container the deployer did not make (docker run), stopped, under name; it
// is removed when the test ends.
func (r *rig) squat(name string, vols ...string) string {
	r.t.Helper()
	spec := executor.ContainerSpec{Name: name, Image: r.image}
	for _, v := range vols {
		spec.Volumes = append(spec.Volumes, executor.VolumeMount{Name: v, Target: "/data"})
	}
	id, err := r.eng.CreateContainer(context.Background(), spec)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { r.eng.RemoveContainer(context.Background(), id) })
	return id
}

// wantRefused checks that err names every part of want.
func wantRefused(t *testing.T, what string, err error, want ...string) {
	t.Helper()
	collisions.Add(1)
	if err == nil {
		t.Fatalf("%s: went ahead, want an error naming %q", what, want)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%s: the error does not say %q:\n%v", what, w, err)
		}
	}
}

// Two projects on one engine whose names collide by construction: project A's service "app"
// takes A-app-green as its candidate, the live container of project "A-app"'s service "green";
// A-app-r1 is A's previous release and project "A-app"'s service "r1". Whichever comes second
// is refused at once, naming the other, and nothing of the first is touched. The data volume
// carries its project: another project may mount it only when both say shared = true.
func TestProjectsCollideOnOneEngine(t *testing.T) {
	a := newRig(t)
	ctx := context.Background()
	data := a.project + "-data"
	if so := a.apply(a.config("v1", nil)); so.Error != "" {
		t.Fatal(so.Error)
	}
	if v, err := a.eng.InspectVolume(ctx, data); err != nil || v.Labels[plan.LabelProject] != a.project || v.Labels[plan.LabelRole] != plan.RoleData {
		t.Fatalf("the data volume's labels: %+v %v", v, err)
	}
	v2 := a.config("v2", nil)
	saved, err := executor.MakePlan(ctx, v2, a.eng, plan.PlanOptions{})
	if err != nil {
		t.Fatal(err)
	}

	// project "A-app" with a service "green": its live container is A's next candidate. Its
	// own volume, as A's is A's: declared for it too, its plan is refused first.
	b := a.besides(a.project + "-app")
	green := func(vol string) func(s *config.Service) {
		return func(s *config.Service) { s.Name, s.Volumes = "green", []*config.Volume{{Name: vol, Target: "/data"}} }
	}
	bp := b.config("b1", green(data))
	bp.Services[0].Name, bp.Services[0].ContainerName = "green", b.project+"-green"
	_, err = executor.MakePlan(ctx, bp, b.eng, plan.PlanOptions{})
	wantRefused(t, "project B mounting A's volume", err, "the volume "+data+" (mounted by service.green) is labelled for project \""+a.project+"\"", "shared = true")
	bp = b.config("b1", green(b.project+"-data"))
	bp.Services[0].ContainerName = b.project + "-green"
	if so := b.apply(bp); so.Error != "" {
		t.Fatal(so.Error)
	}
	// A's plan made before is applied in vain: refused at once, A still serves v1, B v1.
	out, err := a.applier(v2).Apply(ctx, saved)
	wantRefused(t, "A's saved plan", err, "the container name "+a.project+"-app-green (service.app's candidate) is taken by project \""+b.project+"\"'s service.green")
	if len(out.Services) != 0 || a.get("/") != "version=v1" || b.get("/") != "version=b1" {
		t.Fatalf("after the refused apply: %+v, A serves %q, B serves %q", out, a.get("/"), b.get("/"))
	}
	_, err = executor.MakePlan(ctx, v2, a.eng, plan.PlanOptions{})
	wantRefused(t, "A's plan", err, a.project+"-app-green", "project \""+b.project+"\"")

	// B's service goes (as `docker rm` would); A deploys v2, so that A-app-r1 is A's previous
	// release.
	obs, _ := plan.Observe(ctx, b.eng, projectOnly(b.project))
	for _, x := range obs.All {
		b.eng.RemoveContainer(ctx, x.ID)
	}
	if so := a.apply(v2); so.Error != "" || so.Release != 2 {
		t.Fatalf("A v2: %+v", so)
	}
	// project "A-app" now names a service "r1": its container would be A's previous release.
	r1 := b.config("b2", func(s *config.Service) {
		s.Name, s.Volumes = "r1", []*config.Volume{{Name: b.project + "-data", Target: "/data"}}
	})
	r1.Services[0].ContainerName = b.project + "-r1"
	_, err = executor.MakePlan(ctx, r1, b.eng, plan.PlanOptions{})
	wantRefused(t, "B's service r1", err, "the container name "+a.project+"-app-r1 (service.r1's live release) is taken by project \""+a.project+"\"'s service.app")

	// A container the deployer did not make under a name A derives, and its lock's name.
	r7 := a.squat(a.project + "-app-r7")
	v3 := a.config("v3", nil)
	_, err = executor.MakePlan(ctx, v3, a.eng, plan.PlanOptions{})
	wantRefused(t, "A-app-r7 from docker run", err, a.project+"-app-r7 (service.app's previous releases) is taken by container "+a.project+"-app-r7", "not made by the deployer")
	a.eng.RemoveContainer(ctx, r7)
	saved, err = executor.MakePlan(ctx, v3, a.eng, plan.PlanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	lock := a.squat(plan.LockName(a.project))
	app := a.applier(v3)
	app.LockTimeout = time.Minute
	start := time.Now()
	_, err = app.Apply(ctx, saved)
	wantRefused(t, "the lock's name", err, "the deploy lock's name "+plan.LockName(a.project)+" is taken by container "+plan.LockName(a.project), "not made by the deployer")
	took := time.Since(start)
	if took > 15*time.Second {
		t.Errorf("apply took %s to refuse the squatted lock, within -lock-timeout %s", took, app.LockTimeout)
	}
	t.Logf("the squatted lock refused in %s (-lock-timeout %s)", took.Round(time.Millisecond), app.LockTimeout)
	if _, err := a.eng.Inspect(ctx, lock); err != nil || a.get("/") != "version=v2" {
		t.Errorf("after the refusal: the squatter %v, A serves %q", err, a.get("/"))
	}
}

// A shared volume: both projects say shared = true, both mount it; a restore of it is refused
// while the other project's container runs on it, and goes ahead once it is stopped.
func TestSharedVolumeAndRestore(t *testing.T) {
	a := newRig(t)
	a.self = staticDeployer(t)
	ctx := context.Background()
	store := localStore(t)
	data := a.project + "-data"
	shared := func(s *config.Service) { s.Volumes[0].Shared = true; s.SQLite = nil }
	if so := a.apply(a.configWithStore("v1", store, shared)); so.Error != "" {
		t.Fatal(so.Error)
	}
	p := a.configWithStore("v2", store, shared)
	if so := a.apply(p); so.Error != "" {
		t.Fatal(so.Error)
	}
	list := a.backups(store, shared, "")
	if len(list.Complete) == 0 {
		t.Fatal("no backup")
	}
	m := list.Complete[0]
	b := a.besides(a.project + "-b")
	unshared := b.config("b1", nil)
	unshared.Services[0].Volumes[0].Name = data
	_, err := executor.MakePlan(ctx, unshared, b.eng, plan.PlanOptions{})
	wantRefused(t, "B without shared", err, "the volume "+data+" (mounted by service.app) is labelled for project \""+a.project+"\"", "set shared = true in the volume")
	bp := b.config("b1", func(s *config.Service) { s.Volumes[0].Name, s.Volumes[0].Shared = data, true })
	if so := b.apply(bp); so.Error != "" {
		t.Fatal(so.Error)
	}
	if h := b.get("/history"); !strings.Contains(h, "started v2") || !strings.Contains(h, "started b1") {
		t.Errorf("the shared volume's history as B reads it: %q", h)
	}
	// The restore stops A's live release only: B's container runs on the volume.
	_, err = a.restore(p, m.ID, executor.RestoreOptions{}, "")
	wantRefused(t, "restore beside B", err, "volume "+data+" is mounted by project \""+b.project+"\"'s service.app", "nothing was restored")
	if a.get("/") != "version=v2" || b.get("/") != "version=b1" {
		t.Errorf("after the refused restore: A %q, B %q", a.get("/"), b.get("/"))
	}
	// A container the deployer did not make, running on the volume, is refused the same way.
	bLive := func() string {
		obs, _ := plan.Observe(ctx, b.eng, projectOnly(b.project))
		return obs.Services["app"].Live.ID
	}
	if err := b.eng.StopContainer(ctx, bLive(), 2*time.Second); err != nil {
		t.Fatal(err)
	}
	other := a.squat(a.project+"-runner", data)
	if err := a.eng.StartContainer(ctx, other); err != nil {
		t.Fatal(err)
	}
	_, err = a.restore(p, m.ID, executor.RestoreOptions{}, "")
	wantRefused(t, "restore beside a docker run container", err, "volume "+data+" is mounted by container "+a.project+"-runner", "not made by the deployer")
	a.eng.StopContainer(ctx, other, time.Second)
	if _, err := a.restore(p, m.ID, executor.RestoreOptions{}, ""); err != nil {
		t.Fatalf("with nothing else running on the volume: %v", err)
	}
	if a.get("/") != "version=v2" {
		t.Errorf("after the restore A serves %q", a.get("/"))
	}
}

// Names the engine holds for other kinds: a network of the project's name that the deployer did
// not make, and a volume of its key's name that another project made, stop the plan before
// the key is read (and the engine's key call refuses the volume by itself).
func TestNetworkAndKeySquatted(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	cli := r.eng.Client()
	netName := plan.NetworkName(r.project)
	n, err := cli.NetworkCreate(ctx, netName, network.CreateOptions{Driver: "bridge"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.NetworkRemove(context.Background(), n.ID) })
	_, err = executor.MakePlan(ctx, r.config("v1", nil), r.eng, plan.PlanOptions{})
	wantRefused(t, "the network", err, "the network name "+netName+" (the project's network) is taken by a network not made by the deployer")
	if _, err := r.eng.EnsureNetwork(ctx, netName, map[string]string{plan.LabelProject: r.project}); err == nil || !strings.Contains(err.Error(), "not made by the deployer") {
		t.Errorf("the engine joined a network it did not make: %v", err)
	}
	cli.NetworkRemove(ctx, n.ID)
	key := r.project + "-deployer-key"
	if _, err := cli.VolumeCreate(ctx, volume.CreateOptions{Name: key, Labels: map[string]string{plan.LabelProject: "someone-else", "deployer.key": strings.Repeat("ab", 32)}}); err != nil {
		t.Fatal(err)
	}
	_, err = executor.MakePlan(ctx, r.config("v1", nil), r.eng, plan.PlanOptions{})
	wantRefused(t, "the key's volume", err, "the volume name "+key+" (the project's key) is taken by a volume labelled for project \"someone-else\"")
	_, err = r.eng.ProjectKey(ctx, r.project)
	wantRefused(t, "the key call", err, key, `labelled for project "someone-else"`)
	t.Logf("%d collisions tried in the tests of this binary so far", collisions.Load())
}
