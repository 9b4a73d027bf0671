// Package enginetest is the conformance suite of the engine port: what the executor relies on an
// engine to do, checked the same way against every implementation (executor/docker against the
// real engine, memengine in memory), as the backup stores share one suite.
package enginetest

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/deployer-dev/deployer/executor/engine"
)

// Fixture is one engine to check, for one test.
type Fixture struct {
	Engine engine.Runtime
	// Project is a project name no other test uses; the fixture removes what is labelled with
	// it, and the volumes named with it as prefix, when the test ends.
	Project string
	// App is an image of the test app (package executor/engine/testapp), run with its entry
	// point: the container's command is the app's arguments.
	App string
	// AppPort is the port the app listens on in its containers (APP_PORT); 0 is the app's
	// default, 8080, right where each container has a network of its own. An engine whose
	// containers share this machine's loopback (memengine) gives a free port: *:8080 may be
	// held here by something else, such as the quickstart's proxy.
	AppPort int
}

// port is the app's port in its containers.
func (f Fixture) port() int {
	if f.AppPort == 0 {
		return 8080
	}
	return f.AppPort
}

// Run runs the suite; fixture makes a fixture for each test.
func Run(t *testing.T, fixture func(t *testing.T) Fixture) {
	for _, c := range []struct {
		name string
		test func(t *testing.T, f Fixture)
	}{
		{"names", names},
		{"lifecycle", lifecycle},
		{"rename", rename},
		{"network", fixedAddresses},
		{"volumes", volumes},
		{"labelled volumes", labelledVolumes},
		{"owners", owners},
		{"one-off", oneOff},
		{"kill after the stop timeout", killAfterTimeout},
		{"restart policy", restartPolicy},
		{"port taken", portTaken},
		{"project key", projectKey},
		{"teardown", teardown},
	} {
		t.Run(c.name, func(t *testing.T) { c.test(t, fixture(t)) })
	}
}

func (f Fixture) spec(name string, env map[string]string) engine.ContainerSpec {
	if f.AppPort != 0 {
		with := map[string]string{"APP_PORT": strconv.Itoa(f.AppPort)}
		for k, v := range env {
			with[k] = v
		}
		env = with
	}
	return engine.ContainerSpec{Name: f.Project + "-" + name, Image: f.App, Env: env, Labels: map[string]string{engine.LabelProject: f.Project, engine.LabelService: name}}
}

func (f Fixture) create(t *testing.T, s engine.ContainerSpec) string {
	t.Helper()
	id, err := f.Engine.CreateContainer(context.Background(), s)
	if err != nil {
		t.Fatalf("create %s: %v", s.Name, err)
	}
	return id
}

func names(t *testing.T, f Fixture) {
	ctx := context.Background()
	s := f.spec("a", nil)
	id := f.create(t, s)
	if _, err := f.Engine.CreateContainer(ctx, s); !errors.Is(err, engine.ErrNameTaken) {
		t.Errorf("a second container of the name: %v, want ErrNameTaken", err)
	}
	for _, ref := range []string{id, s.Name} {
		if st, err := f.Engine.Inspect(ctx, ref); err != nil || st.ID != id || st.Name != s.Name || st.Running {
			t.Errorf("inspect %s: %+v %v", ref, st, err)
		}
	}
	if _, err := f.Engine.Inspect(ctx, f.Project+"-none"); !errors.Is(err, engine.ErrNotFound) {
		t.Errorf("inspect of no container: %v, want ErrNotFound", err)
	}
	if err := f.Engine.RemoveContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := f.Engine.RemoveContainer(ctx, id); err != nil {
		t.Errorf("removing a container that is gone: %v, want none", err)
	}
	if _, err := f.Engine.ImageID(ctx, f.Project+"-no-such-image:1"); !errors.Is(err, engine.ErrNotFound) {
		t.Errorf("image id of no image: %v, want ErrNotFound", err)
	}
}

// lifecycle: created, started with a published port that answers, listed with its labels and
// port, paused, stopped, started again.
func lifecycle(t *testing.T, f Fixture) {
	ctx := context.Background()
	s := f.spec("web", map[string]string{"APP_VERSION": "v1"})
	s.Ports = []engine.PortBinding{{Container: f.port(), HostIP: "127.0.0.1"}}
	id := f.create(t, s)
	if err := f.Engine.StartContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	st, err := f.Engine.Inspect(ctx, id)
	if err != nil || !st.Running || st.Ports[f.port()] == 0 {
		t.Fatalf("started: %+v %v", st, err)
	}
	if got := waitGet(t, st.Ports[f.port()], "/"); got != "version=v1" {
		t.Errorf("the published port answers %q", got)
	}
	list, err := f.Engine.Containers(ctx, f.Project)
	if err != nil || len(list) != 1 || list[0].ID != id || list[0].Labels[engine.LabelService] != "web" || !list[0].Running() ||
		len(list[0].Published) != 1 || list[0].Published[0].HostPort != st.Ports[f.port()] {
		t.Errorf("list: %+v %v", list, err)
	}
	if err := f.Engine.Pause(ctx, id); err != nil {
		t.Fatal(err)
	}
	if list, _ := f.Engine.Containers(ctx, f.Project); len(list) != 1 || list[0].State != "paused" {
		t.Errorf("paused: %+v", list)
	}
	if err := f.Engine.Unpause(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := f.Engine.StopContainer(ctx, id, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if st, _ := f.Engine.Inspect(ctx, id); st.Running || st.ExitCode != 0 {
		t.Errorf("stopped: running %v, exit code %d", st.Running, st.ExitCode)
	}
	if err := f.Engine.StartContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	st, _ = f.Engine.Inspect(ctx, id)
	if got := waitGet(t, st.Ports[f.port()], "/"); got != "version=v1" {
		t.Errorf("started again: %q", got)
	}
}

func rename(t *testing.T, f Fixture) {
	ctx := context.Background()
	a, b := f.create(t, f.spec("a", nil)), f.create(t, f.spec("b", nil))
	if err := f.Engine.RenameContainer(ctx, a, f.Project+"-c"); err != nil {
		t.Fatal(err)
	}
	if st, err := f.Engine.Inspect(ctx, f.Project+"-c"); err != nil || st.ID != a {
		t.Errorf("renamed: %+v %v", st, err)
	}
	if err := f.Engine.RenameContainer(ctx, b, f.Project+"-c"); err == nil {
		t.Error("renamed to a name in use")
	}
	if err := f.Engine.RenameContainer(ctx, a, f.Project+"-c"); err == nil || !strings.Contains(err.Error(), "same name") {
		t.Errorf("renamed to its own name: %v, want an error saying so", err)
	}
}

// fixedAddresses: a network's fixed range gives a container the address it was created with,
// where its port answers.
func fixedAddresses(t *testing.T, f Fixture) {
	ctx := context.Background()
	name := f.Project + "-net"
	fixed, err := f.Engine.EnsureNetwork(ctx, name, map[string]string{engine.LabelProject: f.Project})
	if err != nil {
		t.Fatal(err)
	}
	again, err := f.Engine.EnsureNetwork(ctx, name, map[string]string{engine.LabelProject: f.Project})
	if err != nil || again != fixed {
		t.Errorf("a second EnsureNetwork: %q %v, want %q", again, err, fixed)
	}
	prefix, err := netip.ParsePrefix(fixed)
	if err != nil {
		t.Fatalf("fixed range %q: %v", fixed, err)
	}
	addr := prefix.Addr().Next().Next().Next().String()
	s := f.spec("web", map[string]string{"APP_VERSION": "v1"})
	s.Network, s.IP = name, addr
	id := f.create(t, s)
	if err := f.Engine.StartContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	st, err := f.Engine.Inspect(ctx, id)
	if err != nil || st.IPs[name] != addr {
		t.Fatalf("address: %+v %v, want %s", st.IPs, err, addr)
	}
	if got := waitGetAddr(t, net.JoinHostPort(addr, strconv.Itoa(f.port())), "/"); got != "version=v1" {
		t.Errorf("at its address: %q", got)
	}
	// What holds an address: every container connected to the network, whoever made it.
	if got, err := f.Engine.NetworkAddresses(ctx, name); err != nil || !strings.HasSuffix(got[addr], f.Project+"-web") {
		t.Errorf("the network's addresses: %v %v, want %s held by %s-web", got, err, addr, f.Project)
	}
	// A second container given the same address does not start.
	s2 := f.spec("web2", map[string]string{"APP_VERSION": "v2"})
	s2.Network, s2.IP = name, addr
	if err := f.Engine.StartContainer(ctx, f.create(t, s2)); err == nil || !strings.Contains(err.Error(), "ddress already in use") {
		t.Errorf("a second container at %s: %v, want \"Address already in use\"", addr, err)
	}
	if _, err := f.Engine.NetworkAddresses(ctx, f.Project+"-no-net"); !errors.Is(err, engine.ErrNotFound) {
		t.Errorf("the addresses of a network that does not exist: %v, want ErrNotFound", err)
	}
}

// volumes: what the app writes to its volume is copied out as a tar named after the path's base,
// and a tar copied in is there.
func volumes(t *testing.T, f Fixture) {
	ctx := context.Background()
	s := f.spec("data", map[string]string{"APP_VERSION": "v1", "APP_DATA": "/data"})
	s.Volumes = []engine.VolumeMount{{Name: f.Project + "-data", Target: "/data"}}
	id := f.create(t, s)
	if err := f.Engine.StartContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	var files map[string]string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if files = copyOut(t, f, id, "/data"); strings.Contains(files["data/history"], "started v1") {
			break
		}
	}
	if !strings.Contains(files["data/history"], "started v1") {
		t.Errorf("copy of /data: %v", files)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "data/restored", Mode: 0o644, Size: 2, Typeflag: tar.TypeReg})
	tw.Write([]byte("ok"))
	tw.Close()
	if err := f.Engine.CopyTo(ctx, id, "/", &buf); err != nil {
		t.Fatal(err)
	}
	if got := copyOut(t, f, id, "/data/restored"); got["restored"] != "ok" {
		t.Errorf("copied in: %v", got)
	}
	if _, err := f.Engine.CopyFrom(ctx, id, "/data/none"); !errors.Is(err, engine.ErrNotFound) {
		t.Errorf("copy of a file that does not exist: %v, want ErrNotFound", err)
	}
}

// labelledVolumes: the deployer's own volumes are made with labels and listed by project; a
// service's volume of the same name is never taken for one.
func labelledVolumes(t *testing.T, f Fixture) {
	ctx := context.Background()
	name := f.Project + "-web-snapshots"
	labels := map[string]string{engine.LabelProject: f.Project, engine.LabelService: "web", engine.LabelRole: "scratch"}
	if err := f.Engine.CreateVolume(ctx, name, labels); err != nil {
		t.Fatal(err)
	}
	if err := f.Engine.CreateVolume(ctx, name, labels); err != nil {
		t.Errorf("made again: %v, want it kept", err)
	}
	vols, err := f.Engine.Volumes(ctx, f.Project)
	if err != nil || len(vols) != 1 || vols[0].Name != name || vols[0].Labels[engine.LabelRole] != "scratch" {
		t.Errorf("volumes of the project: %+v %v", vols, err)
	}
	if vols, err := f.Engine.Volumes(ctx, f.Project+"-other"); err != nil || len(vols) != 0 {
		t.Errorf("volumes of another project: %+v %v", vols, err)
	}
	// A service's volume (made by mounting it, without labels) is not the deployer's to use.
	s := f.spec("data", nil)
	s.Volumes = []engine.VolumeMount{{Name: f.Project + "-data", Target: "/data"}}
	f.create(t, s)
	if err := f.Engine.CreateVolume(ctx, f.Project+"-data", labels); !errors.Is(err, engine.ErrNameTaken) {
		t.Errorf("a service's volume of that name: %v, want ErrNameTaken", err)
	}
	if err := f.Engine.RemoveVolume(ctx, name); err != nil {
		t.Fatal(err)
	}
	if vols, err := f.Engine.Volumes(ctx, f.Project); err != nil || len(vols) != 0 {
		t.Errorf("after removal: %+v %v", vols, err)
	}
}

// owners: what tells whose a name is. A container lists the volumes it mounts, running or not;
// a volume, a network and an image show their labels; a network of a name made for something
// else is not joined.
func owners(t *testing.T, f Fixture) {
	ctx := context.Background()
	data := f.Project + "-owned"
	s := f.spec("mounts", nil)
	s.Volumes = []engine.VolumeMount{{Name: data, Target: "/data"}}
	id := f.create(t, s)
	all, err := f.Engine.AllContainers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, c := range all {
		if c.ID == id {
			found = true
			if len(c.Mounts) != 1 || c.Mounts[0] != data {
				t.Errorf("a stopped container's mounts: %v, want [%s]", c.Mounts, data)
			}
		}
	}
	if !found {
		t.Fatalf("container %s is not listed", id)
	}
	if v, err := f.Engine.InspectVolume(ctx, data); err != nil || v.Name != data || v.Labels[engine.LabelProject] != "" {
		t.Errorf("a volume made by mounting it: %+v %v, want it without the deployer's labels", v, err)
	}
	if _, err := f.Engine.InspectVolume(ctx, f.Project+"-none"); !errors.Is(err, engine.ErrNotFound) {
		t.Errorf("a volume that does not exist: %v, want ErrNotFound", err)
	}
	labelled := f.Project + "-labelled"
	if err := f.Engine.CreateVolume(ctx, labelled, map[string]string{engine.LabelProject: f.Project, engine.LabelRole: "data"}); err != nil {
		t.Fatal(err)
	}
	if v, err := f.Engine.InspectVolume(ctx, labelled); err != nil || v.Labels[engine.LabelProject] != f.Project || v.Labels[engine.LabelRole] != "data" {
		t.Errorf("a labelled volume: %+v %v", v, err)
	}
	if err := f.Engine.RemoveVolume(ctx, labelled); err != nil {
		t.Error(err)
	}
	net := f.Project + "-owners-net"
	if _, err := f.Engine.EnsureNetwork(ctx, net, map[string]string{engine.LabelProject: f.Project}); err != nil {
		t.Fatal(err)
	}
	if l, err := f.Engine.NetworkLabels(ctx, net); err != nil || l[engine.LabelProject] != f.Project {
		t.Errorf("the network's labels: %v %v", l, err)
	}
	if _, err := f.Engine.EnsureNetwork(ctx, net, map[string]string{engine.LabelProject: f.Project + "-other"}); !errors.Is(err, engine.ErrNameTaken) {
		t.Errorf("a network of the name made for another project: %v, want ErrNameTaken", err)
	}
	if _, err := f.Engine.NetworkLabels(ctx, f.Project+"-no-net"); !errors.Is(err, engine.ErrNotFound) {
		t.Errorf("a network that does not exist: %v, want ErrNotFound", err)
	}
	if _, err := f.Engine.ImageLabels(ctx, f.App); err != nil {
		t.Errorf("the app image's labels: %v", err)
	}
	if _, err := f.Engine.ImageLabels(ctx, f.Project+"-no-such-image:1"); !errors.Is(err, engine.ErrNotFound) {
		t.Errorf("an image that does not exist: %v, want ErrNotFound", err)
	}
	id, err = f.Engine.ImageID(ctx, f.App)
	if c, cerr := f.Engine.ImageContent(ctx, f.App); err != nil || cerr != nil || c.ID != id || c.OS != "linux" {
		t.Errorf("the app image's content: %+v %v (ID %s %v)", c, cerr, id, err)
	}
	if _, err := f.Engine.ImageContent(ctx, f.Project+"-no-such-image:1"); !errors.Is(err, engine.ErrNotFound) {
		t.Errorf("the content of an image that does not exist: %v, want ErrNotFound", err)
	}
}

func copyOut(t *testing.T, f Fixture, id, path string) map[string]string {
	t.Helper()
	rc, err := f.Engine.CopyFrom(context.Background(), id, path)
	if err != nil {
		t.Fatalf("copy %s: %v", path, err)
	}
	defer rc.Close()
	out := map[string]string{}
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		out[strings.TrimSuffix(hdr.Name, "/")] = string(b)
	}
}

// oneOff: a container that exits says how, and its output is in its logs.
func oneOff(t *testing.T, f Fixture) {
	ctx := context.Background()
	s := f.spec("hook", nil)
	s.Cmd = []string{"exit", "3"}
	s.NoNetwork = true // as the snapshot helper: no network at all
	id := f.create(t, s)
	if st, err := f.Engine.Inspect(ctx, id); err != nil || !st.Spec.NoNetwork || len(st.IPs) != 0 {
		t.Errorf("a container without a network: %+v %v", st, err)
	}
	if err := f.Engine.StartContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	if code, err := f.Engine.Wait(ctx, id); err != nil || code != 3 {
		t.Errorf("wait: %d %v, want 3", code, err)
	}
	if logs, err := f.Engine.Logs(ctx, id, 5); err != nil || !strings.Contains(logs, "exiting with 3") {
		t.Errorf("logs: %q %v", logs, err)
	}
}

// killAfterTimeout: a main process that ignores the stop is killed after the timeout (137).
func killAfterTimeout(t *testing.T, f Fixture) {
	ctx := context.Background()
	s := f.spec("shell", map[string]string{"APP_AS_SHELL": "1"})
	s.Ports = []engine.PortBinding{{Container: f.port(), HostIP: "127.0.0.1"}}
	id := f.create(t, s)
	if err := f.Engine.StartContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	// Once it answers, it has said what it does with the stop signal.
	st, _ := f.Engine.Inspect(ctx, id)
	waitGet(t, st.Ports[f.port()], "/health")
	start := time.Now()
	if err := f.Engine.StopContainer(ctx, id, time.Second); err != nil {
		t.Fatal(err)
	}
	if st, _ := f.Engine.Inspect(ctx, id); st.Running || st.ExitCode != 137 || time.Since(start) < time.Second {
		t.Errorf("after the stop: running %v, exit code %d, after %s", st.Running, st.ExitCode, time.Since(start))
	}
}

// restartPolicy: a live release that crashes is started again by the engine, which counts it.
func restartPolicy(t *testing.T, f Fixture) {
	ctx := context.Background()
	s := f.spec("crash", map[string]string{"APP_MODE": "crash"})
	s.Restart = "unless-stopped"
	id := f.create(t, s)
	if err := f.Engine.StartContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if st, err := f.Engine.Inspect(ctx, id); err == nil && st.Restarts > 0 {
			if err := f.Engine.SetRestart(ctx, id, ""); err != nil {
				t.Error(err)
			}
			return
		}
	}
	t.Error("a crashing container with restart policy unless-stopped was not restarted")
}

// portTaken: a host port in use makes the start fail with the engine's words for it.
func portTaken(t *testing.T, f Fixture) {
	ctx := context.Background()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s := f.spec("web", nil)
	s.Ports = []engine.PortBinding{{Container: f.port(), HostIP: "127.0.0.1", HostPort: ln.Addr().(*net.TCPAddr).Port}}
	id := f.create(t, s)
	err = f.Engine.StartContainer(ctx, id)
	if err == nil || !strings.Contains(err.Error(), "already allocated") && !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("start on a taken port: %v", err)
	}
}

func projectKey(t *testing.T, f Fixture) {
	ctx := context.Background()
	if k, err := f.Engine.ReadProjectKey(ctx, f.Project); k != nil || err != nil {
		t.Fatalf("a project that never had a key: read %x %v, want none", k, err)
	}
	if k, _ := f.Engine.ReadProjectKey(ctx, f.Project); k != nil {
		t.Fatalf("reading made a key: %x", k)
	}
	a, err := f.Engine.ProjectKey(ctx, f.Project)
	if err != nil || len(a) < 32 {
		t.Fatalf("key: %x %v", a, err)
	}
	b, err := f.Engine.ProjectKey(ctx, f.Project)
	if err != nil || !bytes.Equal(a, b) {
		t.Errorf("a second read: %x %v, want the same key", b, err)
	}
	if c, err := f.Engine.ReadProjectKey(ctx, f.Project); err != nil || !bytes.Equal(a, c) {
		t.Errorf("read once made: %x %v, want the same key", c, err)
	}
}

func waitGet(t *testing.T, port int, path string) string {
	return waitGetAddr(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), path)
}

// waitGetAddr returns the body of GET path at addr once it answers (a container just started
// may not listen yet), or the last error.
func waitGetAddr(t *testing.T, addr, path string) string {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	last := ""
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		resp, err := c.Get("http://" + addr + path)
		if err != nil {
			last = err.Error()
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return strings.TrimSpace(string(b))
	}
	return fmt.Sprintf("no answer: %s", last)
}

// teardown: what destroy relies on. A container lists the volumes it mounts; neither a mounted
// volume nor a network a running container is on can be removed; the project's networks are listed by
// label and removed once empty; the project's key goes.
func teardown(t *testing.T, f Fixture) {
	ctx := context.Background()
	net := f.Project + "-net"
	if _, err := f.Engine.EnsureNetwork(ctx, net, map[string]string{engine.LabelProject: f.Project}); err != nil {
		t.Fatal(err)
	}
	if nets, err := f.Engine.Networks(ctx, f.Project); err != nil || len(nets) != 1 || nets[0] != net {
		t.Errorf("networks of the project: %q %v", nets, err)
	}
	if nets, err := f.Engine.Networks(ctx, f.Project+"-other"); err != nil || len(nets) != 0 {
		t.Errorf("networks of another project: %q %v", nets, err)
	}
	s := f.spec("web", nil)
	s.Network = net
	s.Volumes = []engine.VolumeMount{{Name: f.Project + "-data", Target: "/data"}}
	id := f.create(t, s)
	list, err := f.Engine.Containers(ctx, f.Project)
	if err != nil || len(list) != 1 || len(list[0].Mounts) != 1 || list[0].Mounts[0] != f.Project+"-data" {
		t.Errorf("a container's mounts: %+v %v", list, err)
	}
	if err := f.Engine.RemoveVolume(ctx, f.Project+"-data"); err == nil {
		t.Errorf("a volume a container mounts was removed")
	}
	if err := f.Engine.StartContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := f.Engine.RemoveNetwork(ctx, net); err == nil {
		t.Errorf("a network a running container is on was removed")
	}
	if err := f.Engine.RemoveContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := f.Engine.RemoveNetwork(ctx, net); err != nil {
		t.Errorf("remove the network: %v", err)
	}
	if err := f.Engine.RemoveNetwork(ctx, net); err != nil {
		t.Errorf("remove a network that is gone: %v, want none", err)
	}
	if nets, err := f.Engine.Networks(ctx, f.Project); err != nil || len(nets) != 0 {
		t.Errorf("networks after removal: %q %v", nets, err)
	}
	if err := f.Engine.RemoveVolume(ctx, f.Project+"-data"); err != nil {
		t.Errorf("remove the volume once nothing mounts it: %v", err)
	}
	if _, err := f.Engine.ProjectKey(ctx, f.Project); err != nil {
		t.Fatal(err)
	}
	if err := f.Engine.RemoveProjectKey(ctx, f.Project); err != nil {
		t.Fatal(err)
	}
	if k, err := f.Engine.ReadProjectKey(ctx, f.Project); k != nil || err != nil {
		t.Errorf("the key after its removal: %x %v, want none", k, err)
	}
}
