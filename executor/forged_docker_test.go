package executor_test

import (
	"archive/tar"
	"context"
	"io"
	"net/netip"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor"
	"github.com/deployer-dev/deployer/executor/docker/dockertest"
	"github.com/deployer-dev/deployer/executor/engine"
	"github.com/deployer-dev/deployer/executor/plan"
)

// forge creates, with a plain engine call (docker create --name NAME --label ... -e ... -v
// VOLUME:/data IMAGE), a container of the test app serving version from volume, and starts it
// when run. It is removed when the test ends.
func (r *rig) forge(name string, labels map[string]string, version, volume string, run bool) string {
	r.t.Helper()
	forgeries.Add(1)
	ctx := context.Background()
	cli := r.eng.Client()
	cfg := &container.Config{Image: r.image, Labels: labels, Env: []string{"APP_VERSION=" + version, "APP_DATA=/data"}}
	host := &container.HostConfig{}
	if volume != "" {
		host.Binds = []string{volume + ":/data"}
	}
	resp, err := cli.ContainerCreate(ctx, cfg, host, nil, nil, name)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { cli.ContainerRemove(context.Background(), resp.ID, container.RemoveOptions{Force: true}) })
	if run {
		if err := cli.ContainerStart(ctx, resp.ID, container.StartOptions{}); err != nil {
			r.t.Fatal(err)
		}
	}
	return resp.ID
}

// fileIn reads one file of a container.
func (r *rig) fileIn(id, path string) string {
	r.t.Helper()
	rc, err := r.eng.CopyFrom(context.Background(), id, path)
	if err != nil {
		return "error: " + err.Error()
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	if _, err := tr.Next(); err != nil {
		return "error: " + err.Error()
	}
	b, _ := io.ReadAll(tr)
	return string(b)
}

// On the real engine, with labels forged by plain engine calls as the review did: a container
// labelled as the live release and one as a previous release under names of the attacker's, one
// run from the service's built image, a squatted -old-N, addresses of the project's network
// taken with `docker network connect --ip`, and the helper image's tag moved to another image.
// Plan and status show the forged releases as ignored; the deploy, a backup and its restore, and
// a rollback all act on the genuine releases only; the proxy keeps running the deployer's own
// image; nothing forged is removed, started or stopped.
func TestForgedOnTheEngine(t *testing.T) {
	r := proxyRig(t)
	ctx := context.Background()
	cli := r.eng.Client()
	store := localStore(t)
	dir := t.TempDir()
	dockertest.AppContext(t, dir)
	cfg := func(v string) *config.Project {
		p := r.configWithStore(v, store, func(s *config.Service) {
			noDB(s)
			s.Deploy.Cutover, s.Deploy.KeepReleases = config.CutoverProxy, 3
			s.Image, s.Build = r.project+"-app:latest", config.NewBuild()
		})
		p.Dir = dir
		return p
	}
	t.Cleanup(func() { r.eng.RemoveImage(context.Background(), r.project+"-app:latest") })
	for _, v := range []string{"v1", "v2"} {
		if so := r.apply(cfg(v)); so.Error != "" {
			t.Fatalf("%s: %+v", v, so)
		}
	}
	live := r.project + "-app"
	// The live release is the container bearing the container_name (r.liveID would read the
	// project without its configuration: the forged live release below would stand beside it).
	liveID := func() string {
		st, err := r.eng.Inspect(ctx, live)
		if err != nil {
			t.Fatal(err)
		}
		return st.ID
	}
	r.putFiles(liveID(), "/data", map[string][]byte{"secret.txt": []byte("the victim's")})
	labels := func(name string, changes map[string]string) map[string]string {
		return labelsOf(t, r.eng, name, changes)
	}
	attackerVol := r.project + "-attacker"
	t.Cleanup(func() { cli.VolumeRemove(context.Background(), attackerVol, true) })

	// Findings 2 and 3: labelled as the live release, naming itself as the live name, on a volume
	// of the attacker's that holds its own secret.txt.
	evilLive := r.forge(r.project+"-attacker-live", labels(live, map[string]string{plan.LabelRelease: "50", plan.LabelAddress: "", plan.LabelLiveName: r.project + "-attacker-live"}), "PWNED", attackerVol, true)
	r.putFiles(evilLive, "/data", map[string][]byte{"secret.txt": []byte("PWNED")})
	// Finding 1: labelled as a previous release.
	evilPrev := r.forge(r.project+"-attacker-prev", labels(live+"-r1", map[string]string{plan.LabelRelease: "9", plan.LabelAddress: ""}), "PWNED", "", false)
	// Finding 5: docker run -d IMAGE, from the service's built image.
	forgeries.Add(1)
	debug, err := cli.ContainerCreate(ctx, &container.Config{Image: r.project + "-app:latest", Env: []string{"APP_VERSION=debug"}}, nil, nil, nil, r.project+"-operator-debug")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.ContainerRemove(context.Background(), debug.ID, container.RemoveOptions{Force: true}) })
	cli.ContainerStart(ctx, debug.ID, container.StartOptions{})
	if st, err := r.eng.Inspect(ctx, debug.ID); err != nil || st.Spec.Labels[plan.LabelProject] != "" || st.Spec.Labels[plan.LabelImageProject] != r.project {
		t.Errorf("a container run from the built image carries: %v %v", st.Spec.Labels, err)
	}
	// Finding 6: an -old-N name, without labels, on the service's data.
	old7 := r.forge(live+"-old-7", nil, "PWNED", r.project+"-data", false)
	_, err = executor.MakePlan(ctx, cfg("v3"), r.eng, plan.PlanOptions{})
	wantRefused(t, "a squatted -old-7", err, live+"-old-7", "no interrupted takeover of the deployer set it aside")
	cli.ContainerRemove(ctx, old7, container.RemoveOptions{Force: true})

	// Finding 9: the next free fixed addresses, taken with docker network connect --ip.
	netName := plan.NetworkName(r.project)
	n, err := cli.NetworkInspect(ctx, netName, network.InspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	fixed := netip.MustParsePrefix(n.Labels[engine.LabelFixedRange])
	used := map[string]bool{}
	obs, _ := plan.Observe(ctx, r.eng, cfg("v2"))
	for _, c := range obs.All {
		used[c.Labels[plan.LabelAddress]] = true
	}
	var squatted []string
	for a := fixed.Addr().Next().Next(); len(squatted) < 2; a = a.Next() {
		if used[a.String()] {
			continue
		}
		id := r.forge("", nil, "PWNED", "", true)
		if err := cli.NetworkConnect(ctx, netName, id, &network.EndpointSettings{IPAMConfig: &network.EndpointIPAMConfig{IPv4Address: a.String()}}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cli.NetworkDisconnect(context.Background(), netName, id, true) })
		squatted = append(squatted, a.String())
	}
	// Finding 7: the helper image's tag moved to another image.
	px, err := r.eng.Inspect(ctx, plan.ProxyName(r.project))
	if err != nil {
		t.Fatal(err)
	}
	img, _, err := cli.ImageInspectWithRaw(ctx, px.ImageID)
	if err != nil || len(img.RepoTags) == 0 || !strings.HasPrefix(img.RepoTags[0], "deployer-helper:") {
		t.Fatalf("the proxy's image: %v %v", img.RepoTags, err)
	}
	forgeries.Add(1)
	if err := cli.ImageTag(ctx, r.image, img.RepoTags[0]); err != nil {
		t.Fatal(err)
	}

	p := cfg("v3")
	st, err := executor.GetStatus(ctx, p, r.eng, "", false)
	if err != nil {
		t.Fatal(err)
	}
	if s := st.Services[0]; s.LiveRelease != 2 || s.Container != live || len(s.Previous) != 1 {
		t.Errorf("status: %+v", s)
	}
	ignoredSays(t, st.Ignored, r.project+"-attacker-live", `release "50"`)
	ignoredSays(t, st.Ignored, r.project+"-attacker-prev", `a previous release of service.app (release "9")`)
	pl, err := executor.MakePlan(ctx, p, r.eng, plan.PlanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(pl.Ignored) != 2 || pl.Changes[0].Takeover != nil || pl.Changes[0].LiveRelease != 2 {
		t.Errorf("plan: ignored %+v, change %+v", pl.Ignored, pl.Changes[0])
	}
	for _, step := range pl.Steps {
		if step.ContainerID != "" {
			t.Errorf("the plan acts on a container: %s %s", step.Name, step.Detail)
		}
	}
	out, err := r.applier(p).Apply(ctx, pl)
	if err != nil || out.Failed() || r.get("/") != "version=v3" {
		t.Fatalf("apply beside the forgeries: %v %s, serving %q", err, errorsOf(out), r.get("/"))
	}
	newLive, _ := r.eng.Inspect(ctx, live)
	for _, a := range squatted {
		if newLive.Spec.IP == a {
			t.Errorf("the new release was given %s, which a container connected to the network holds", a)
		}
	}
	if px2, err := r.eng.Inspect(ctx, plan.ProxyName(r.project)); err != nil || px2.ImageID != px.ImageID || !px2.Running {
		t.Errorf("the proxy after the helper tag was moved: %+v %v (its image was %s)", px2, err, px.ImageID)
	}
	if id, err := r.eng.ImageID(ctx, img.RepoTags[0]); err != nil || id != px.ImageID {
		t.Errorf("the helper tag points to %s (%v), not the deployer's own image %s", id, err, px.ImageID)
	}

	// A backup and its restore read and write the genuine data only.
	m, err := r.applier(p).Backup(ctx, "app")
	if err != nil || m.Release != 3 {
		t.Fatalf("backup: %+v %v", m, err)
	}
	r.putFiles(liveID(), "/data", map[string][]byte{"secret.txt": []byte("changed since")})
	if _, err := r.restore(p, m.ID, executor.RestoreOptions{}, ""); err != nil {
		t.Fatalf("restore: %v", err)
	}
	if got := r.fileIn(liveID(), "/data/secret.txt"); got != "the victim's" {
		t.Errorf("after the restore, the service's secret.txt: %q", got)
	}
	if got := r.fileIn(evilLive, "/data/secret.txt"); got != "PWNED" {
		t.Errorf("the attacker's volume: %q", got)
	}
	// rollback brings back the genuine release 2.
	if so, err := r.applier(p).Rollback(ctx, "app", 0); err != nil || so.Error != "" || so.Release != 2 || r.get("/") != "version=v2" {
		t.Fatalf("rollback: %+v %v, serving %q", so, err, r.get("/"))
	}
	for id, state := range map[string]string{evilLive: "running", evilPrev: "created", debug.ID: "running"} {
		if st, err := r.eng.Inspect(ctx, id); err != nil || st.Status != state {
			t.Errorf("a forged container: %+v %v, want %s", st, err, state)
		}
	}
}

// A bind mount of a volume's directory on the host (docker run -v
// /var/lib/docker/volumes/DATA/_data:/data) reaches the volume's files as a mount of the volume
// does: plan refuses the volume while it is so bound, naming the container, and a restore would
// refuse it while that container runs.
func TestBindOfAVolumeIsAMount(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	if so := r.apply(r.config("v1", nil)); so.Error != "" {
		t.Fatal(so.Error)
	}
	info, err := r.eng.Client().Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	data := r.project + "-data"
	forgeries.Add(1)
	cfg := &container.Config{Image: r.image, Env: []string{"APP_VERSION=PWNED", "APP_DATA=/data"}}
	host := &container.HostConfig{Binds: []string{info.DockerRootDir + "/volumes/" + data + "/_data:/data"}}
	resp, err := r.eng.Client().ContainerCreate(ctx, cfg, host, nil, nil, r.project+"-binder")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.eng.Client().ContainerRemove(context.Background(), resp.ID, container.RemoveOptions{Force: true})
	})
	if err := r.eng.Client().ContainerStart(ctx, resp.ID, container.StartOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err = executor.MakePlan(ctx, r.config("v2", nil), r.eng, plan.PlanOptions{})
	wantRefused(t, "a bind of the volume's directory", err, "the volume "+data+" (mounted by service.app) is in use by container "+r.project+"-binder", "not made by the deployer")
}
