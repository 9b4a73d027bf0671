package main

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/deployer-dev/deployer/executor/docker/dockertest"
	"github.com/deployer-dev/deployer/executor/plan"
)

const secretsConfig = `
project = %q

variable "version" { default = "v1" }
variable "token" {
  type      = string
  sensitive = true
}
variable "hook_secret" {
  type      = string
  sensitive = true
}
variable "hook_code" { default = "0" }
variable "seed_db" {
  type      = string
  sensitive = true
}
variable "webhook" {
  type      = string
  sensitive = true
}

service "app" {
  image   = "%s-app:latest"
  build {
    context = "app"
    args    = { BUILD_TOKEN = var.token }
  }
  command = ["serve", "--token=${var.token}"]
  env = {
    APP_VERSION = var.version
    APP_DATA    = "/data"
    APP_SEED_DB = var.seed_db
    API_TOKEN   = var.token
  }
  port {
    container = 8080
    host      = %d
  }
  volume "%s-data" { target = "/data" }
  health_check {
    path     = "/health"
    interval = "100ms"
    deadline = "20s"
  }
  canary "home" { path = "/" }
  sqlite "main" {
    volume        = "%s-data"
    path          = "app.db"
    seed_if_empty = ["seed", "/data/app.db", var.hook_secret]
  }
  hook "before_cutover" {
    command = ["exit", var.hook_code, var.hook_secret]
  }
  deploy {
    stop_timeout = "2s"
  }
}

notify "webhook" "ops" {
  url = var.webhook
}
notify "webhook" "down" {
  url = "http://ops:pw-PLAIN-SECRET@127.0.0.1:1/hooks?token=q-PLAIN-SECRET"
}
`

// A sensitive value in every kind of attribute where secrets go (command, env, build args, hook
// and seed commands, notify URLs; elsewhere it is refused) is searched for in every output: plan text
// and JSON, the saved plan, apply text and -json events, errors, notices, status, releases,
// and the labels on the containers. A webhook URL's user info and query never show either.
func TestSecretsNeverShown(t *testing.T) {
	eng := dockertest.Engine(t)
	project := dockertest.Project(t, eng)
	dir := t.TempDir()
	dockertest.AppContext(t, filepath.Join(dir, "app"))
	t.Cleanup(func() { eng.RemoveImage(context.Background(), project+"-app:latest") })
	port := dockertest.FreePort(t)
	cfg := fmt.Sprintf(secretsConfig, project, project, port, project, project)
	os.WriteFile(filepath.Join(dir, "deployer.hcl"), []byte(cfg), 0o644)

	var mu sync.Mutex
	var notices []string
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		notices = append(notices, r.URL.String()+" "+string(b))
		mu.Unlock()
	}))
	defer hook.Close()

	token, hookSecret := "tok-9f8e7d6c5b4a", "hs-a1b2c3d4e5f6"
	webhook := hook.URL + "/hook/wh-0a9b8c7d6e5f"
	secrets := []string{token, hookSecret, "wh-0a9b8c7d6e5f", "pw-PLAIN-SECRET", "q-PLAIN-SECRET"}
	seedDB := base64.StdEncoding.EncodeToString(emptyDB(t))
	vars := func(extra ...string) []string {
		return append([]string{"-var", "token=" + token, "-var", "hook_secret=" + hookSecret, "-var", "webhook=" + webhook, "-var", "seed_db=" + seedDB}, extra...)
	}
	r := &cliRig{t: t, eng: eng, dir: dir, project: project, port: port}
	check := func(what, out string) {
		t.Helper()
		for _, s := range secrets {
			if strings.Contains(out, s) {
				t.Errorf("%s shows %q:\n%s", what, s, out)
			}
		}
	}

	out, code := r.run(nil, append([]string{"plan"}, vars()...)...)
	if code != 0 || !strings.Contains(out, "(sensitive)") {
		t.Fatalf("plan: %d\n%s", code, out)
	}
	check("plan", out)
	out, _ = r.run(nil, append([]string{"plan", "-json"}, vars()...)...)
	check("plan -json", out)
	planFile := filepath.Join(t.TempDir(), "deploy.plan")
	r.run(nil, append([]string{"plan", "-out", planFile}, vars()...)...)
	saved, _ := os.ReadFile(planFile)
	check("the saved plan", string(saved))
	for _, s := range secrets {
		sum := sha256.Sum256([]byte(s))
		if strings.Contains(string(saved), hex.EncodeToString(sum[:])) {
			t.Errorf("the saved plan holds the unkeyed sha256 of %q: it can be checked against a guess offline", s)
		}
	}
	out, code = r.run(nil, append([]string{"apply", planFile}, vars()...)...)
	if code != 0 {
		t.Fatalf("apply: %d\n%s", code, out)
	}
	check("apply", out)
	if !strings.Contains(out, `notify webhook "down" (http://127.0.0.1:1/...)`) {
		t.Errorf("the failed notice is not named by its host:\n%s", out)
	}

	// A change, with -json events, and a failing hook whose command holds a secret.
	out, code = r.run(nil, append([]string{"apply", "-auto-approve", "-json"}, vars("-var", "version=v2")...)...)
	if code != 0 {
		t.Fatalf("apply -json: %d\n%s", code, out)
	}
	check("apply -json", out)
	out, code = r.run(nil, append([]string{"apply", "-auto-approve"}, vars("-var", "version=v3", "-var", "hook_code=3")...)...)
	if code != 1 || !strings.Contains(out, "exited with code 3") {
		t.Fatalf("failing hook: %d\n%s", code, out)
	}
	check("the failing apply", out)
	for _, args := range [][]string{{"status"}, {"status", "-json"}, {"releases", "service.app"}} {
		out, _ := r.run(nil, append(args, vars()...)...)
		check(strings.Join(args, " "), out)
	}
	mu.Lock()
	if len(notices) < 4 {
		t.Errorf("%d notices received", len(notices))
	}
	for _, n := range notices {
		check("a notice", strings.SplitN(n, " ", 2)[1])
	}
	mu.Unlock()
	// The labels hold keyed hashes only.
	obs, _ := plan.Observe(context.Background(), eng, projectOnly(project))
	for _, c := range obs.All {
		for k, v := range c.Labels {
			check("label "+k, v)
		}
	}
}

// emptyDB is a SQLite database with a table and no rows.
func emptyDB(t *testing.T) []byte {
	p := filepath.Join(t.TempDir(), "seed.db")
	db, err := sql.Open("sqlite", p)
	if err != nil {
		t.Fatal(err)
	}
	db.Exec("CREATE TABLE manuals (id INTEGER PRIMARY KEY, body TEXT)")
	db.Exec("INSERT INTO manuals (body) VALUES ('seeded')")
	db.Close()
	b, _ := os.ReadFile(p)
	return b
}
