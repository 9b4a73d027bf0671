package plan

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor/engine"
)

var update = flag.Bool("update", false, "rewrite golden files")

// fakeEngine is an engine with a fixed set of containers and images.
type fakeEngine struct {
	containers []engine.Container
	images     map[string]string
	down       bool
	lists      int
	host       string // default: a local socket
}

func (f *fakeEngine) Host() string {
	if f.host != "" {
		return f.host
	}
	return "unix:///fake/docker.sock"
}
func (f *fakeEngine) Ping(context.Context) error {
	if f.down {
		return errors.New("docker engine at " + f.Host() + " does not answer")
	}
	return nil
}
func (f *fakeEngine) Containers(_ context.Context, project string) ([]engine.Container, error) {
	f.lists++
	var out []engine.Container
	for _, c := range f.containers {
		if c.Labels[LabelProject] == project {
			out = append(out, c)
		}
	}
	return out, nil
}

// testKey is the fake engine's project key.
var testKey = []byte("0123456789abcdef0123456789abcdef")

func (f *fakeEngine) ProjectKey(context.Context, string) ([]byte, error)     { return testKey, nil }
func (f *fakeEngine) ReadProjectKey(context.Context, string) ([]byte, error) { return testKey, nil }

func (f *fakeEngine) AllContainers(context.Context) ([]engine.Container, error) {
	return f.containers, nil
}

func (f *fakeEngine) Inspect(_ context.Context, id string) (*engine.ContainerState, error) {
	for _, c := range f.containers {
		if c.ID == id || c.Name == id {
			st := &engine.ContainerState{ID: c.ID, Name: c.Name, ImageID: c.ImageID, Running: c.Running(), Status: c.State,
				Spec: engine.ContainerSpec{Name: c.Name, Labels: c.Labels, Env: map[string]string{}}}
			for _, p := range c.Published {
				st.Spec.Ports = append(st.Spec.Ports, engine.PortBinding{Container: 8080, HostPort: p.HostPort})
			}
			return st, nil
		}
	}
	return nil, fmt.Errorf("container %s: %w", id, engine.ErrNotFound)
}

func (f *fakeEngine) ImageEnv(context.Context, string) (map[string]string, error) {
	return map[string]string{}, nil
}
func (f *fakeEngine) Volumes(context.Context, string) ([]engine.Volume, error) { return nil, nil }

func (f *fakeEngine) InspectVolume(_ context.Context, name string) (*engine.Volume, error) {
	return nil, fmt.Errorf("volume %s: %w", name, engine.ErrNotFound)
}

func (f *fakeEngine) NetworkLabels(_ context.Context, name string) (map[string]string, error) {
	return nil, fmt.Errorf("network %s: %w", name, engine.ErrNotFound)
}

func (f *fakeEngine) ImageLabels(_ context.Context, ref string) (map[string]string, error) {
	if _, ok := f.images[ref]; ok {
		return map[string]string{}, nil
	}
	return nil, fmt.Errorf("image %s: %w", ref, engine.ErrNotFound)
}

func (f *fakeEngine) ImageID(_ context.Context, ref string) (string, error) {
	if id, ok := f.images[ref]; ok {
		return id, nil
	}
	return "", fmt.Errorf("image %s: %w", ref, engine.ErrNotFound)
}

// project builds a small project as hclspec would hand it over.
func project(mod func(s *config.Service)) *config.Project {
	s := config.NewService("web")
	s.Image = "web:1"
	s.Env = map[string]string{"MODE": "prod", "TOKEN": "s3cr3t-token"}
	port := config.NewPort()
	port.Container, port.Host, port.Candidate = 8080, 80, 8081
	s.Ports = []*config.Port{port}
	s.Volumes = []*config.Volume{{Name: "data", Target: "/data"}}
	explicit(s, "image", "env", "port.8080.host", "port.8080.candidate", "port.8080.container", "volume.data.target")
	if mod != nil {
		mod(s)
	}
	p := &config.Project{Name: "shop", Services: []*config.Service{s}, Sensitive: map[string]bool{"service.web.env.TOKEN": true}}
	config.Defaults(p)
	return p
}

// legacyDoc is the spec doc as deployers before 2026-11-28 recorded it: sensitive values as an
// unkeyed sha256.
func legacyDoc(p *config.Project) map[string]string {
	s := p.Services[0]
	doc := s.Attributes()
	for k, v := range doc {
		if p.IsSensitive(s.Name, k) {
			sum := sha256.Sum256([]byte(v))
			doc[k] = `"(sensitive) sha256:` + hex.EncodeToString(sum[:]) + `"`
		}
	}
	return doc
}

// explicit records attributes as written in the configuration, as hclspec does with their ranges.
func explicit(s *config.Service, keys ...string) {
	for _, k := range keys {
		s.Ranges[k] = config.Range{}
	}
}

// live is a container as an earlier apply of p would have left it.
func live(p *config.Project, imageID string, release int, state string) engine.Container {
	return liveWith(p, imageID, release, state, SpecDoc(p, p.Services[0], NewHasher(testKey)))
}

// liveWith is live with a spec doc of one's own (as an earlier version recorded it).
func liveWith(p *config.Project, imageID string, release int, state string, specDoc map[string]string) engine.Container {
	s := p.Services[0]
	doc, _ := json.Marshal(specDoc)
	return engine.Container{
		ID: fmt.Sprintf("c%d", release), Name: s.ContainerName, Image: s.Image, ImageID: imageID, State: state,
		Created: time.Unix(1700000000, 0),
		Labels: map[string]string{
			LabelProject: p.Name, LabelService: s.Name, LabelRole: RoleLive, LabelRelease: fmt.Sprint(release),
			LabelSpecDoc: string(doc), LabelSpec: SpecHash(specDoc, imageID),
		},
	}
}

func TestPlanActions(t *testing.T) {
	base := project(nil)
	cases := []struct {
		name    string
		p       *config.Project
		eng     *fakeEngine
		action  Action
		reasons string
		attrs   string
	}{
		{"new service", base, &fakeEngine{images: map[string]string{"web:1": "sha256:aaa"}}, ActionCreate, "no live release", ""},
		{"nothing changed", base, &fakeEngine{images: map[string]string{"web:1": "sha256:aaa"}, containers: []engine.Container{live(base, "sha256:aaa", 3, "running")}}, ActionNone, "", ""},
		{"image ID changed", base, &fakeEngine{images: map[string]string{"web:1": "sha256:bbb"}, containers: []engine.Container{live(base, "sha256:aaa", 3, "running")}}, ActionReplace, "image changed: aaa -> bbb", ""},
		{"env changed", project(func(s *config.Service) { s.Env["MODE"] = "debug" }), &fakeEngine{images: map[string]string{"web:1": "sha256:aaa"}, containers: []engine.Container{live(base, "sha256:aaa", 3, "running")}}, ActionReplace, "spec changed (1 attribute)", `env.MODE "prod"->"debug"`},
		{"secret changed", project(func(s *config.Service) { s.Env["TOKEN"] = "new-token" }), &fakeEngine{images: map[string]string{"web:1": "sha256:aaa"}, containers: []engine.Container{live(base, "sha256:aaa", 3, "running")}}, ActionReplace, "spec changed (1 attribute)", `env.TOKEN "(sensitive)"->"(sensitive)"`},
		{"secret hashed by an earlier version, unchanged", base, &fakeEngine{images: map[string]string{"web:1": "sha256:aaa"}, containers: []engine.Container{liveWith(base, "sha256:aaa", 3, "running", legacyDoc(base))}}, ActionNone, "", ""},
		{"secret hashed by an earlier version, changed", project(func(s *config.Service) { s.Env["TOKEN"] = "new-token" }), &fakeEngine{images: map[string]string{"web:1": "sha256:aaa"}, containers: []engine.Container{liveWith(base, "sha256:aaa", 3, "running", legacyDoc(base))}}, ActionReplace, "spec changed (1 attribute)", `env.TOKEN "(sensitive)"->"(sensitive)"`},
		{"live stopped", base, &fakeEngine{images: map[string]string{"web:1": "sha256:aaa"}, containers: []engine.Container{live(base, "sha256:aaa", 3, "exited")}}, ActionUpdate, "live release 3 is exited: apply starts it", ""},
		{"image missing locally", base, &fakeEngine{images: map[string]string{}, containers: []engine.Container{live(base, "sha256:aaa", 3, "running")}}, ActionReplace, "image web:1 is not on the engine: apply pulls it", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pl, err := Make(context.Background(), c.p, c.eng, PlanOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if c.eng.lists != 1 {
				t.Errorf("%d list calls; the observed state must come from one", c.eng.lists)
			}
			ch := pl.Change("web")
			if ch.Action != c.action {
				t.Fatalf("action %s, want %s (reasons %v)", ch.Action, c.action, ch.Reasons)
			}
			if got := strings.Join(ch.Reasons, "; "); got != c.reasons {
				t.Errorf("reasons %q, want %q", got, c.reasons)
			}
			if ch.Action == ActionReplace && c.attrs != "" {
				var got []string
				for _, a := range ch.Attributes {
					got = append(got, a.Path+" "+string(a.Old)+"->"+string(a.New))
				}
				if strings.Join(got, ", ") != c.attrs {
					t.Errorf("attributes %q, want %q", got, c.attrs)
				}
			}
			if ch.Action == ActionReplace && ch.NextRelease != 4 {
				t.Errorf("next release %d, want 4", ch.NextRelease)
			}
			var text bytes.Buffer
			pl.WriteText(&text, RenderOptions{})
			pl.WriteJSON(&text)
			if strings.Contains(text.String(), "s3cr3t") || strings.Contains(text.String(), "new-token") {
				t.Errorf("a sensitive value is in the plan output:\n%s", text.String())
			}
		})
	}
}

func TestPlanDeleteLeftoversAndTarget(t *testing.T) {
	p := project(nil)
	old := live(p, "sha256:aaa", 2, "running")
	old.Labels[LabelService], old.ID, old.Name = "legacy", "c-legacy", "shop-legacy"
	cand := live(p, "sha256:bbb", 4, "running")
	cand.Labels[LabelRole], cand.ID, cand.Name = RoleCandidate, "c-cand", "shop-web-green"
	lock := engine.Container{ID: "c-lock", Name: "shop-deployer-lock", State: "created", Labels: map[string]string{
		LabelProject: "shop", LabelRole: RoleLock, LabelHolder: "ci@runner-7 pid 4242", LabelCreatedAt: "2026-11-27T10:00:00Z"}}
	eng := &fakeEngine{images: map[string]string{"web:1": "sha256:aaa"}, containers: []engine.Container{live(p, "sha256:aaa", 3, "running"), old, cand, lock}}

	pl, err := Make(context.Background(), p, eng, PlanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ch := pl.Change("legacy"); ch == nil || ch.Action != ActionDelete || len(ch.RemoveIDs) != 1 {
		t.Fatalf("legacy: %+v", ch)
	}
	kinds := map[LeftoverKind]bool{}
	for _, l := range pl.Leftovers {
		kinds[l.Kind] = true
	}
	if !kinds[LeftoverLock] || !kinds[LeftoverCandidate] {
		t.Errorf("leftovers %+v", pl.Leftovers)
	}
	if next := pl.Change("web").NextRelease; next != 0 {
		t.Errorf("no-op has next release %d", next)
	}

	targeted, err := Make(context.Background(), p, eng, PlanOptions{Targets: []string{"web"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(targeted.Changes) != 1 || targeted.Change("legacy") != nil {
		t.Errorf("-target web planned %d changes", len(targeted.Changes))
	}
	if _, err := Make(context.Background(), p, eng, PlanOptions{Targets: []string{"nope"}}); err == nil || !strings.Contains(err.Error(), `no service "nope"`) {
		t.Errorf("unknown target: %v", err)
	}
}

func TestPlanEngineDown(t *testing.T) {
	_, err := Make(context.Background(), project(nil), &fakeEngine{down: true}, PlanOptions{})
	if err == nil || !strings.Contains(err.Error(), "does not answer") {
		t.Fatalf("err = %v", err)
	}
}

func TestPlanFingerprints(t *testing.T) {
	p := project(nil)
	eng := &fakeEngine{images: map[string]string{"web:1": "sha256:aaa"}, containers: []engine.Container{live(p, "sha256:aaa", 3, "running")}}
	a, _ := Make(context.Background(), p, eng, PlanOptions{})
	b, _ := Make(context.Background(), p, eng, PlanOptions{})
	if a.Fingerprint != b.Fingerprint {
		t.Fatal("fingerprints differ for the same state and configuration")
	}
	eng.containers[0].State = "exited"
	c, _ := Make(context.Background(), p, eng, PlanOptions{})
	if c.Fingerprint.State == a.Fingerprint.State || c.Fingerprint.Config != a.Fingerprint.Config {
		t.Error("a stopped container must change the state fingerprint only")
	}
	p2 := project(func(s *config.Service) { s.Env["TOKEN"] = "rotated" })
	d, _ := Make(context.Background(), p2, eng, PlanOptions{})
	if d.Fingerprint.Config == c.Fingerprint.Config {
		t.Error("a changed secret must change the configuration fingerprint")
	}
}

// The text and JSON forms of a plan with every kind of change, against golden files.
func TestPlanGolden(t *testing.T) {
	p := project(func(s *config.Service) {
		s.Env["MODE"] = "debug"
		s.Env["TOKEN"] = "rotated-secret"
		s.HealthCheck = config.NewHealthCheck()
		s.HealthCheck.Path = "/health"
		s.Canaries = []*config.Canary{{Name: "home", Path: "/", BodyContains: "Welcome"}}
		s.Hooks = []*config.Hook{{When: "before_cutover", Command: []string{"./migrate", "--to", "latest version"}}}
		s.Backup = config.NewBackup()
		s.Backup.Volumes = []string{"data"}
		explicit(s, "health_check.path", "canary.home.path", "canary.home.body_contains", "hook.before_cutover.command", "backup.volumes")
	})
	orig := project(nil)
	gone := live(orig, "sha256:aaa", 2, "running")
	gone.Labels[LabelService], gone.ID, gone.Name = "legacy", "c-legacy", "shop-legacy"
	eng := &fakeEngine{images: map[string]string{"web:1": "sha256:bbbbbbbbbbbbbbbb"}, containers: []engine.Container{live(orig, "sha256:aaaaaaaaaaaaaaaa", 3, "running"), gone}}
	pl, err := Make(context.Background(), p, eng, PlanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var text, js bytes.Buffer
	if err := pl.WriteText(&text, RenderOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := pl.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	golden(t, "plan.txt", text.Bytes())
	golden(t, "plan.json", js.Bytes())
	if bytes.Contains(text.Bytes(), []byte("rotated-secret")) || bytes.Contains(js.Bytes(), []byte("rotated-secret")) {
		t.Error("secret in plan output")
	}
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		os.MkdirAll("testdata", 0o755)
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file (go test -update rewrites it):\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

// The proxy is a step of the plan when a service uses it, and for every deploy on a remote
// engine, where the health checks run from it.
func TestPlanProxyStep(t *testing.T) {
	for _, c := range []struct {
		name, host string
		mod        func(s *config.Service)
		want       string
	}{
		{"local, restart", "", nil, ""},
		{"local, proxy", "", func(s *config.Service) { s.Deploy.Cutover = "proxy" }, "ready to route to the live releases"},
		{"remote, restart", "tcp://10.0.0.5:2376", nil, "ready to run the health checks from the engine's host"},
		{"remote by name", "ssh://deploy@web1.example.com", nil, "ready to run the health checks"},
		{"local over tcp", "tcp://127.0.0.1:2375", nil, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := project(c.mod)
			eng := &fakeEngine{host: c.host, images: map[string]string{"web:1": "sha256:aaa"}}
			pl, err := Make(context.Background(), p, eng, PlanOptions{})
			if err != nil {
				t.Fatal(err)
			}
			got := ""
			for _, st := range pl.Steps {
				if st.Kind == StepProxy {
					got = st.Detail
				}
			}
			if c.want == "" && got != "" || !strings.Contains(got, c.want) {
				t.Errorf("proxy step %q, want %q", got, c.want)
			}
			if c.want != "" && (pl.Steps[1].Kind != StepPreflight || pl.Steps[2].Kind != StepProxy) {
				t.Errorf("the proxy step is not right after the lock and the preflight checks: %+v", pl.Steps[1:3])
			}
		})
	}
}

// A port the project needs and something else holds stops the plan, naming the holder; the
// service's own releases, the project's proxy and the container it takes over do not.
func TestPlanPortOwners(t *testing.T) {
	p := project(nil) // web: host 80, candidate 8081
	published := func(name string, port int, labels map[string]string) engine.Container {
		return engine.Container{ID: name, Name: name, Image: "img", State: "running", Labels: labels, Published: []engine.Published{{HostIP: "0.0.0.0", HostPort: port}}}
	}
	otherLive := live(project(func(s *config.Service) { s.Deploy.Cutover = "proxy" }), "sha256:o", 2, "running")
	otherLive.Labels[LabelProject], otherLive.Name = "other", "other-web"
	ours := live(p, "sha256:aaa", 3, "running")
	ours.Published = []engine.Published{{HostPort: 80}}
	cases := []struct {
		name  string
		other engine.Container
		want  string
	}{
		{"a plain container", published("nginx-1", 80, nil), "host port 80 of service.web is taken: container nginx-1 (image img) publishes it"},
		{"a compose service on the candidate port", published("x_db_1", 8081, map[string]string{"com.docker.compose.project": "x", "com.docker.compose.service": "db"}),
			`candidate port 8081 of service.web is taken: docker-compose project "x"'s service "db" (container x_db_1) publishes it`},
		{"another project's proxied service", otherLive, `host port 80 of service.web is taken: project "other"'s service.web (container other-web, release 2) routes it through its proxy`},
		{"the container taken over", published("shop-web", 80, nil), ""},
		{"another project's stopped container", func() engine.Container { c := published("old", 80, nil); c.State = "exited"; return c }(), ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			eng := &fakeEngine{images: map[string]string{"web:1": "sha256:aaa"}, containers: []engine.Container{ours, c.other}}
			_, err := Make(context.Background(), p, eng, PlanOptions{})
			switch {
			case c.want == "" && err != nil:
				t.Errorf("plan failed: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Errorf("err = %v, want %q", err, c.want)
			}
		})
	}
}

// The plan's backup step says which databases are snapshotted online and which volumes are read
// with the live release paused.
func TestBackupHow(t *testing.T) {
	s := config.NewService("web")
	s.Volumes = []*config.Volume{{Name: "db", Target: "/db"}, {Name: "uploads", Target: "/up"}}
	db := config.NewSQLite("main")
	db.Volume, db.Path = "db", "app.db"
	s.SQLite = []*config.SQLite{db}
	s.Backup = config.NewBackup()
	s.Backup.Volumes = []string{"db", "uploads"}
	if got, want := BackupHow(s), ": sqlite main snapshotted online, the live release paused while any other files of db, the files of uploads are read"; got != want {
		t.Errorf("pause:\n got %q\nwant %q", got, want)
	}
	s.Backup.VolumeConsistency = map[string]config.Consistency{"uploads": config.ConsistencyNone}
	if got, want := BackupHow(s), ": sqlite main snapshotted online, the live release paused while any other files of db are read"; got != want {
		t.Errorf("uploads none:\n got %q\nwant %q", got, want)
	}
	s.Backup.Consistency = config.ConsistencyNone
	if got, want := BackupHow(s), ": sqlite main snapshotted online, the live release never paused"; got != want {
		t.Errorf("none:\n got %q\nwant %q", got, want)
	}
}

// A service with a migration: dry-run, trial, backup and the migration on the live data come
// before the candidate, and the smoke load after the canaries; a sensitive value in the
// migration's command is never shown.
func TestPlanMigrationSteps(t *testing.T) {
	mod := func(held bool) func(s *config.Service) {
		return func(s *config.Service) {
			s.Backup = config.NewBackup()
			s.Backup.Volumes = []string{"data"}
			db := config.NewSQLite("main")
			db.Volume, db.Path = "data", "app.db"
			s.SQLite = []*config.SQLite{db}
			s.Migration = config.NewMigration()
			s.Migration.Command = []string{"./migrate", "--password", "s3cr3t-token"}
			s.Migration.AllowDestructive = held
			s.Smoke = config.NewSmoke()
			s.Deploy.Cutover = config.CutoverProxy
		}
	}
	for _, held := range []bool{false, true} {
		p := project(mod(held))
		p.Secrets = []string{"s3cr3t-token"}
		p.Sensitive["service.web.migration.command"] = true // as hclspec marks a value from a sensitive variable
		orig := project(nil)
		eng := &fakeEngine{images: map[string]string{"web:1": "sha256:bbbbbbbbbbbbbbbb"}, containers: []engine.Container{live(orig, "sha256:aaaaaaaaaaaaaaaa", 3, "running")}}
		pl, err := Make(context.Background(), p, eng, PlanOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, st := range pl.Steps {
			names = append(names, st.Name)
		}
		want := "lock preflight proxy image migrate.dry-run migrate.trial backup migrate candidate check.running check.health check.smoke check.sqlite.main cutover verify cleanup unlock"
		if got := strings.Join(names, " "); got != want {
			t.Errorf("steps:\n got %s\nwant %s", got, want)
		}
		// A saved plan's steps read back with their kinds and arguments, and the same JSON.
		raw, err := json.Marshal(pl.Steps)
		if err != nil {
			t.Fatal(err)
		}
		var back []*Step
		if err := json.Unmarshal(raw, &back); err != nil {
			t.Fatal(err)
		}
		for i, st := range back {
			if *st != *pl.Steps[i] {
				t.Errorf("step %d read back as %+v, was %+v", i, *st, *pl.Steps[i])
			}
		}
		if again, _ := json.Marshal(back); !bytes.Equal(again, raw) {
			t.Errorf("steps read back write other JSON:\n%s\n%s", again, raw)
		}
		if st := back[slices.Index(names, "check.sqlite.main")]; st.Kind != StepSQLite || st.Arg != "main" || strings.Contains(string(raw), `"kind"`) {
			t.Errorf("check.sqlite.main: kind %q, arg %q; JSON %s", st.Kind, st.Arg, raw)
		}
		var text bytes.Buffer
		pl.WriteText(&text, RenderOptions{})
		if strings.Contains(text.String(), "s3cr3t-token") {
			t.Errorf("the plan shows the secret:\n%s", text.String())
		}
		wantText := "a destructive change stops the deploy here"
		if held {
			wantText = "a destructive change runs held (allow_destructive): the live release stopped, new requests held by the proxy"
		}
		if !strings.Contains(text.String(), wantText) {
			t.Errorf("the plan does not say %q:\n%s", wantText, text.String())
		}
	}
}
