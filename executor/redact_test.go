package executor_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor/plan"
	"github.com/deployer-dev/deployer/hclspec"
)

// A configuration written to print its secrets: a sensitive variable and the CI's environment,
// rebuilt in every way the language allows (functions, an object indexed character by
// character, a template loop, env()), put where secrets are allowed and plan and apply show
// things (env values, a hook's command). Everywhere else they are refused (hclspec's tests).
const leakingConfig = `
project = %q

variable "token" {
  type      = string
  sensitive = true
}
variable "version" { default = "v1" }
variable "canary_path" { default = "/" }
variable "hook_code" { default = "0" }

locals {
  chars = { for c in split("", "abcdefghijklmnopqrstuvwxyz0123456789-ABCDEFGHIJKLMNOPQRSTUVWXYZ") : c => c }
  leak  = join("", [for i in range(16) : local.chars[substr(var.token, i, 1)]])
  aws   = join("", [for i in range(8) : local.chars[substr(env("AWS_SECRET_ACCESS_KEY"), i, 1)]])
}

backup_store "local" { directory = %q }

docker { proxy_image = "deployer-proxy:mem" }

service "app" {
  image          = "app:1"
  container_name = "%s-app"
  env = {
    APP_VERSION = var.version
    APP_DATA    = "/data"
    APP_PORT    = "%d"
    DIRECT      = var.token
    REBUILT     = local.leak
    UPPER       = upper(var.token)
    REVERSED    = strrev(var.token)
    SPACED      = join(" ", split("", var.token))
    LOOPED      = "%%{for c in split("", var.token)}${c}%%{endfor}"
    FROM_ENV    = env("AWS_SECRET_ACCESS_KEY")
    ENV_REBUILT = local.aws
    GITHUB      = env("GITHUB_TOKEN")
    JSON        = jsonencode({ t = var.token })
  }
  port {
    container = %d
    host      = %d
  }
  volume "%s-data" { target = "/data" }
  health_check {
    path     = "/health"
    interval = "20ms"
    timeout  = "1s"
    healthy  = 2
    deadline = "5s"
  }
  canary "c" { path = var.canary_path }
  hook "before_cutover" { command = ["exit", substr("${var.hook_code}${local.leak}", 0, 1)] }
  backup {
    store   = backup_store.local
    volumes = ["%s-data"]
  }
  deploy {
    cutover      = "proxy"
    stop_timeout = "1s"
    drain        = "200ms"
  }
}
`

const (
	leakToken = "tok-QzWxRvPsYuMn" // letters that no hex digest, port or duration holds
	leakAWS   = "AKIAqRzXwVtYuPsN"
	leakGH    = "ghp-CI-tokQRSTUV"
)

// leakPieces are the 4-character pieces of the secrets and of their transforms.
func leakPieces() []string {
	var out []string
	rev := func(s string) string { r := []rune(s); slices.Reverse(r); return string(r) }
	for _, s := range []string{leakToken, strings.ToUpper(leakToken), rev(leakToken), strings.Join(strings.Split(leakToken, ""), " "), leakAWS, leakGH} {
		for i := 0; i+4 <= len(s); i++ {
			out = append(out, s[i:i+4])
		}
	}
	return out
}

// Nothing computed from a secret appears in any output of plan and apply: the plan's text and
// JSON, the saved plan, apply's events (-json prints them) and outcome, a failing apply's
// error, and the labels on what runs.
func TestSecretsRebuiltNeverShown(t *testing.T) {
	r := newMemRig(t, config.CutoverProxy)
	dir := t.TempDir()
	src := fmt.Sprintf(leakingConfig, r.project, r.store, r.project, r.appPort, r.appPort, r.port, r.project, r.project)
	os.WriteFile(filepath.Join(dir, "deployer.hcl"), []byte(src), 0o644)
	env := []string{"DEPLOYER_VAR_token=" + leakToken, "AWS_SECRET_ACCESS_KEY=" + leakAWS, "GITHUB_TOKEN=" + leakGH}
	loadWith := func(vars ...hclspec.VarArg) *config.Project {
		res, diags := hclspec.Load(hclspec.Options{Dir: dir, Env: env, Vars: vars})
		if diags.HasErrors() {
			t.Fatalf("load: %s", res.DiagnosticsText(diags))
		}
		return res.Project
	}
	p := loadWith()
	if p.Service("app").Env["REBUILT"] != leakToken || p.Service("app").Env["ENV_REBUILT"] != leakAWS[:8] {
		t.Fatalf("the attack does not rebuild the secret: %v", p.Service("app").Env)
	}
	pieces := leakPieces()
	check := func(what, out string) {
		t.Helper()
		for _, s := range pieces {
			if strings.Contains(out, s) {
				t.Errorf("%s shows %q:\n%.3000s", what, s, out)
				return
			}
		}
	}

	pl := r.plan(p)
	var text, js bytes.Buffer
	if err := pl.WriteText(&text, plan.RenderOptions{}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text.String(), "(sensitive)") || !strings.Contains(text.String(), "APP_VERSION") {
		t.Fatalf("the plan shows no attributes to check:\n%s", text.String())
	}
	check("plan", text.String())
	if err := pl.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	check("plan -json", js.String())
	saved := filepath.Join(t.TempDir(), "plan.json")
	sp := &plan.SavedPlan{Plan: pl, Dir: dir, Variables: []plan.SavedVariable{{Name: "token", Sensitive: true, Hash: pl.HashSensitive(`"` + leakToken + `"`), Source: "environment"}}}
	if err := plan.WritePlanFile(saved, sp); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(saved)
	check("the saved plan", string(b))

	out, err := r.applier(p).Apply(context.Background(), pl)
	if err != nil || len(out.Services) != 1 || out.Services[0].Error != "" {
		t.Fatalf("apply: %v %+v", err, out)
	}
	events := func() string {
		r.mu.Lock()
		defer r.mu.Unlock()
		var all strings.Builder
		for _, e := range r.events {
			b, _ := json.Marshal(e)
			all.Write(b)
			all.WriteByte('\n')
		}
		r.events = nil
		return all.String()
	}
	ev := events()
	if !strings.Contains(ev, "canary") {
		t.Fatalf("no canary in the events:\n%s", ev)
	}
	check("apply events", ev)
	ob, _ := json.Marshal(out)
	check("apply outcome", string(ob))

	// A failing apply: the hook's exit code (a word computed from the secret) is 1.
	p = loadWith(hclspec.VarArg{Name: "version", Value: "v2"}, hclspec.VarArg{Name: "hook_code", Value: "1"})
	out, err = r.applier(p).Apply(context.Background(), r.plan(p))
	if err != nil || len(out.Services) != 1 || out.Services[0].Error == "" {
		t.Fatalf("the failing hook did not fail the apply: %v %+v", err, out)
	}
	ev = events()
	check("failing apply events", ev)
	check("failing apply error", out.Services[0].Error)
	if !strings.Contains(out.Services[0].Error, "(sensitive)") {
		t.Errorf("the error does not show where the secret was: %v", out.Services[0].Error)
	}
	obs, _ := plan.Observe(context.Background(), r.eng, projectOnly(r.project))
	for _, c := range obs.All {
		for k, v := range c.Labels {
			check("label "+k, v)
		}
	}
}
