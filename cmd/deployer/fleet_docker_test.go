package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/deployer-dev/deployer/executor/docker/dockertest"
)

const fleetConfig = `
project = %q

variable "version" { default = "v1" }

engine "web1" { host = %q }
engine "web2" { host = %q }
engine "web3" { host = %q }

service "app" {
  image   = "deployer-testapp:test"
  engines = [engine.web1, engine.web2, engine.web3]
  env = {
    APP_VERSION = var.version
  }
  port {
    container = 8080
    host      = 8080
  }
  health_check {
    path     = "/health"
    interval = "100ms"
    deadline = "20s"
  }
  deploy {
    cutover      = "proxy"
    stop_timeout = "2s"
  }
  rollout {
    batch = 1
    wait  = "1s"
  }
}
`

// The CLI on three engines of the test's own, web3 reached through ssh:// (an sshd inside its
// namespace): plan names each engine's service as service.app[webN] and shows the batches;
// apply deploys all three (the image sent from web1, which alone has it); a kill -9 between
// batches (web1 switched, web2 about to) leaves the engines out of step, which plan says, and
// the next apply converges every engine to the configuration.
func TestFleetCLI(t *testing.T) {
	main := dockertest.Engine(t)
	app := dockertest.AppImage(t, main)
	hosts := dockertest.HostEngines(t, 3)
	hosts[0].LoadFrom(t, main, app)
	sshHost, sshCommand := hosts[2].SSH(t)
	r := &cliRig{t: t, eng: main, dir: t.TempDir(), project: dockertest.Project(t, main)}
	cfg := fmt.Sprintf(fleetConfig, r.project, hosts[0].Host, hosts[1].Host, sshHost)
	if err := os.WriteFile(filepath.Join(r.dir, "deployer.hcl"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	env := []string{"DEPLOYER_SSH_COMMAND=" + sshCommand}
	serves := func() string {
		var parts []string
		for _, h := range hosts {
			parts = append(parts, h.Name+"="+h.Get("http://127.0.0.1:8080/"))
		}
		return strings.Join(parts, " ")
	}

	out, code := r.run(env, "plan")
	for _, w := range []string{"Engine web1:", "Engine web3: project", sshHost, "service.app[web2] will be created (release 1)", "[web1] then [web2] then [web3], each batch watched for 1s", "the image of engine web1"} {
		if !strings.Contains(out, w) {
			t.Errorf("plan does not say %q:\n%s", w, out)
		}
	}
	if code != 0 {
		t.Fatalf("plan exit %d:\n%s", code, out)
	}
	// An engine that cannot be reached: named with its error, the others' plans shown, exit 1;
	// apply changes nothing anywhere.
	unreachable := strings.Replace(cfg, "engines = [engine.web1, engine.web2, engine.web3]", "engines = [engine.web1, engine.web2, engine.web3, engine.web4]", 1) +
		"\nengine \"web4\" { host = \"unix:///run/deployer-test-no-such-engine.sock\" }\n"
	os.WriteFile(filepath.Join(r.dir, "deployer.hcl"), []byte(unreachable), 0o644)
	out, code = r.run(env, "plan")
	if code != 1 || !strings.Contains(out, "Engine web4: cannot be read") || !strings.Contains(out, "service.app[web1] will be created") {
		t.Errorf("plan with web4 unreachable (exit %d):\n%s", code, out)
	}
	out, code = r.run(env, "apply", "-auto-approve")
	if code != 1 || !strings.Contains(out, "nothing was changed") {
		t.Errorf("apply with web4 unreachable (exit %d):\n%s", code, out)
	}
	if got := serves(); strings.Contains(got, "version=") {
		t.Errorf("an engine changed although web4 could not be reached: %s", got)
	}
	os.WriteFile(filepath.Join(r.dir, "deployer.hcl"), []byte(cfg), 0o644)

	if out, code := r.run(env, "apply", "-auto-approve"); code != 0 || !strings.Contains(out, "service.app[web3]: release 1 live") || !strings.Contains(out, "sent from engine web1") {
		t.Fatalf("apply exit %d:\n%s", code, out)
	}
	if got := serves(); got != "web1=version=v1 web2=version=v1 web3=version=v1" {
		t.Fatalf("after the first apply: %s", got)
	}

	// A saved plan of the three engines: applied exactly, and refused once what runs changed.
	planFile := filepath.Join(r.dir, "v1b.plan")
	if out, code := r.run(env, "plan", "-out", planFile, "-var", "version=v1b"); code != 0 || !strings.Contains(out, "Saved the plan to") {
		t.Fatalf("plan -out (exit %d):\n%s", code, out)
	}
	stale := filepath.Join(r.dir, "v1c.plan")
	if out, code := r.run(env, "plan", "-out", stale, "-var", "version=v1c"); code != 0 {
		t.Fatalf("plan -out (exit %d):\n%s", code, out)
	}
	if out, code := r.run(env, "apply", planFile); code != 0 || !strings.Contains(out, "service.app[web2]: release 2 live") {
		t.Fatalf("apply of the saved plan (exit %d):\n%s", code, out)
	}
	if got := serves(); got != "web1=version=v1b web2=version=v1b web3=version=v1b" {
		t.Errorf("after the saved plan: %s", got)
	}
	if out, code := r.run(env, "apply", stale); code != 1 || !strings.Contains(out, "is stale: what runs on") {
		t.Errorf("apply of a stale saved plan (exit %d):\n%s", code, out)
	}
	if out, code := r.run(env, "apply", "-auto-approve"); code != 0 || !strings.Contains(out, "release 3 live") {
		t.Fatalf("back to v1 (exit %d):\n%s", code, out)
	}

	out, code = r.run(append(env, "DEPLOYER_TEST_KILL_AT=web2/cutover"), "apply", "-auto-approve", "-var", "version=v2")
	if code != -9 {
		t.Fatalf("the apply killed between batches exited %d:\n%s", code, out)
	}
	if got := serves(); got != "web1=version=v2 web2=version=v1 web3=version=v1" {
		t.Errorf("after the kill between batches: %s", got)
	}
	out, _ = r.run(env, "plan", "-var", "version=v2")
	if !strings.Contains(out, "service.app runs different releases (web2, web3: release 3; web1: release 4)") {
		t.Errorf("plan after the kill does not say the engines are out of step:\n%s", out)
	}
	out, code = r.run(env, "apply", "-auto-approve", "-var", "version=v2")
	if code != 0 {
		t.Fatalf("the apply after the kill exited %d:\n%s", code, out)
	}
	// One release number on every engine: web1's, which the others' leftover candidates had.
	if !strings.Contains(out, "service.app[web2]: release 4 live") || !strings.Contains(out, "service.app[web3]: release 4 live") {
		t.Errorf("the converging apply:\n%s", out)
	}
	if got := serves(); got != "web1=version=v2 web2=version=v2 web3=version=v2" {
		t.Errorf("after the converging apply: %s", got)
	}
	if out, code := r.run(env, "plan", "-detailed-exitcode", "-var", "version=v2"); code != 0 {
		t.Errorf("plan after converging: exit %d:\n%s", code, out)
	}
	// status and releases per engine; rollback on all engines.
	out, code = r.run(env, "status")
	if strings.Contains(out, "unhealthy") {
		t.Errorf("status checks the engines' releases from here, where their ports are not reachable:\n%s", out)
	}
	for _, w := range []string{"Engine web1: Project", "Engine web3: Project", "service.app[web2]", "live      release 4"} {
		if code != 0 || !strings.Contains(out, w) {
			t.Errorf("status (exit %d) does not say %q:\n%s", code, w, out)
		}
	}
	if out, code := r.run(env, "status", "-engine", "web2"); code != 0 || strings.Contains(out, "web1") || !strings.Contains(out, "service.app[web2]") {
		t.Errorf("status -engine web2 (exit %d):\n%s", code, out)
	}
	if out, code := r.run(env, "releases", "service.app"); code != 0 || strings.Count(out, "RELEASE") != 3 || !strings.Contains(out, "service.app[web3]:") {
		t.Errorf("releases (exit %d):\n%s", code, out)
	}
	if out, code := r.run(env, "rollback", "service.app", "-to", "9"); code == 0 || !strings.Contains(out, "nothing was changed") {
		t.Errorf("rollback to a release no engine keeps (exit %d):\n%s", code, out)
	}
	out, code = r.run(env, "rollback", "service.app")
	if code != 0 || !strings.Contains(out, "service.app[web3]: release 3 live") {
		t.Errorf("rollback (exit %d):\n%s", code, out)
	}
	if got := serves(); got != "web1=version=v1 web2=version=v1 web3=version=v1" {
		t.Errorf("after the rollback: %s", got)
	}

	// A service with a database runs on one engine; plan -migrations dry-runs its migration
	// there.
	db := fmt.Sprintf(`
service "db" {
  image   = "deployer-testapp:test"
  engines = [engine.web2]
  volume "%[1]s-db" { target = "/data" }
  sqlite "main" {
    volume = "%[1]s-db"
    path   = "app.db"
  }
  backup { volumes = ["%[1]s-db"] }
  migration {
    command = ["sql", "/data/app.db", "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)"]
  }
}
`, r.project)
	os.WriteFile(filepath.Join(r.dir, "deployer.hcl"), []byte(cfg+db), 0o644)
	out, code = r.run(env, "plan", "-migrations")
	if code != 0 || !strings.Contains(out, "service.db[web2]: `sql /data/app.db") || !strings.Contains(out, "+ table notes") {
		t.Errorf("plan -migrations (exit %d):\n%s", code, out)
	}
}
