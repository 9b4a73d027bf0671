// Package dockertest gives integration tests a real Docker engine: a connection that fails the
// test when CI expects an engine and there is none, a unique project per test whose containers
// and volumes are removed afterwards, free ports, and the test app image built FROM scratch from
// a static binary, so no registry is ever needed.
package dockertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"

	"github.com/deployer-dev/deployer/executor"
	"github.com/deployer-dev/deployer/executor/docker"
	"github.com/deployer-dev/deployer/executor/engine"
	"github.com/deployer-dev/deployer/executor/plan"
)

// Engine connects to the engine of DOCKER_HOST or the local socket. Without one, the test fails
// when CI is set and is skipped otherwise. With -short it is skipped: tests of the real engine are
// integration tests (the in-memory engine runs apply's sequence in -short).
func Engine(t testing.TB) *docker.Engine {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: a test of the real Docker engine")
	}
	eng, err := docker.New("")
	if err == nil {
		err = eng.Ping(context.Background())
	}
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI is set but no Docker engine answers: %v", err)
		}
		t.Skipf("no Docker engine: %v", err)
	}
	t.Cleanup(func() { eng.Close() })
	return eng
}

var nameRE = regexp.MustCompile(`[^a-z0-9]+`)

// Project returns a project name no other test or run uses, and removes everything labelled with
// it (containers, and volumes named with it as prefix) when the test ends.
func Project(t testing.TB, eng *docker.Engine) string {
	t.Helper()
	b := make([]byte, 3)
	rand.Read(b)
	base := strings.Trim(nameRE.ReplaceAllString(strings.ToLower(t.Name()), "-"), "-")
	if len(base) > 30 {
		base = base[len(base)-30:]
	}
	name := "dt-" + strings.Trim(base, "-") + "-" + hex.EncodeToString(b)
	t.Cleanup(func() { RemoveProject(eng, name) })
	return name
}

// RemoveProject removes a project's containers, its network, and the volumes and image tags
// whose names start with it.
func RemoveProject(eng *docker.Engine, project string) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cli := eng.Client()
	list, _ := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", engine.LabelProject+"="+project))})
	for _, c := range list {
		cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true})
	}
	nets, _ := cli.NetworkList(ctx, network.ListOptions{Filters: filters.NewArgs(filters.Arg("label", engine.LabelProject+"="+project))})
	for _, n := range nets {
		cli.NetworkRemove(ctx, n.ID)
	}
	vols, _ := cli.VolumeList(ctx, volume.ListOptions{Filters: filters.NewArgs(filters.Arg("name", project))})
	for _, v := range vols.Volumes {
		if strings.HasPrefix(v.Name, project) {
			cli.VolumeRemove(ctx, v.Name, true)
		}
	}
	// Images a test built under the project's name (a copy of an example builds
	// <project>-web:latest): the tag goes, and the image with its last tag.
	imgs, _ := cli.ImageList(ctx, image.ListOptions{Filters: filters.NewArgs(filters.Arg("reference", project+"*"))})
	for _, img := range imgs {
		for _, tag := range img.RepoTags {
			if strings.HasPrefix(tag, project) {
				cli.ImageRemove(ctx, tag, image.RemoveOptions{PruneChildren: true})
			}
		}
	}
}

// Objects lists what the engine holds of a project, one a line, sorted: "container NAME" and
// "network NAME" for those labelled with it, "volume NAME" for the volumes named after it.
func Objects(eng *docker.Engine, project string) []string {
	ctx := context.Background()
	cli := eng.Client()
	var out []string
	label := filters.NewArgs(filters.Arg("label", engine.LabelProject+"="+project))
	cs, _ := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: label})
	for _, c := range cs {
		out = append(out, "container "+strings.TrimPrefix(c.Names[0], "/"))
	}
	ns, _ := cli.NetworkList(ctx, network.ListOptions{Filters: label})
	for _, n := range ns {
		out = append(out, "network "+n.Name)
	}
	vs, _ := cli.VolumeList(ctx, volume.ListOptions{Filters: filters.NewArgs(filters.Arg("name", project))})
	for _, v := range vs.Volumes {
		if strings.HasPrefix(v.Name, project) {
			out = append(out, "volume "+v.Name)
		}
	}
	sort.Strings(out)
	return out
}

// OldNetwork makes the project's network as a deployer before fixed addresses did: without a
// subnet of its own choosing, so without a fixed range.
func OldNetwork(t testing.TB, eng *docker.Engine, project string) {
	_, err := eng.Client().NetworkCreate(context.Background(), plan.NetworkName(project), network.CreateOptions{Driver: "bridge",
		Labels: map[string]string{engine.LabelProject: project}})
	if err != nil {
		t.Fatal(err)
	}
}

// FreePort returns a TCP port that nothing listens on right now (PickPort).
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := PickPort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// PickPort returns a TCP port that nothing listens on right now, on any address. It is taken
// at random below the kernel's ephemeral range (ip_local_port_range, 32768-60999 by
// default), where the ports the kernel hands out are: to every outgoing connection, to a
// listener on port 0, to the engine publishing a port without a host port. A port from there
// (what listening on port 0 gives) is often taken again, by one of those, in the moment
// between the test choosing it and the deployer binding it, when tests run beside others.
func PickPort() (int, error) {
	const low, high = 20000, 32768
	var b [2]byte
	for i := 0; i < 100; i++ {
		rand.Read(b[:])
		port := low + (int(b[0])<<8|int(b[1]))%(high-low)
		l, err := net.Listen("tcp", fmt.Sprintf(":%d", port))
		if err != nil {
			continue
		}
		l.Close()
		return port, nil
	}
	return 0, fmt.Errorf("no free TCP port between %d and %d after 100 tries", low, high)
}

var (
	appOnce  sync.Once
	appImage string
	appErr   error
)

// AppImage builds the test app image once per test binary and returns its tag.
func AppImage(t testing.TB, eng *docker.Engine) string {
	t.Helper()
	appOnce.Do(func() { appImage, appErr = buildApp(eng) })
	if appErr != nil {
		t.Fatalf("build the test app image: %v", appErr)
	}
	return appImage
}

// AppContext writes a build context for the test app into dir (binary and Dockerfile), for
// tests that exercise the deployer's own build step.
func AppContext(t testing.TB, dir string) {
	t.Helper()
	if err := writeAppContext(dir); err != nil {
		t.Fatal(err)
	}
}

func writeAppContext(dir string) error {
	_, file, _, _ := runtime.Caller(0)
	src := filepath.Join(filepath.Dir(file), "testapp")
	cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false", "-o", filepath.Join(dir, "app"), ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build testapp: %v: %s", err, out)
	}
	dockerfile := "FROM scratch\nCOPY app /bin/app\nEXPOSE 8080\nENTRYPOINT [\"/bin/app\"]\n"
	return os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o644)
}

func buildApp(eng *docker.Engine) (string, error) {
	dir, err := os.MkdirTemp("", "testapp")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	if err := writeAppContext(dir); err != nil {
		return "", err
	}
	const tag = "deployer-testapp:test"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := eng.BuildImage(ctx, executor.BuildOptions{Dir: dir, Dockerfile: "Dockerfile", Tag: tag}); err != nil {
		return "", err
	}
	return tag, nil
}

// Hasher hashes sensitive values with the project's key on the engine, as apply does.
func Hasher(t testing.TB, eng *docker.Engine, project string) *plan.Hasher {
	t.Helper()
	key, err := eng.ProjectKey(context.Background(), project)
	if err != nil {
		t.Fatal(err)
	}
	return plan.NewHasher(key)
}

// WaitHTTP waits until a GET of url answers 2xx, for up to 20 seconds.
func WaitHTTP(t testing.TB, url string) {
	t.Helper()
	c := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode/100 == 2 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not answer: %v", url, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
