package executor_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor"
	"github.com/deployer-dev/deployer/executor/engine"
	"github.com/deployer-dev/deployer/executor/engine/memengine"
	"github.com/deployer-dev/deployer/executor/plan"
)

// Destroy removes what the deployer made for the project (releases, proxy, network, key, the
// proxy's state) and keeps the data volumes and backups; a second destroy finds nothing, and a
// deploy afterwards finds its data. With DeleteVolumes the data volume is backed up first (the
// backup named) and goes, unless a container of another project mounts it.
func TestMemDestroy(t *testing.T) {
	forCutovers(t, func(t *testing.T, r *memRig) {
		ctx := context.Background()
		r.apply(r.config("v1", nil))
		r.apply(r.config("v2", nil))
		p := r.config("v2", nil)
		data := r.project + "-data"

		// Another project whose name starts with this one's, on the same engine: nothing of it goes.
		other := r.project + "-proxy"
		if err := r.eng.CreateVolume(ctx, other+"-scratch", map[string]string{engine.LabelProject: other, engine.LabelRole: plan.RoleScratch}); err != nil {
			t.Fatal(err)
		}
		if _, err := r.eng.EnsureNetwork(ctx, other+"-net", map[string]string{engine.LabelProject: other}); err != nil {
			t.Fatal(err)
		}
		if _, err := r.eng.CreateContainer(ctx, engine.ContainerSpec{Name: other + "-app", Image: memApp,
			Labels: map[string]string{engine.LabelProject: other, engine.LabelService: "app", engine.LabelRole: plan.RoleLive, engine.LabelRelease: "1"}}); err != nil {
			t.Fatal(err)
		}
		if _, err := r.eng.ProjectKey(ctx, other); err != nil {
			t.Fatal(err)
		}
		defer func() {
			obs, _ := plan.Observe(ctx, r.eng, projectOnly(other))
			nets, _ := r.eng.Networks(ctx, other)
			key, _ := r.eng.ReadProjectKey(ctx, other)
			if obs == nil || len(obs.All) != 1 || len(nets) != 1 || key == nil || !r.eng.HasVolume(other+"-scratch") {
				t.Errorf("destroy touched project %s: %+v, networks %q, key %v", other, obs, nets, key != nil)
			}
		}()

		// Destroy takes the deploy lock: while an apply elsewhere holds it, nothing goes.
		lock, err := r.eng.CreateContainer(ctx, engine.ContainerSpec{Name: plan.LockName(r.project), Image: "deployer-lock",
			Labels: map[string]string{engine.LabelProject: r.project, engine.LabelRole: plan.RoleLock, engine.LabelHolder: "ci@runner-7 pid 4242"}})
		if err != nil {
			t.Fatal(err)
		}
		held, err := plan.PlanDestroy(ctx, p, r.eng, plan.DestroyOptions{})
		if err != nil || held.Lock == "" {
			t.Fatalf("the plan does not name the lock's holder: %+v %v", held, err)
		}
		if _, err := r.applier(p).Destroy(ctx, held); err == nil || !strings.Contains(err.Error(), "is held by ci@runner-7 pid 4242") {
			t.Fatalf("destroy while the lock is held: %v", err)
		}
		if !r.serves("v2") {
			t.Fatalf("destroy removed something while the lock was held: %s", r.state())
		}
		r.eng.RemoveContainer(ctx, lock)

		dp, err := plan.PlanDestroy(ctx, p, r.eng, plan.DestroyOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var text strings.Builder
		dp.WriteText(&text)
		for _, want := range []string{"release 2 of service.app (live, running)", "release 1 of service.app (previous, ", r.project + "-net",
			"volume " + data, "data of service.app (destroy -delete-volumes removes it, after a backup)", "Backups in the backup stores are kept."} {
			if !strings.Contains(text.String(), want) {
				t.Errorf("the destroy plan lacks %q:\n%s", want, text.String())
			}
		}
		if !dp.Key {
			t.Errorf("the plan does not remove the project's key")
		}
		out, err := r.applier(p).Destroy(ctx, dp)
		if err != nil {
			t.Fatalf("destroy: %v (%+v)", err, out)
		}
		r.expectGone(ctx)
		if !r.eng.HasVolume(data) {
			t.Fatalf("the data volume went without -delete-volumes")
		}
		if again, err := plan.PlanDestroy(ctx, p, r.eng, plan.DestroyOptions{}); err != nil || !again.Empty() {
			t.Errorf("a second destroy finds %+v %v", again, err)
		}

		// The next deploy starts on the data kept.
		r.apply(r.config("v3", nil))
		if h := r.get("/history"); !strings.Contains(h, "started v1") || !strings.Contains(h, "started v3") {
			t.Errorf("history after destroy and deploy: %q", h)
		}

		// Another project's container mounts the data volume: it stays, even with -delete-volumes.
		foreign, err := r.eng.CreateContainer(ctx, engine.ContainerSpec{Name: r.project + "-intruder", Image: memApp,
			Labels: map[string]string{engine.LabelProject: r.project + "-other", engine.LabelService: "x"}, Volumes: []engine.VolumeMount{{Name: data, Target: "/data"}}})
		if err != nil {
			t.Fatal(err)
		}
		dp, err = plan.PlanDestroy(ctx, p, r.eng, plan.DestroyOptions{DeleteVolumes: true})
		if err != nil {
			t.Fatal(err)
		}
		text.Reset()
		dp.WriteText(&text)
		if !strings.Contains(text.String(), "also mounted by project \""+r.project+"-other\"") || len(dp.Backups) != 0 {
			t.Errorf("a volume another project mounts:\n%s", text.String())
		}
		if _, err := r.applier(p).Destroy(ctx, dp); err != nil {
			t.Fatal(err)
		}
		if !r.eng.HasVolume(data) {
			t.Fatalf("destroy -delete-volumes deleted a volume another project mounts")
		}
		r.eng.RemoveContainer(ctx, foreign)

		// -delete-volumes: backed up, named, then deleted.
		r.apply(r.config("v4", nil))
		dp, err = plan.PlanDestroy(ctx, p, r.eng, plan.DestroyOptions{DeleteVolumes: true})
		if err != nil {
			t.Fatal(err)
		}
		if len(dp.Backups) != 1 || !strings.Contains(dp.Backups[0].Detail, "volumes "+data+" from release") {
			t.Fatalf("backups planned: %+v", dp.Backups)
		}
		out, err = r.applier(p).Destroy(ctx, dp)
		if err != nil {
			t.Fatal(err)
		}
		if len(out.Backups) != 1 || !strings.Contains(out.Backups[0], "of service.app ("+data+") in "+r.store) {
			t.Errorf("backups named: %q", out.Backups)
		}
		r.expectGone(ctx)
		if r.eng.HasVolume(data) {
			t.Errorf("the data volume stays with -delete-volumes")
		}
		sb, err := executor.OpenBackups(ctx, p, p.Service("app"), "")
		if err != nil {
			t.Fatal(err)
		}
		l, err := sb.List(ctx)
		id, found := strings.Fields(out.Backups[0])[1], false
		for _, m := range l.Complete {
			found = found || m.ID == id && m.Reason == "destroy -delete-volumes"
		}
		if err != nil || !found {
			t.Errorf("the backup %s is not a complete one in the store: %+v %v", id, l, err)
		}
	})
}

// expectGone checks that nothing the deployer made for the project is left.
func (r *memRig) expectGone(ctx context.Context) {
	r.t.Helper()
	if obs, err := plan.Observe(ctx, r.eng, projectOnly(r.project)); err != nil || len(obs.All) != 0 {
		r.t.Errorf("containers left: %s (%v)", releaseState(r.t, r.eng, r.project, false), err)
	}
	if nets, err := r.eng.Networks(ctx, r.project); err != nil || len(nets) != 0 {
		r.t.Errorf("networks left: %q %v", nets, err)
	}
	vols, err := r.eng.Volumes(ctx, r.project)
	if err != nil {
		r.t.Errorf("volumes: %v", err)
	}
	for _, v := range vols {
		if v.Labels[plan.LabelRole] != plan.RoleData { // the services' data stays
			r.t.Errorf("the deployer's volume %s is left (%v)", v.Name, v.Labels)
		}
	}
	if key, err := r.eng.ReadProjectKey(ctx, r.project); key != nil || err != nil {
		r.t.Errorf("the project's key is left (%v)", err)
	}
	if r.eng.HasVolume(plan.ProxyName(r.project) + "-state") {
		r.t.Errorf("the proxy's state volume is left")
	}
}

// With engine blocks destroy plans every engine, takes the lock on all of them, and removes the
// project from each: every engine's proxy, releases, network and key go, and no port answers.
// An engine that cannot be read stops it before anything goes.
func TestMemFleetDestroy(t *testing.T) {
	r := newFleetRig(t, config.CutoverProxy)
	for _, n := range r.names {
		r.engines[n].Image(memApp, memengine.App, map[string]string{"PATH": "/bin"})
	}
	ctx := context.Background()
	p := r.config("v1", nil)
	if by, err := r.apply(p); err != nil || len(by) != 3 {
		t.Fatal(err, by)
	}
	if got := r.serves(); strings.Count(got, "version=v1") != 3 {
		t.Fatalf("before destroy: %s", got)
	}
	r.engines["web2"].Fail("ping", "", 1, errors.New("engine gone"))
	if _, err := r.fleet(p).DestroyPlans(ctx, plan.DestroyOptions{}); err == nil || !strings.Contains(err.Error(), "engine web2") {
		t.Fatalf("an engine that cannot be read: %v", err)
	}
	plans, err := r.fleet(p).DestroyPlans(ctx, plan.DestroyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range r.names {
		if dp := plans[n]; dp == nil || dp.EngineName != n || len(dp.Containers) != 2 || !dp.Key {
			t.Errorf("%s's destroy plan: %+v", n, dp)
		}
	}
	outs, err := r.fleet(p).Destroy(ctx, plans)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range r.names {
		eng := r.engines[n]
		if out := outs[n]; out == nil || out.Removed < 4 {
			t.Errorf("%s: %+v", n, out)
		}
		if obs, err := plan.Observe(ctx, eng, projectOnly(r.project)); err != nil || len(obs.All) != 0 {
			t.Errorf("%s: containers left (%v)", n, err)
		}
		if nets, _ := eng.Networks(ctx, r.project); len(nets) != 0 {
			t.Errorf("%s: networks left: %q", n, nets)
		}
		if key, _ := eng.ReadProjectKey(ctx, r.project); key != nil {
			t.Errorf("%s: the key is left", n)
		}
	}
	if got := r.serves(); strings.Contains(got, "version=") {
		t.Errorf("after destroy: %s", got)
	}
}
