package hclspec

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/deployer-dev/deployer/config"
)

// Each file in testdata/invalid holds one or more "# want: LINE:COL Summary | detail part" lines;
// loading it must report exactly those errors, each at its line and column.
func TestInvalidFiles(t *testing.T) {
	files, err := filepath.Glob("testdata/invalid/*.hcl")
	if err != nil || len(files) == 0 {
		t.Fatalf("no test files: %v", err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".hcl"), func(t *testing.T) {
			wants := readWants(t, f)
			res, diags := Load(Options{Files: []string{f}, Dir: "testdata/invalid"})
			text := res.DiagnosticsText(diags)
			if !diags.HasErrors() {
				t.Fatalf("no error; want %v", wants)
			}
			errs := 0
			for _, d := range diags {
				if d.Severity == hcl.DiagError {
					errs++
				}
			}
			if errs != len(wants) {
				t.Errorf("got %d errors, want %d:\n%s", errs, len(wants), text)
			}
			for _, w := range wants {
				if !matchDiag(diags, w) {
					t.Errorf("no error %q at %d:%d (detail containing %q); got:\n%s", w.summary, w.line, w.col, w.detail, text)
				}
			}
			// Every error shows where it is and the source line.
			for _, d := range diags {
				if d.Subject == nil {
					continue
				}
				loc := fmt.Sprintf("%s:%d:%d", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column)
				if !strings.Contains(text, loc) || !strings.Contains(text, "^") {
					t.Errorf("rendered diagnostics lack %s or a marker:\n%s", loc, text)
				}
			}
		})
	}
}

type want struct {
	line, col       int
	summary, detail string
}

func readWants(t *testing.T, path string) []want {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []want
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "# want: ")
		if !ok {
			continue
		}
		var w want
		pos, text, _ := strings.Cut(rest, " ")
		if _, err := fmt.Sscanf(pos, "%d:%d", &w.line, &w.col); err != nil {
			t.Fatalf("bad want line %q", sc.Text())
		}
		w.summary, w.detail, _ = strings.Cut(text, " | ")
		w.summary = strings.TrimSpace(w.summary)
		out = append(out, w)
	}
	if len(out) == 0 {
		t.Fatalf("%s has no # want: line", path)
	}
	return out
}

func matchDiag(diags hcl.Diagnostics, w want) bool {
	for _, d := range diags {
		if d.Severity != hcl.DiagError || d.Subject == nil {
			continue
		}
		if d.Subject.Start.Line == w.line && d.Subject.Start.Column == w.col &&
			strings.Contains(d.Summary, w.summary) && strings.Contains(d.Detail, w.detail) {
			return true
		}
	}
	return false
}

func TestRenderedDiagnostic(t *testing.T) {
	res, diags := Load(Options{Files: []string{"testdata/invalid/candidate-equals-host.hcl"}})
	got := res.DiagnosticsText(diags)
	want := `Error: Candidate port equals host port

  --> testdata/invalid/candidate-equals-host.hcl:8:17
    |
  8 |     candidate = 8080
    |                 ^^^^

  The candidate runs beside the live release, so it needs its own port: change candidate (8080) or leave it out to let the engine pick a free one.

`
	if got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

func load(t *testing.T, opts Options) *config.Project {
	t.Helper()
	res, diags := Load(opts)
	if diags.HasErrors() {
		t.Fatalf("load: %s", res.DiagnosticsText(diags))
	}
	return res.Project
}

func TestJSONSyntax(t *testing.T) {
	p := load(t, Options{Dir: "testdata/json"})
	s := p.Service("web")
	if p.Name != "jsonproj" || s == nil {
		t.Fatalf("project %q, services %v", p.Name, p.Services)
	}
	if s.Image != "app:v1" || s.Env["MODE"] != "json" {
		t.Errorf("image %q env %v", s.Image, s.Env)
	}
	if len(s.Ports) != 1 || s.Ports[0].Host != 8080 || s.Volume("data") == nil {
		t.Errorf("ports %v volumes %v", s.Ports, s.Volumes)
	}
	if s.Backup == nil || s.Backup.Store != "s3" || p.Stores["s3"].Bucket != "my-bucket" {
		t.Errorf("backup %+v", s.Backup)
	}
}

func TestVariablePrecedence(t *testing.T) {
	env := []string{"HOME_FOR_TEST=/home/op"}
	cases := []struct {
		name     string
		env      []string
		vars     []VarArg
		tag      string
		replicas string
	}{
		{"auto vars file beats default", nil, nil, "from-auto", "1"},
		{"auto vars file beats environment", []string{"DEPLOYER_VAR_tag=from-env"}, nil, "from-auto", "1"},
		// A value from the environment is sensitive whatever the variable declares.
		{"environment beats default", []string{"DEPLOYER_VAR_replicas=2345"}, nil, "from-auto", "2345"},
		{"var-file beats auto vars", nil, []VarArg{{File: "testdata/vars/prod.vars.hcl"}}, "from-var-file", "3"},
		{"later -var beats earlier -var-file", nil, []VarArg{{File: "testdata/vars/prod.vars.hcl"}, {Name: "tag", Value: "from-flag"}}, "from-flag", "3"},
		{"later -var-file beats earlier -var", nil, []VarArg{{Name: "tag", Value: "from-flag"}, {File: "testdata/vars/prod.vars.hcl"}}, "from-var-file", "3"},
		{"-var number parsed as HCL", nil, []VarArg{{Name: "replicas", Value: "7"}}, "from-auto", "7"},
		{"-var beats environment", []string{"DEPLOYER_VAR_replicas=2345"}, []VarArg{{Name: "replicas", Value: "7"}}, "from-auto", "7"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := load(t, Options{Dir: "testdata/vars", Env: append(env, c.env...), Vars: c.vars})
			s := p.Service("web")
			if s.Image != "app:"+c.tag {
				t.Errorf("image %q, want tag %q", s.Image, c.tag)
			}
			if s.Env["REPLICAS"] != c.replicas {
				t.Errorf("REPLICAS %q, want %q", s.Env["REPLICAS"], c.replicas)
			}
			if fromEnv := len(c.env) > 0 && strings.Contains(c.env[0], "replicas") && len(c.vars) == 0; p.IsSensitive("web", "env.REPLICAS") != fromEnv {
				t.Errorf("env.REPLICAS sensitive %v, want %v (from the environment)", p.IsSensitive("web", "env.REPLICAS"), fromEnv)
			}
		})
	}
}

func TestFunctionsAndSensitivity(t *testing.T) {
	p := load(t, Options{Dir: "testdata/vars", Env: []string{"HOME_FOR_TEST=/home/op"},
		Vars: []VarArg{{Name: "labels", Value: `{ team = "ops" }`}}})
	s := p.Service("web")
	want := map[string]string{
		"UPPER": "FROM-AUTO", "HOME_ENV": "/home/op", "GREETING": "hello from a file",
		"TOKEN": "default-secret", "DERIVED": "t-def", "team": "ops",
	}
	for k, v := range want {
		if s.Env[k] != v {
			t.Errorf("env %s = %q, want %q", k, s.Env[k], v)
		}
	}
	// A sensitive variable, anything derived from it, and what env() reads, are marked; nothing
	// else is, merge() or not.
	for _, k := range []string{"env.TOKEN", "env.DERIVED", "env.HOME_ENV"} {
		if !p.IsSensitive("web", k) {
			t.Errorf("%s is not marked sensitive", k)
		}
	}
	for _, k := range []string{"env.UPPER", "env.team", "env.GREETING", "env.REPLICAS", "image"} {
		if p.IsSensitive("web", k) {
			t.Errorf("%s is marked sensitive", k)
		}
	}
}

func TestVariableErrors(t *testing.T) {
	cases := []struct {
		name string
		opts Options
		want string
	}{
		{"undeclared -var", Options{Dir: "testdata/vars", Vars: []VarArg{{Name: "tga", Value: "x"}}}, `no variable "tga" is declared. Did you mean "tag"?`},
		{"-var of the wrong type", Options{Dir: "testdata/vars", Vars: []VarArg{{Name: "replicas", Value: "many"}}}, "<value for var.replicas from -var replicas>:1:1"},
		{"environment of the wrong type", Options{Dir: "testdata/vars", Env: []string{"DEPLOYER_VAR_labels=[1"}}, "environment variable DEPLOYER_VAR_labels"},
		{"missing var-file", Options{Dir: "testdata/vars", Vars: []VarArg{{File: "testdata/vars/nope.vars.hcl"}}}, `"testdata/vars/nope.vars.hcl" does not exist in testdata/vars`},
		{"empty directory", Options{Dir: "testdata/empty"}, "holds no *.hcl or *.hcl.json file"},
		{"missing directory", Options{Dir: "testdata/does-not-exist"}, "testdata/does-not-exist: no such file or directory"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res, diags := Load(c.opts)
			if !diags.HasErrors() {
				t.Fatal("no error")
			}
			if text := res.DiagnosticsText(diags); !strings.Contains(text, c.want) {
				t.Errorf("error does not contain %q:\n%s", c.want, text)
			}
		})
	}
}

func TestUnreadableFile(t *testing.T) {
	if os.Geteuid() == 0 {
		// root reads any file; a directory in place of a file fails the same way for everyone.
		dir := t.TempDir()
		os.Mkdir(filepath.Join(dir, "main.hcl"), 0o755)
		_, diags := Load(Options{Files: []string{filepath.Join(dir, "main.hcl")}})
		if !diags.HasErrors() || !strings.Contains(diags[0].Detail, "main.hcl") {
			t.Fatalf("diags: %v", diags)
		}
		return
	}
	dir := t.TempDir()
	f := filepath.Join(dir, "main.hcl")
	os.WriteFile(f, []byte(`project = "x"`), 0o000)
	_, diags := Load(Options{Dir: dir})
	if !diags.HasErrors() || !strings.Contains(diags[0].Detail, "permission denied") {
		t.Fatalf("diags: %v", diags)
	}
}

func TestSensitiveNeverInDiagnostics(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "main.hcl"), []byte(`
project = "x"
variable "token" {
  type      = string
  sensitive = true
  validation {
    condition     = length(var.token) > 20
    error_message = "token ${var.token} is too short."
  }
}
service "a" { image = "a" }
`), 0o644)
	res, diags := Load(Options{Dir: dir, Vars: []VarArg{{Name: "token", Value: "hunter2-secret"}}})
	text := res.DiagnosticsText(diags)
	if !diags.HasErrors() || strings.Contains(text, "hunter2") {
		t.Fatalf("want an error without the secret, got:\n%s", text)
	}
}

func TestDefaultsAndLocals(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "b.hcl"), []byte(`
locals {
  name = "${local.base}-svc"
}
service "api" {
  image = "api:1"
  env   = { NAME = local.name }
  port {
    container = 80
    host      = 9000
  }
  volume "data" { target = "/data" }
  backup { volumes = ["data"] }
}
`), 0o644)
	os.WriteFile(filepath.Join(dir, "a.hcl"), []byte(`
project = "multi"
locals { base = "core" }
`), 0o644)
	os.WriteFile(filepath.Join(dir, "notes.hcl~"), []byte(`this is an editor backup {{{`), 0o644)
	os.WriteFile(filepath.Join(dir, ".hidden.hcl"), []byte(`broken {{{`), 0o644)
	p := load(t, Options{Dir: dir})
	s := p.Service("api")
	if s.Env["NAME"] != "core-svc" {
		t.Errorf("NAME = %q", s.Env["NAME"])
	}
	if s.ContainerName != "multi-api" || s.Deploy.Cutover != config.DefaultCutover || !s.Deploy.AutoRollback ||
		s.HealthCheck == nil || s.HealthCheck.Path != "/" || s.Ports[0].Protocol != "http" {
		t.Errorf("defaults not applied: %+v %+v %+v", s, s.Deploy, s.HealthCheck)
	}
	if s.Backup.Store != config.DefaultStoreName || p.Stores[config.DefaultStoreName].Directory != config.DefaultStoreDirectory {
		t.Errorf("backup store default: %+v", s.Backup)
	}
	if len(p.Files) != 2 {
		t.Errorf("files %v: dotfiles and backups must be skipped", p.Files)
	}
}

// shared = true in a volume block lets other projects that say so too mount the volume; it is
// recorded on releases (the spec) only when set, so that configurations without it keep their
// spec.
func TestSharedVolume(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "a.hcl"), []byte(`
project = "shop"
service "api" {
  image = "api:1"
  volume "uploads" {
    target = "/uploads"
    shared = true
  }
  volume "data" { target = "/data" }
}
`), 0o644)
	s := load(t, Options{Dir: dir}).Service("api")
	if !s.Volume("uploads").Shared || s.Volume("data").Shared {
		t.Errorf("shared: uploads %v, data %v", s.Volume("uploads").Shared, s.Volume("data").Shared)
	}
	a := s.Attributes()
	if a["volume.uploads.shared"] != "true" {
		t.Errorf("the spec lacks volume.uploads.shared: %v", a)
	}
	if _, ok := a["volume.data.shared"]; ok {
		t.Errorf("an unshared volume records shared: %v", a)
	}
}

func TestExamplesLoad(t *testing.T) {
	for _, dir := range []string{"../examples/quickstart", "../examples/manual-generator"} {
		p := load(t, Options{Dir: dir})
		if len(p.Services) != 1 {
			t.Errorf("%s: %d services", dir, len(p.Services))
		}
	}
	p := load(t, Options{Dir: "../examples/manual-generator", Vars: []VarArg{{Name: "slack_webhook", Value: "https://hooks.example/T0/B0/secret"}}})
	if !p.Sensitive["notify.slack.ops.url"] {
		t.Errorf("the slack webhook is not marked sensitive: %v", p.Sensitive)
	}
}

// A store's kind follows from its name when that is a kind, else from its attributes; the
// encryption and signing settings are read, and the signing key is known to be sensitive.
func TestStoreKindsAndKeys(t *testing.T) {
	dir := t.TempDir()
	src := `project = "x"
variable "sign" {
  type      = string
  sensitive = true
}
backup_store "offsite" {
  bucket     = "backups"
  prefix     = "x"
  sse        = "aws:kms"
  kms_key_id = "alias/backups"
  signing_key = var.sign
  encryption {
    age_recipients = ["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"]
  }
}
backup_store "nas" { directory = "/mnt/nas" }
backup_store "s3" { bucket = "other" }
`
	os.WriteFile(filepath.Join(dir, "main.hcl"), []byte(src), 0o644)
	p := load(t, Options{Dir: dir, Vars: []VarArg{{Name: "sign", Value: "0123456789abcdef0123"}}})
	for name, kind := range map[string]string{"offsite": "s3", "nas": "local", "s3": "s3"} {
		if got := string(p.Stores[name].Kind); got != kind {
			t.Errorf("store %s: kind %q, want %q", name, got, kind)
		}
	}
	st := p.Stores["offsite"]
	if st.SSE != "aws:kms" || st.KMSKeyID != "alias/backups" || len(st.AgeRecipients) != 1 || st.SigningKey != "0123456789abcdef0123" {
		t.Errorf("offsite: %+v", st)
	}
	if !p.Sensitive["backup_store.offsite.signing_key"] {
		t.Error("the signing key is not marked sensitive")
	}
}

// The migration and smoke blocks with their defaults: a lone database is the one migrated, and
// a smoke duration without requests runs for the duration.
func TestMigrationAndSmokeBlocks(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "deployer.hcl"), []byte(`
project = "x"
service "a" {
  image = "a"
  port {
    container = 80
    host      = 8080
  }
  volume "data" { target = "/data" }
  sqlite "main" {
    volume = "data"
    path   = "app.db"
  }
  backup { volumes = ["data"] }
  migration {
    command           = ["./migrate.sh"]
    allow_destructive = true
  }
  smoke {
    duration       = "5s"
    paths          = ["/", "/manuals"]
    max_error_rate = 0.01
    p95            = "250ms"
  }
}
`), 0o644)
	s := load(t, Options{Dir: dir}).Service("a")
	m, sm := s.Migration, s.Smoke
	if m == nil || m.SQLite != "main" || !m.DryRun || !m.AllowDestructive || m.Deadline != config.DefaultMigrationDeadline || m.HoldTimeout != 30*time.Second {
		t.Errorf("migration: %+v", m)
	}
	if sm == nil || sm.Requests != 0 || sm.Duration != 5*time.Second || sm.Concurrency != config.DefaultSmokeConcurrency || sm.MaxErrorRate != 0.01 || sm.P95 != 250*time.Millisecond || len(sm.Paths) != 2 {
		t.Errorf("smoke: %+v", sm)
	}
	if a := s.Attributes(); a[config.AttrMigrationCommand] != `["./migrate.sh"]` || a[config.AttrSmokeDuration] != `"5s"` {
		t.Errorf("attributes: %v", a)
	}
}

// Engines, a service's engines and its rollout: references and names, a share as the batch,
// TLS files resolved against the configuration's directory (to their real path once they
// exist), the default engine.
func TestEnginesAndRollout(t *testing.T) {
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "tls"), 0o755)
	os.WriteFile(filepath.Join(dir, "tls", "ca.pem"), []byte("ca"), 0o644)
	os.WriteFile(filepath.Join(dir, "deployer.hcl"), []byte(`
project = "x"
engine "web1" { host = "ssh://deploy@203.0.113.10" }
engine "web2" {
  host = "tcp://10.0.0.2:2376"
  tls {
    ca   = "tls/ca.pem"
    cert = "tls/cert.pem"
    key  = "tls/key.pem" # written by CI before plan
  }
}
engine "web3" { host = "unix:///run/web3.sock" }
service "api" {
  image   = "a"
  engines = [engine.web1, engine.web2, "web3"]
  rollout {
    batch = "50%"
    wait  = "30s"
  }
  port {
    container = 80
    host      = 8080
  }
}
service "worker" {
  image = "b"
  port {
    container = 80
    host      = 8080 # another engine: no clash
  }
}
service "edge" {
  image   = "c"
  engines = [engine.default]
}
`), 0o644)
	p := load(t, Options{Dir: dir})
	api, worker, edge := p.Service("api"), p.Service("worker"), p.Service("edge")
	if !slices.Equal(api.EngineNames(), []string{"web1", "web2", "web3"}) || api.Rollout.BatchPercent != 50 || api.Rollout.Wait != 30*time.Second {
		t.Errorf("api: engines %v, rollout %+v", api.Engines, api.Rollout)
	}
	if n := api.Rollout.BatchSize(3); n != 2 {
		t.Errorf("50%% of 3 engines is %d at a time, want 2", n)
	}
	if !slices.Equal(worker.EngineNames(), []string{config.DefaultEngine}) || worker.Rollout.Batch != 1 || worker.Rollout.BatchSize(3) != 1 {
		t.Errorf("worker: engines %v, rollout %+v", worker.EngineNames(), worker.Rollout)
	}
	if !slices.Equal(edge.EngineNames(), []string{config.DefaultEngine}) {
		t.Errorf("edge: engines %v", edge.EngineNames())
	}
	e := p.Engines["web2"]
	if e == nil || e.Host != "tcp://10.0.0.2:2376" || e.TLS == nil || e.TLS.CA != filepath.Join(dir, "tls/ca.pem") || e.TLS.Key != filepath.Join(dir, "tls/key.pem") {
		t.Errorf("engine web2: %+v %+v", e, e.TLS)
	}
	if len(p.Engines) != 3 || p.Engines["web1"].Host != "ssh://deploy@203.0.113.10" {
		t.Errorf("engines: %+v", p.Engines)
	}
}
