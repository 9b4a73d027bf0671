package main

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor/docker/dockertest"
	"github.com/deployer-dev/deployer/hclspec"
)

// exampleCopy is one of examples/ copied under names of a test's own: its project, the names
// and images made from the project's name, its volumes and bucket, and its host and candidate
// ports (free ones). The examples' own names belong to whoever deployed them on this engine
// (the README's first command deploys the quickstart on :8080), so no test uses them.
type exampleCopy struct {
	Dir     string
	Project string
	Ports   map[int]int // the example's host and candidate ports -> the copy's
}

// copyExample copies examples/NAME into dir/NAME under the project name project, and checks
// that the copy uses none of the example's own names or ports. The copy's build commands need
// this module: for an apply, dir is exampleScratch's.
func copyExample(t testing.TB, name, dir, project string, vars ...hclspec.VarArg) *exampleCopy {
	t.Helper()
	c, err := copyExampleTo(name, dir, project, vars...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func copyExampleTo(name, dir, project string, vars ...hclspec.VarArg) (*exampleCopy, error) {
	src, _ := filepath.Abs(filepath.Join(examplesDir, name))
	orig, err := loadExample(src, vars)
	if err != nil {
		return nil, err
	}
	c := &exampleCopy{Dir: filepath.Join(dir, name), Project: project, Ports: map[int]int{}}
	for _, s := range orig.Services {
		for _, p := range s.Ports {
			for _, port := range []int{p.Host, p.Candidate} {
				if port != 0 && c.Ports[port] == 0 {
					if c.Ports[port], err = dockertest.PickPort(); err != nil {
						return nil, err
					}
				}
			}
		}
	}
	// The names made from the project's: quoted strings that begin with it and a separator
	// (images, volumes, container names, buckets, prefixes), but not a file's path in a volume.
	prefix := regexp.MustCompile(`"` + regexp.QuoteMeta(orig.Name) + `([-_:/])`)
	pathLine := regexp.MustCompile(`^\s*path\s*=`)
	projectLine := regexp.MustCompile(`(?m)^(\s*project\s*=\s*)"` + regexp.QuoteMeta(orig.Name) + `"`)
	portLine := regexp.MustCompile(`(?m)^(\s*(?:host|candidate|default)\s*=\s*)([0-9]+)\b`)
	err = filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if d.IsDir() && (d.Name() == "bin" || d.Name() == ".deployer") {
			return filepath.SkipDir // what a deploy of the example itself left
		}
		to := filepath.Join(c.Dir, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o755)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if strings.HasSuffix(path, ".hcl") {
			s := projectLine.ReplaceAllString(string(b), `${1}"`+project+`"`)
			lines := strings.Split(s, "\n")
			for i, l := range lines {
				if !pathLine.MatchString(l) {
					lines[i] = prefix.ReplaceAllString(l, `"`+project+`$1`)
				}
			}
			s = portLine.ReplaceAllStringFunc(strings.Join(lines, "\n"), func(line string) string {
				m := portLine.FindStringSubmatch(line)
				n, _ := strconv.Atoi(m[2])
				if free := c.Ports[n]; free != 0 {
					return m[1] + strconv.Itoa(free)
				}
				return line
			})
			b = []byte(s)
		}
		return os.WriteFile(to, b, 0o644)
	})
	if err != nil {
		return nil, fmt.Errorf("copy examples/%s: %v", name, err)
	}
	copied, err := loadExample(c.Dir, vars)
	if err != nil {
		return nil, err
	}
	if shared := sharedNames(orig, copied); len(shared) > 0 {
		return nil, fmt.Errorf("the copy of examples/%s still uses the example's own %s: copyExample must rename it, or a test would take what a deployment of the example holds", name, strings.Join(shared, ", "))
	}
	return c, nil
}

// examplesDir is examples/, from this package's directory.
const examplesDir = "../../examples"

// exampleScratch is where copies that are applied go: inside the module, whose go.mod their
// build commands need (examples/.scratch is ignored by git and by ./...). It is removed when
// the test ends.
func exampleScratch(t testing.TB) string {
	t.Helper()
	scratch := filepath.Join(examplesDir, ".scratch")
	os.MkdirAll(scratch, 0o755)
	dir, err := os.MkdirTemp(scratch, "copy-")
	if err != nil {
		t.Fatal(err)
	}
	dir, _ = filepath.Abs(dir)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func loadExample(dir string, vars []hclspec.VarArg) (*config.Project, error) {
	res, diags := hclspec.Load(hclspec.Options{Dir: dir, Vars: vars})
	if diags.HasErrors() {
		return nil, fmt.Errorf("%s: %v", dir, diags)
	}
	return res.Project, nil
}

// sharedNames lists what the copy still has of the example's own: its project, a container
// name, an image repository, a volume, a bucket, a host or candidate port.
func sharedNames(orig, copied *config.Project) []string {
	var names []string
	add := func(kind, v string) {
		if v != "" && v != "0" {
			names = append(names, kind+" "+v)
		}
	}
	var shared []string
	own := func(p *config.Project) []string {
		names = nil
		add("project", p.Name)
		for _, s := range p.Services {
			add("container name", s.ContainerName)
			repo, _, _ := strings.Cut(s.Image, ":")
			add("image", repo)
			for _, v := range s.Volumes {
				add("volume", v.Name)
			}
			for _, port := range s.Ports {
				add("port", fmt.Sprint(port.Host))
				add("port", fmt.Sprint(port.Candidate))
			}
		}
		for _, st := range p.Stores {
			add("bucket", st.Bucket)
		}
		return names
	}
	a, b := own(orig), own(copied)
	for _, n := range a {
		if slices.Contains(b, n) && !slices.Contains(shared, n) {
			shared = append(shared, n)
		}
	}
	return shared
}

// The copies of the examples rename everything a deployment of the example holds, and nothing
// else: the same services, each with the same attributes apart from the names and ports.
func TestExampleCopies(t *testing.T) {
	for _, name := range []string{"quickstart", "manual-generator"} {
		c := copyExample(t, name, t.TempDir(), "t-copy")
		src, _ := filepath.Abs(filepath.Join(examplesDir, name))
		orig, err := loadExample(src, nil)
		if err != nil {
			t.Fatal(err)
		}
		copied, err := loadExample(c.Dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		if copied.Name != "t-copy" || len(copied.Services) != len(orig.Services) || len(c.Ports) == 0 {
			t.Errorf("%s: the copy is project %q with %d services, %d ports renamed", name, copied.Name, len(copied.Services), len(c.Ports))
			continue
		}
		for i, s := range orig.Services {
			cs := copied.Services[i]
			if cs.Name != s.Name || len(cs.Volumes) != len(s.Volumes) || len(cs.Ports) != len(s.Ports) || !strings.HasPrefix(cs.ContainerName, "t-copy") ||
				(s.Build == nil) != (cs.Build == nil) || cs.Deploy.Cutover != s.Deploy.Cutover || fmt.Sprint(cs.Env) != fmt.Sprint(s.Env) || len(cs.SQLite) != len(s.SQLite) {
				t.Errorf("%s: service %s differs beyond its names: %+v\nwas %+v", name, s.Name, cs, s)
				continue
			}
			for j, db := range s.SQLite {
				if cs.SQLite[j].Path != db.Path {
					t.Errorf("%s: sqlite %s is at %q in the copy, %q in the example: a file's path is not a name to rename", name, db.Name, cs.SQLite[j].Path, db.Path)
				}
			}
		}
	}
}
