package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/deployer-dev/deployer/executor/docker/dockertest"
	"github.com/deployer-dev/deployer/executor/plan"
)

const migrationConfig = `
project = %q

variable "version" { default = "v1" }
variable "sql" { default = "CREATE TABLE IF NOT EXISTS settings (k TEXT PRIMARY KEY, v TEXT)" }

service "app" {
  image = %q
  env = {
    APP_VERSION      = var.version
    APP_WRITER_DB    = "/data/app.db"
    APP_WRITER_EVERY = "10ms"
  }
  port {
    container = 8080
    host      = %d
    candidate = %d
  }
  volume "%s-data" { target = "/data" }
  health_check {
    path     = "/health"
    interval = "100ms"
    deadline = "20s"
  }
  sqlite "main" {
    volume = "%s-data"
    path   = "app.db"
  }
  backup {
    volumes = ["%s-data"]
  }
  migration {
    command  = ["sql", "/data/app.db", var.sql]
    deadline = "30s"
  }
  smoke {
    requests = 50
  }
  deploy {
    cutover      = "proxy"
    drain        = "1s"
    stop_timeout = "2s"
  }
}
`

type liveSchema struct {
	Columns []string `json:"columns"`
	Count   int64    `json:"count"`
	Max     int64    `json:"max"`
	Error   string   `json:"error"`
}

func (r *cliRig) schema() liveSchema {
	r.t.Helper()
	var s liveSchema
	body := r.get("/writer?schema=1")
	if err := json.Unmarshal([]byte(body), &s); err != nil || s.Error != "" {
		r.t.Fatalf("GET /writer?schema=1: %q (%v)", body, err)
	}
	return s
}

// A migration as an operator runs it: the first deploy migrates a database that does not
// exist yet; plan -migrations shows the diff of the next one without deploying; a kill -9 in
// the dry-run, the trial, the backup or the migration itself leaves release 1 serving on data
// where no row is lost, plan shows what is left, and the next apply converges; releases shows
// the diff; a destructive change is shown as refused.
func TestMigrationCLI(t *testing.T) {
	eng := dockertest.Engine(t)
	r := &cliRig{t: t, eng: eng, dir: t.TempDir(), project: dockertest.Project(t, eng), port: dockertest.FreePort(t)}
	image := dockertest.AppImage(t, eng)
	cfg := fmt.Sprintf(migrationConfig, r.project, image, r.port, dockertest.FreePort(t), r.project, r.project, r.project)
	if err := os.WriteFile(filepath.Join(r.dir, "deployer.hcl"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, code := r.run(nil, "apply", "-auto-approve"); code != 0 {
		t.Fatalf("first deploy: %d\n%s", code, out)
	} else if !strings.Contains(out, "+ table settings") {
		t.Errorf("the first deploy's output does not show the new table:\n%s", out)
	}

	sql := "sql=ALTER TABLE rows ADD COLUMN note TEXT"
	out, code := r.run(nil, "plan", "-migrations", "-var", "version=v2", "-var", sql)
	if code != 0 || !strings.Contains(out, "+ column rows.note TEXT") || !strings.Contains(out, "apply would run it on the live data") {
		t.Fatalf("plan -migrations: exit %d\n%s", code, out)
	}
	if s := r.schema(); slices.Contains(s.Columns, "note") {
		t.Fatalf("plan -migrations changed the live database: %+v", s)
	}
	out, code = r.run(nil, "plan", "-migrations", "-var", "version=v2", "-var", "sql=ALTER TABLE rows DROP COLUMN at")
	if code != 0 || !strings.Contains(out, "- column rows.at") || !strings.Contains(out, "apply would refuse it") {
		t.Fatalf("plan -migrations of a destructive change: exit %d\n%s", code, out)
	}
	if strings.Contains(r.containers(), "oneoff") {
		t.Errorf("plan -migrations left helpers: %s", r.containers())
	}

	for i, point := range []string{"migrate.dry-run", "migrate.trial", "backup", "migrate", "candidate"} {
		version, column := fmt.Sprintf("v%d", i+2), fmt.Sprintf("note%d", i)
		vars := []string{"-var", "version=" + version, "-var", "sql=ALTER TABLE rows ADD COLUMN " + column + " TEXT"}
		t.Run(point, func(t *testing.T) {
			before := r.schema()
			out, code := r.run([]string{"DEPLOYER_TEST_KILL_AT=" + point}, append([]string{"apply", "-auto-approve"}, vars...)...)
			if code != -int(syscall.SIGKILL) {
				t.Fatalf("the deployer was not killed at %s (exit %d):\n%s", point, code, out)
			}
			mid := r.schema()
			if got := r.get("/"); !strings.HasPrefix(got, "version=") || mid.Count != mid.Max || mid.Max < before.Max {
				t.Fatalf("after the kill: / answers %q, rows %+v (before %+v)", got, mid, before)
			}
			pl, code := r.run(nil, append([]string{"plan"}, vars...)...)
			if code != 0 {
				t.Fatalf("plan after the kill: %d\n%s", code, pl)
			}
			out, code = r.run(nil, append([]string{"apply", "-auto-approve"}, vars...)...)
			if code != 0 {
				t.Fatalf("apply after the kill at %s: %d\nplan:\n%s\napply:\n%s", point, code, pl, out)
			}
			after := r.schema()
			if got := r.get("/"); got != "version="+version || !slices.Contains(after.Columns, column) {
				t.Fatalf("after converging: / answers %q, columns %v", got, after.Columns)
			}
			if after.Count != after.Max || after.Max < mid.Max {
				t.Errorf("rows lost or added: %+v (after the kill %+v)", after, mid)
			}
			if obs, err := plan.Observe(t.Context(), r.eng, projectOnly(r.project)); err != nil || len(obs.Services["app"].Candidates) > 0 || obs.Lock != nil {
				t.Errorf("left over (%v): %s", err, r.containers())
			}
			vols, _ := r.eng.Volumes(t.Context(), r.project)
			for _, v := range vols {
				if strings.HasSuffix(v.Name, "-migration") {
					t.Errorf("the dry-run's volume %s is left", v.Name)
				}
			}
			if out, code := r.run(nil, append([]string{"plan", "-detailed-exitcode"}, vars...)...); code != 0 {
				t.Errorf("plan after converging: %d\n%s", code, out)
			}
		})
	}

	out, code = r.run(nil, "releases", "service.app")
	if code != 0 || !strings.Contains(out, "migrated") || !strings.Contains(out, "+ column rows.note4 TEXT") || !strings.Contains(out, "testapp: ran") {
		t.Errorf("releases: exit %d\n%s", code, out)
	}
	time.Sleep(50 * time.Millisecond)
	if s := r.schema(); s.Count != s.Max {
		t.Errorf("rows lost: %+v", s)
	}
}

// A held migration killed at every point of its hold: the next plan shows the safety copy, and
// the next apply puts it back (the old release stopped on data that may be migrated), starts
// the old release and runs the deploy again; the diff of that apply shows the change from the
// old schema, so the migration did not stay half-applied, and no row is lost.
func TestHeldMigrationCrash(t *testing.T) {
	eng := dockertest.Engine(t)
	r := &cliRig{t: t, eng: eng, dir: t.TempDir(), project: dockertest.Project(t, eng), port: dockertest.FreePort(t)}
	image := dockertest.AppImage(t, eng)
	cfg := fmt.Sprintf(migrationConfig, r.project, image, r.port, dockertest.FreePort(t), r.project, r.project, r.project)
	cfg = strings.Replace(cfg, `    deadline = "30s"`, "    deadline = \"30s\"\n    allow_destructive = true", 1)
	if err := os.WriteFile(filepath.Join(r.dir, "deployer.hcl"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, code := r.run(nil, "apply", "-auto-approve"); code != 0 {
		t.Fatalf("first deploy: %d\n%s", code, out)
	}
	types := []string{"TEXT", "BLOB", "NUMERIC", "REAL", "BLOB", "TEXT", "NUMERIC"}
	for i, point := range []string{"migrate", "migrate.held-copied", "migrate.held-migrated", "candidate", "check.health", "cutover"} {
		from, to := types[i], types[i+1]
		version := fmt.Sprintf("v%d", i+2)
		sql := fmt.Sprintf("CREATE TABLE rows2 (n INTEGER PRIMARY KEY, at %s); INSERT INTO rows2 SELECT n, at FROM rows; DROP TABLE rows; ALTER TABLE rows2 RENAME TO rows", to)
		vars := []string{"-var", "version=" + version, "-var", "sql=" + sql}
		t.Run(point, func(t *testing.T) {
			before := r.schema()
			out, code := r.run([]string{"DEPLOYER_TEST_KILL_AT=" + point}, append([]string{"apply", "-auto-approve"}, vars...)...)
			if code != -int(syscall.SIGKILL) {
				t.Fatalf("the deployer was not killed at %s (exit %d):\n%s", point, code, out)
			}
			pl, code := r.run(nil, append([]string{"plan"}, vars...)...)
			if code != 0 {
				t.Fatalf("plan after the kill: %d\n%s", code, pl)
			}
			if point != "migrate" && !strings.Contains(pl, "put volume") {
				t.Errorf("the plan after a kill in the hold does not put the safety copy back:\n%s", pl)
			}
			out, code = r.run(nil, append([]string{"apply", "-auto-approve"}, vars...)...)
			if code != 0 {
				t.Fatalf("apply after the kill at %s: %d\nplan:\n%s\napply:\n%s", point, code, pl, out)
			}
			if want := fmt.Sprintf("~ column rows.at: type %s -> %s", from, to); !strings.Contains(out, want) {
				t.Errorf("the converging apply's diff lacks %q: the data was not put back before it\n%s", want, out)
			}
			after := r.schema()
			if got := r.get("/"); got != "version="+version {
				t.Fatalf("after converging: / answers %q", got)
			}
			if after.Count != after.Max || after.Max < before.Max {
				t.Errorf("rows lost or added: %+v (before %+v)", after, before)
			}
			vols, _ := r.eng.Volumes(t.Context(), r.project)
			for _, v := range vols {
				if v.Labels[plan.LabelRole] == plan.RoleSafety || v.Labels[plan.LabelRole] == plan.RoleScratch {
					t.Errorf("volume %s is left", v.Name)
				}
			}
			if out, code := r.run(nil, append([]string{"plan", "-detailed-exitcode"}, vars...)...); code != 0 {
				t.Errorf("plan after converging: %d\n%s", code, out)
			}
		})
	}
}

// A held migration whose new release fails puts the old data back and starts the old release
// again; the deployer killed at every point of that put-back: the next apply (of the old
// configuration) does not call the old release live unchecked. Stopped, it is started; started
// (it waits under its set-aside name until verified), it is health-checked; in both cases
// before it is live again, on the data from before the migration, with no row lost.
func TestHeldMigrationPutBackCrash(t *testing.T) {
	for _, point := range plan.PutBackPoints {
		t.Run(point, func(t *testing.T) {
			eng := dockertest.Engine(t)
			r := &cliRig{t: t, eng: eng, dir: t.TempDir(), project: dockertest.Project(t, eng), port: dockertest.FreePort(t)}
			image := dockertest.AppImage(t, eng)
			cfg := fmt.Sprintf(migrationConfig, r.project, image, r.port, dockertest.FreePort(t), r.project, r.project, r.project)
			cfg = strings.Replace(cfg, `    deadline = "30s"`, "    deadline = \"30s\"\n    allow_destructive = true\n    dry_run = false", 1)
			cfg = strings.Replace(cfg, `    deadline = "20s"`, `    deadline = "3s"`, 1)
			cfg = strings.Replace(cfg, "    APP_VERSION      = var.version", "    APP_VERSION      = var.version\n    APP_MODE         = var.mode", 1)
			cfg = strings.Replace(cfg, `variable "version" { default = "v1" }`, "variable \"version\" { default = \"v1\" }\nvariable \"mode\" { default = \"healthy\" }", 1)
			if err := os.WriteFile(filepath.Join(r.dir, "deployer.hcl"), []byte(cfg), 0o644); err != nil {
				t.Fatal(err)
			}
			if out, code := r.run(nil, "apply", "-auto-approve"); code != 0 {
				t.Fatalf("first deploy: %d\n%s", code, out)
			}
			before := r.schema()
			sql := "CREATE TABLE rows2 (n INTEGER PRIMARY KEY, at BLOB); INSERT INTO rows2 SELECT n, at FROM rows; DROP TABLE rows; ALTER TABLE rows2 RENAME TO rows"
			out, code := r.run([]string{"DEPLOYER_TEST_KILL_AT=" + point}, "apply", "-auto-approve", "-var", "version=v2", "-var", "mode=unhealthy", "-var", "sql="+sql)
			if code != -int(syscall.SIGKILL) {
				t.Fatalf("the deployer was not killed at %s (exit %d):\n%s", point, code, out)
			}
			pl, code := r.run(nil, "plan")
			if code != 0 {
				t.Fatalf("plan after the kill: %d\n%s", code, pl)
			}
			if !strings.Contains(pl, "health-check") {
				t.Errorf("the plan after the kill at %s does not check release 1 again:\n%s", point, pl)
			}
			out, code = r.run(nil, "apply", "-auto-approve")
			t.Logf("plan:\n%s\napply:\n%s", pl, out)
			if code != 0 || r.get("/") != "version=v1" {
				t.Fatalf("apply after the kill at %s: %d, / answers %q\nplan:\n%s\napply:\n%s\ncontainers: %s", point, code, r.get("/"), pl, out, r.containers())
			}
			if !strings.Contains(out, "verify") && !strings.Contains(out, "health-check") {
				t.Errorf("the apply after the kill at %s did not check release 1:\n%s", point, out)
			}
			after := r.schema()
			if !slices.Equal(after.Columns, before.Columns) || after.Count != after.Max || after.Max < before.Max {
				t.Errorf("the data was not put back whole: %+v (before %+v)", after, before)
			}
			vols, _ := r.eng.Volumes(t.Context(), r.project)
			for _, v := range vols {
				if v.Labels[plan.LabelRole] == plan.RoleSafety {
					t.Errorf("the safety copy %s is left", v.Name)
				}
			}
			if out, code := r.run(nil, "plan", "-detailed-exitcode"); code != 0 {
				t.Errorf("plan after converging: %d\n%s", code, out)
			}
		})
	}
}
