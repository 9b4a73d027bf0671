package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/image"

	"github.com/deployer-dev/deployer/executor/docker"
	"github.com/deployer-dev/deployer/executor/docker/dockertest"
	"github.com/deployer-dev/deployer/executor/plan"
)

// tryIt is the README's "Try it" section: its commands, in order, and the URL it says to curl.
type tryIt struct {
	commands [][]string
	url      string
}

// readTryIt reads the "Try it" section of README.md.
func readTryIt(t testing.TB) tryIt {
	t.Helper()
	raw, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(raw), "\n## Try it\n")
	if !ok {
		t.Fatal(`README.md has no "## Try it" section`)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	var out tryIt
	inBlock := false
	for _, line := range strings.Split(section, "\n") {
		if !strings.HasPrefix(line, "    ") {
			if inBlock && strings.TrimSpace(line) != "" {
				break // the first code block only
			}
			continue
		}
		inBlock = true
		cmd, _, _ := strings.Cut(line, " #")
		if strings.ContainsAny(cmd, `"'$|&;<>`) {
			t.Fatalf("README.md's command %q has shell syntax this test does not run: teach TestReadmeTryIt to", strings.TrimSpace(cmd))
		}
		out.commands = append(out.commands, strings.Fields(cmd))
	}
	if m := regexp.MustCompile("`curl (http://127\\.0\\.0\\.1:[0-9]+/[^`]*)`").FindStringSubmatch(section); m != nil {
		out.url = m[1]
	}
	return out
}

// The README's "Try it" commands work in the README's order: its first command deploys the
// quickstart, and then its second, the tests, pass with the quickstart deployed. The commands
// are read from README.md, so a change there changes what this test runs.
//
// The first runs as written (go run from the repository's root) when the quickstart is not on
// this engine and its port is free, and what it made is removed at the end. Where the quickstart
// runs already (someone ran the README's first command here, and relies on it), it is never
// touched: the command runs on a copy of the example under a project and port of the test's
// own (copyExample), and the quickstart must be exactly as before when the test ends. Then the
// example tests and the in-memory engine's conformance suite (those that met an example's
// names and ports) run as the README's second command runs them, narrowed with -run, beside
// what the first deployed.
func TestReadmeTryIt(t *testing.T) {
	if os.Getenv("DEPLOYER_TEST_README") != "" {
		t.Skip("run by TestReadmeTryIt itself")
	}
	try := readTryIt(t)
	if len(try.commands) != 2 || len(try.commands[0]) < 4 || strings.Join(try.commands[0][:3], " ") != "go run ./cmd/deployer" ||
		!slices.Contains(try.commands[0], "examples/quickstart") || len(try.commands[1]) < 3 || strings.Join(try.commands[1][:2], " ") != "go test" ||
		try.commands[1][len(try.commands[1])-1] != "./..." || try.url == "" {
		t.Fatalf("README.md's Try it is not what this test runs (the quickstart's `go run ./cmd/deployer ... examples/quickstart`, then `go test ... ./...`, then a curl of the quickstart): %q, curl %q", try.commands, try.url)
	}
	eng := dockertest.Engine(t)
	ctx := context.Background()
	root, _ := filepath.Abs("../..")
	qs, err := loadExample(filepath.Join(root, "examples", "quickstart"), nil)
	if err != nil {
		t.Fatal(err)
	}
	port := qs.Services[0].Ports[0].Host
	if !strings.Contains(try.url, fmt.Sprintf(":%d/", port)) {
		t.Fatalf("README.md says to curl %s, but the quickstart answers on port %d", try.url, port)
	}

	first := slices.Clone(try.commands[0])
	url := try.url
	before, err := plan.Observe(ctx, eng, projectOnly(qs.Name))
	if err != nil {
		t.Fatal(err)
	}
	switch free := portFree(port); {
	case len(before.All) == 0 && free:
		t.Logf("the quickstart is not on this engine and port %d is free: the README's first command runs as written", port)
		removeAfter(t, eng, qs.Name, filepath.Join(root, "examples", "quickstart"))
	default:
		why := fmt.Sprintf("the quickstart runs on this engine (%d containers)", len(before.All))
		if len(before.All) == 0 {
			why = fmt.Sprintf("port %d is taken here", port)
		}
		ex := copyExample(t, "quickstart", exampleScratch(t), dockertest.Project(t, eng))
		rel, _ := filepath.Rel(root, ex.Dir)
		first[slices.Index(first, "examples/quickstart")] = rel
		url = strings.Replace(url, fmt.Sprintf(":%d/", port), fmt.Sprintf(":%d/", ex.Ports[port]), 1)
		t.Logf("%s: the README's first command runs on a copy, project %s on port %d, and the quickstart is left as it is", why, ex.Project, ex.Ports[port])
		if len(before.All) > 0 {
			t.Cleanup(func() { sameDeployment(t, eng, qs.Name, before) })
		}
	}

	start := time.Now()
	cmd := exec.Command(first[0], first[1:]...)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the README's first command, %s: %v\n%s", strings.Join(first, " "), err, out)
	}
	t.Logf("%s: %s", strings.Join(first, " "), time.Since(start).Round(time.Second))
	if body := waitBody(t, url); !strings.Contains(body, "hello from deployer") {
		t.Fatalf("curl %s after the README's first command: %q\n%s", url, body, out)
	}

	// The README's second command, narrowed to the tests that met what an example left.
	second := slices.Clone(try.commands[1][:len(try.commands[1])-1])
	second = append(second, "-count=1", "-run", "^(TestExamplesApplied|TestScripts|TestConformance|TestPortHeldOutside)$", "./cmd/deployer", "./executor/engine/memengine")
	start = time.Now()
	cmd = exec.Command(second[0], second[1:]...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "DEPLOYER_TEST_README=1")
	out, err = cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the README's second command beside the quickstart, %s: %v\n%s", strings.Join(second, " "), err, out)
	}
	t.Logf("%s: %s\n%s", strings.Join(second, " "), time.Since(start).Round(time.Second), out)
	if body := waitBody(t, url); !strings.Contains(body, "hello from deployer") {
		t.Errorf("curl %s after the tests: %q", url, body)
	}
}

// portFree reports whether nothing listens on the TCP port, on any address.
func portFree(port int) bool {
	l, err := net.Listen("tcp", ":"+strconv.Itoa(port))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// sameDeployment fails the test unless the project's containers are the ones it had, in the
// same states.
func sameDeployment(t *testing.T, eng *docker.Engine, project string, before *plan.Observed) {
	after, err := plan.Observe(context.Background(), eng, projectOnly(project))
	if err != nil {
		t.Error(err)
		return
	}
	list := func(o *plan.Observed) string {
		var parts []string
		for _, c := range o.All {
			parts = append(parts, fmt.Sprintf("%s %s %s", c.Name, c.ID[:12], c.State))
		}
		slices.Sort(parts)
		return strings.Join(parts, ", ")
	}
	if a, b := list(before), list(after); a != b {
		t.Errorf("project %s was touched: before %s; after %s", project, a, b)
	}
}

// removeAfter removes, when the test ends, what a deployment of the example in dir under
// project makes that was not there before: the project's containers (there were none) and
// network, its key, proxy-state and service volumes and image tags, and the example's build
// output.
func removeAfter(t *testing.T, eng *docker.Engine, project, dir string) {
	ctx := context.Background()
	cfg, err := loadExample(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	cli := eng.Client()
	// Volumes are kept when a project's containers go: one of these may be there from before.
	var volumes, images []string
	for _, v := range []string{project + "-deployer-key", project + "-proxy-state"} {
		if _, err := cli.VolumeInspect(ctx, v); err != nil {
			volumes = append(volumes, v)
		}
	}
	for _, s := range cfg.Services {
		for _, v := range s.Volumes {
			if _, err := cli.VolumeInspect(ctx, v.Name); err != nil {
				volumes = append(volumes, v.Name)
			}
		}
		if _, err := eng.ImageID(ctx, s.Image); err != nil {
			images = append(images, s.Image)
		}
	}
	var paths []string
	for _, p := range []string{"bin", ".deployer"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			paths = append(paths, filepath.Join(dir, p))
		}
	}
	t.Cleanup(func() {
		obs, _ := plan.Observe(ctx, eng, projectOnly(project))
		if obs != nil {
			for _, c := range obs.All {
				eng.RemoveContainer(ctx, c.ID)
			}
		}
		cli.NetworkRemove(ctx, plan.NetworkName(project))
		for _, v := range volumes {
			cli.VolumeRemove(ctx, v, true)
		}
		for _, ref := range images {
			cli.ImageRemove(ctx, ref, image.RemoveOptions{PruneChildren: true})
		}
		for _, p := range paths {
			os.RemoveAll(p)
		}
	})
}
