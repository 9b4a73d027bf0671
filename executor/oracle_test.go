package executor_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor/plan"
	"github.com/deployer-dev/deployer/hclspec"
)

// oracleConfig computes, from bits of a secret, values that are the deployer's own words when
// the bit is set ("candidate", "deploy lock", the project's and the service's names, a port,
// the image), where a secret may go (env values, a command's words). If the plan masked every
// value computed from a secret wherever its text appeared, which words come out masked would
// tell the bits (review finding 4).
const oracleConfig = `
project = %q

variable "token" {
  type      = string
  sensitive = true
}

locals {
  bits = [for i in range(8) : contains(split("", "abcdefghijklm"), substr(var.token, i, 1))]
}

docker { proxy_image = "deployer-proxy:mem" }

service "app" {
  image = "app:1"
  env = {
    APP_PORT = "%d"
    B0 = local.bits[0] ? "candidate" : "zzzzzzz0"
    B1 = local.bits[1] ? "deploy lock" : "zzzzzzz1"
    B2 = local.bits[2] ? %q : "zzzzzzz2"
    B3 = local.bits[3] ? "app:1" : "zzzzzzz3"
    B4 = local.bits[4] ? "%d" : "zzzzzzz4"
    B5 = local.bits[5] ? "create and start" : "zzzzzzz5"
    B6 = local.bits[6] ? "exit" : "zzzzzzz6"
    B7 = local.bits[7] ? "health-check" : "zzzzzzz7"
  }
  port {
    container = %d
    host      = %d
  }
  hook "before_cutover" { command = ["exit", local.bits[0] ? "0" : "00"] }
}
`

// Two plans of one configuration, whose values computed from the secret differ, are the same
// text: the plan shows those values as (sensitive) by where they are, and masks only the
// secret's own text. Their JSON differs only in the keyed hashes of sensitive values (and the
// spec hash and the configuration's fingerprint, made from them).
func TestPlanTextDoesNotDependOnSecrets(t *testing.T) {
	r := newMemRig(t, config.CutoverRestart)
	dir := t.TempDir()
	src := fmt.Sprintf(oracleConfig, r.project, r.appPort, r.project, r.port, r.appPort, r.port)
	os.WriteFile(filepath.Join(dir, "deployer.hcl"), []byte(src), 0o644)
	hashes := regexp.MustCompile(`hmac:[0-9a-f]+|"(config|spec_hash)": "sha256:[0-9a-f]+"`)
	var texts, jsons []string
	for _, secret := range []string{"abcdefgh-secret-one", "nopqrstu-secret-two", "anbncndn-secret-three"} {
		res, diags := hclspec.Load(hclspec.Options{Dir: dir, Env: []string{"DEPLOYER_VAR_token=" + secret}})
		if diags.HasErrors() {
			t.Fatalf("load: %s", res.DiagnosticsText(diags))
		}
		p := res.Project
		if got := p.Service("app").Env["B0"]; (secret[0] == 'a') != (got == "candidate") {
			t.Fatalf("the attack does not do what the test thinks: B0 = %q", got)
		}
		pl := r.plan(p)
		var text, js bytes.Buffer
		if err := pl.WriteText(&text, plan.RenderOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := pl.WriteJSON(&js); err != nil {
			t.Fatal(err)
		}
		for _, w := range []string{"candidate", "deploy lock", r.project, "create and start", "health-check", "exit (sensitive)"} {
			if !strings.Contains(text.String(), w) {
				t.Errorf("the plan does not show %q (masked?):\n%s", w, text.String())
			}
		}
		if strings.Contains(text.String(), secret) || strings.Contains(js.String(), secret) {
			t.Errorf("the plan shows the secret")
		}
		texts = append(texts, text.String())
		jsons = append(jsons, hashes.ReplaceAllString(js.String(), "H"))
	}
	for i := 1; i < len(texts); i++ {
		if texts[i] != texts[0] {
			t.Errorf("the plan text depends on the secret:\n--- first\n%s\n--- then\n%s", texts[0], texts[i])
		}
		if jsons[i] != jsons[0] {
			t.Errorf("the plan JSON depends on the secret beyond its keyed hashes:\n--- first\n%s\n--- then\n%s", jsons[0], jsons[i])
		}
	}
}
