package hclspec

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/zclconf/go-cty/cty"
)

// Hostile configurations from the adversarial review of issue 22 item 2 (reports/config-review.md),
// one class per test: each tries the review's reproduction and the siblings of its class.

// loadSrc writes files into a new directory and loads it.
func loadSrc(t *testing.T, files map[string]string, opts Options) (*Result, hcl.Diagnostics, string) {
	t.Helper()
	dir := t.TempDir()
	for name, src := range files {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	opts.Dir = dir
	res, diags := Load(opts)
	return res, diags, strings.ReplaceAll(res.DiagnosticsText(diags), dir, "DIR")
}

// noPiece fails when text holds a 4-character piece of any secret.
func noPiece(t *testing.T, what, text string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		for i := 0; i+4 <= len(s); i++ {
			if strings.Contains(text, s[i:i+4]) {
				t.Errorf("%s shows %q (of a secret):\n%s", what, s[i:i+4], text)
				return
			}
		}
	}
}

const (
	hookURL = "https://q7zx.hq/T0q/B9k/ZXWVqzxwv7788"
	ciToken = "CIqz7099-QzWxRvPs"
	awsKey  = "AKIAq8Zx-77889900w"
)

// Finding 1: the environment is the secret channel. A value read from it is sensitive whatever
// the configuration declares (the pull request can declare the CI's secret as a number, or not
// sensitive); its text is never parsed as a source file whose lines could be shown; validate
// reads nothing from it.
func TestEnvironmentIsTheSecretChannel(t *testing.T) {
	env := []string{"DEPLOYER_VAR_slack_webhook=" + hookURL, "GITHUB_TOKEN=" + ciToken}
	// Declared as every type a raw value is parsed for, with values that do not parse, that
	// do not lex, that nest too deep: the error names the variable and shows nothing of it.
	values := []string{hookURL, hookURL + "\x01", "[\"" + hookURL + "\"", "{ a = \"" + hookURL + "\" !", strings.Repeat("[", 2000) + hookURL + "\x01", "\"" + hookURL + "\""}
	types := []string{"number", "bool", "list(string)", "map(string)", "object({ a = number })", "set(number)", "tuple([number])"}
	n := 0
	for _, typ := range types {
		for _, v := range values {
			n++
			src := fmt.Sprintf("project = \"x\"\nvariable \"slack_webhook\" { type = %s }\nservice \"web\" { image = \"nginx:latest\" }\n", typ)
			res, diags, text := loadSrc(t, map[string]string{"main.hcl": src}, Options{Env: []string{"DEPLOYER_VAR_slack_webhook=" + v}})
			if !diags.HasErrors() {
				t.Errorf("type %s, value %.20q: loaded", typ, v) // every one is invalid for every type
			}
			noPiece(t, "the error about a raw environment value", text, hookURL)
			for name := range res.files {
				if strings.Contains(name, "<value for var.") {
					t.Errorf("the raw value of an environment variable is kept as a source file %q", name)
				}
			}
		}
	}
	t.Logf("%d raw values from the environment tried", n)

	// Declared not sensitive, read as a variable and with env(): both sensitive, never shown.
	src := `project = "x"
variable "slack_webhook" {}
service "web" {
  image = "nginx:latest"
  env   = { HOOK = var.slack_webhook, FROMENV = env("DEPLOYER_VAR_slack_webhook"), TOKEN = env("GITHUB_TOKEN") }
  command = ["notify", var.slack_webhook]
}
`
	res, diags, text := loadSrc(t, map[string]string{"main.hcl": src}, Options{Env: env})
	if diags.HasErrors() {
		t.Fatal(text)
	}
	p := res.Project
	for _, k := range []string{"env.HOOK", "env.FROMENV", "env.TOKEN", "command"} {
		if !p.IsSensitive("web", k) {
			t.Errorf("%s is not sensitive", k)
		}
	}
	if !p.IsSensitiveElem("web", "command", 1) || p.IsSensitiveElem("web", "command", 0) {
		t.Errorf("the command's words: %v", p.Sensitive)
	}
	if !p.Variables[0].Sensitive || res.Variables[0].Sensitive != true {
		t.Errorf("a variable whose value came from the environment is not sensitive: %+v", p.Variables[0])
	}
	if !contains(p.Secrets, hookURL) || !contains(p.Secrets, ciToken) {
		t.Errorf("the secrets read are not masked: %q", p.Secrets)
	}
	// A short public value passed in the environment is refused, saying to pass it with -var.
	_, _, text = loadSrc(t, map[string]string{"main.hcl": "project = \"x\"\nvariable \"replicas\" { type = number }\n"}, Options{Env: []string{"DEPLOYER_VAR_replicas=3"}})
	if !strings.Contains(text, "var.replicas is sensitive") || !strings.Contains(text, "pass a public value with -var replicas=VALUE") {
		t.Errorf("a short value from the environment: %s", text)
	}
	// The same value given with -var follows the declaration: public.
	res, diags, text = loadSrc(t, map[string]string{"main.hcl": src}, Options{Env: []string{"GITHUB_TOKEN=" + ciToken}, Vars: []VarArg{{Name: "slack_webhook", Value: "public-hook"}}})
	if diags.HasErrors() || res.Project.IsSensitive("web", "env.HOOK") {
		t.Errorf("a -var value of a variable not declared sensitive is sensitive: %s", text)
	}

	// validate reads nothing from the environment: DEPLOYER_VAR_ sets nothing, env() is unknown.
	res, diags, text = loadSrc(t, map[string]string{"main.hcl": src}, Options{Env: env, Unknown: true})
	if diags.HasErrors() || len(res.Unknown) != 1 || res.Unknown[0] != "var.slack_webhook" {
		t.Fatalf("validate: %v %s", res.Unknown, text)
	}
	if p := res.Project; len(p.Secrets) != 0 || !p.Unknown["service.web.env"] && !p.Unknown["service.web.env.TOKEN"] {
		t.Errorf("validate read the environment: secrets %q, unknown %v", p.Secrets, p.Unknown)
	}
}

// Finding 2: HCL's own errors quote the values they are about (a duplicate key produced by a
// for expression, the attributes of a conditional's two sides, an object's keys). Any error of
// an expression that depends on a secret loses everything: it is the one error shown, with no
// text of HCL's, no place.
func TestHCLErrorsAboutSecretsShowNothing(t *testing.T) {
	decl := "project = \"x\"\nvariable \"token\" {\n  type = string\n  sensitive = true\n}\n"
	exprs := []string{
		`{ for i in [1, 2] : join(" ", split("", env("AWS_SECRET_ACCESS_KEY"))) => i }`,
		`true ? zipmap(split("-", env("GITHUB_TOKEN")), [1, "x"]) : { a = [1] }`,
		`{ for i in [1, 2] : upper(var.token) => i }`,
		`true ? zipmap(split("-", var.token), [1, "x"]) : { a = [1] }`,
		`zipmap(split("-", var.token), [1, 2]).nope`,
		`{ (var.token) = 1 }.nope`,
		`tolist([var.token, 1, true]) + 1`,
		`[for c in split("", var.token) : c][99]`,
		`var.token + 1`,
		`!var.token`,
		`{ a = var.token }[var.token]`,
		`"${var.token}" == 1 ? 1 : "a" + 1`,
		`[for k, v in { (var.token) = 1 } : k][1]`,
		`env("AWS_SECRET_ACCESS_KEY")[0]`,
		`jsondecode(env("AWS_SECRET_ACCESS_KEY"))`,
		`tonumber(env("AWS_SECRET_ACCESS_KEY"))`,
		`file(env("AWS_SECRET_ACCESS_KEY"))`,
	}
	env := []string{"AWS_SECRET_ACCESS_KEY=" + awsKey, "GITHUB_TOKEN=" + ciToken, "DEPLOYER_VAR_token=" + testToken}
	for _, e := range exprs {
		_, diags, text := loadSrc(t, map[string]string{"main.hcl": decl + "locals {\n  a = " + e + "\n}\n"}, Options{Env: env})
		if !diags.HasErrors() {
			t.Errorf("%s: no error", e)
			continue
		}
		if len(diags) != 1 || diags[0].Summary != "A value computed from a secret is invalid" || diags[0].Subject != nil {
			t.Errorf("%s: want the one error that names nothing, got:\n%s", e, text)
		}
		noPiece(t, e, text, awsKey, ciToken, testToken, strings.Join(strings.Split(awsKey, ""), " "))
	}
	// JSON syntax too: a duplicate key computed from a secret (HCL's JSON quotes it).
	_, _, text := loadSrc(t, map[string]string{"main.hcl.json": `{"project": "x", "locals": {"dup": {
	  "${join(\" \", split(\"\", env(\"AWS_SECRET_ACCESS_KEY\")))}": 1, "${join(\" \", split(\"\", env(\"AWS_SECRET_ACCESS_KEY\")))} ": 2, "${join(\" \", split(\"\", env(\"AWS_SECRET_ACCESS_KEY\")))}": 3}}}`}, Options{Env: env})
	noPiece(t, "a duplicate JSON key", text, awsKey, strings.Join(strings.Split(awsKey, ""), " "))
	if !strings.Contains(text, "A value computed from a secret is invalid") {
		t.Errorf("a duplicate JSON key: %s", text)
	}
	t.Logf("%d expressions tried", len(exprs)+1)
}

// Finding 3: whether an error occurs, and where, told the secret one check at a time. An error
// that depends on a secret is one error, the same whichever check failed, with no count and no
// place: 100 validation rules or 100 locals, each true or failing by one bit of the secret, give
// the same output for every secret (that some check failed is the one bit a plan tells).
func TestSecretChecksTellOneBit(t *testing.T) {
	classes := []string{"13579ACEGIKMOQSUWYacegikmoqsuwy", "2367BCFGJKNORSVWZbcfgjknorsvwz", "4567DEFGLMNOTUVWdefglmnotuvw", "89HIJKLMNOXYZhijklmnoxyz"}
	var rules, locals, mixed strings.Builder
	for i := 0; i < 25; i++ {
		for b, class := range classes {
			fmt.Fprintf(&rules, "  validation {\n    condition     = length(regexall(\"^.{%d}[%s]\", var.token)) > 0\n    error_message = \"p%d b%d\"\n  }\n", i, class, i, b)
			fmt.Fprintf(&locals, "  p%d_b%d = regex(\"^.{%d}[%s]\", env(\"AWS_SECRET_ACCESS_KEY\"))\n", i, b, i, class)
			fmt.Fprintf(&mixed, "  m%d_b%d = parseint(substr(var.token, %d, 1), %d)\n", i, b, i, 2+b*10)
		}
	}
	configs := map[string]string{
		"100 validation rules": "project = \"x\"\nvariable \"token\" {\n  type = string\n  sensitive = true\n" + rules.String() + "}\n",
		"100 locals":           "project = \"x\"\nlocals {\n" + locals.String() + "}\n",
		"100 locals and an error that is not about a secret": "project = \"x\"\nvariable \"token\" {\n  type = string\n  sensitive = true\n}\nlocals {\n" + mixed.String() + "  plain = parseint(\"zz\", 10)\n}\n",
	}
	// Secrets that each fail some check (one with none failing would tell that bit).
	secrets := []string{"AKIAIOSFODNN7EXAMPLEqZw0099xv", "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLE", "9f8e7d6c5b4a39281706f5e4d3c2b1a0", "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", "Mq-Cz-09-Tx-Wv-Dq-x-7788-kjhg-QQ"}
	for name, src := range configs {
		t.Run(name, func(t *testing.T) {
			var first string
			for _, s := range secrets {
				_, diags, text := loadSrc(t, map[string]string{"main.hcl": src}, Options{Env: []string{"DEPLOYER_VAR_token=" + s, "AWS_SECRET_ACCESS_KEY=" + s}})
				if !diags.HasErrors() {
					t.Fatalf("secret %s: no check failed", s)
				}
				noPiece(t, name, text, s)
				if first == "" {
					first = text
					t.Logf("the output for every secret:\n%s", text)
					continue
				}
				if text != first {
					t.Errorf("the output depends on the secret:\n--- %s\n%s\n--- %s\n%s", secrets[0], first, s, text)
				}
			}
		})
	}
	// validate checks the rules statically: a rule may check its variable only, so env() and
	// file() in one are refused where they are, for every value alike.
	a2 := "project = \"x\"\nvariable \"x\" {\n  default = \"abcd\"\n  validation {\n    condition = length(regexall(\"^.{0}[A]\", env(\"AWS_SECRET_ACCESS_KEY\"))) > 0\n    error_message = \"p0 b0\"\n  }\n  validation {\n    condition = var.x != \"\"\n    error_message = file(\"key.pem\")\n  }\n}\n"
	for _, unknown := range []bool{true, false} {
		_, diags, text := loadSrc(t, map[string]string{"main.hcl": a2}, Options{Env: []string{"AWS_SECRET_ACCESS_KEY=" + awsKey}, Unknown: unknown})
		if len(diags) != 2 || !strings.Contains(text, "may not call env()") || !strings.Contains(text, "may not call file()") || !strings.Contains(text, "main.hcl:5:") {
			t.Errorf("env() in a validation rule: %s", text)
		}
	}
	t.Logf("%d secrets x %d configurations of 100 checks tried", len(secrets), len(configs))
}

// Finding 4 and 6: a secret goes only where secrets belong. Every other attribute of the language
// (names, the image, ports, durations, enumerations, hosts, paths, counts, booleans, a map's
// keys, a command's length) refuses a value computed from one, naming the attribute, so that
// the plan's shape, every name and every address never depend on a secret. The value computed
// is valid for the attribute, and the same whatever the secret: only where it comes from counts.
func TestSecretsOnlyWhereTheyBelong(t *testing.T) {
	s := func(v string) string { return `(var.token == "" ? ` + v + ` : ` + v + `)` } // a value from a secret
	refused := []struct{ src, path string }{
		{`project = ` + s(`"x"`), "project"},
		{`docker { host = ` + s(`"unix:///var/run/docker.sock"`) + ` }`, "docker.host"},
		{`docker { proxy_image = ` + s(`"p:1"`) + ` }`, "docker.proxy_image"},
		{`engine "e" { host = ` + s(`"tcp://10.0.0.1:2376"`) + ` }`, "engine.e.host"},
		{"engine \"e\" {\n host = \"tcp://10.0.0.1:2376\"\n tls { ca = " + s(`"ca.pem"`) + " }\n}", "engine.e.tls.ca"},
		{"engine \"e\" {\n host = \"tcp://10.0.0.1:2376\"\n tls { cert = " + s(`"c.pem"`) + " }\n}", "engine.e.tls.cert"},
		{`backup_store "s3" { bucket = ` + s(`"bucket"`) + ` }`, "backup_store.s3.bucket"},
		{"backup_store \"s3\" {\n bucket = \"bucket\"\n prefix = " + s(`"p/"`) + "\n}", "backup_store.s3.prefix"},
		{"backup_store \"s3\" {\n bucket = \"bucket\"\n region = " + s(`"us-east-1"`) + "\n}", "backup_store.s3.region"},
		{"backup_store \"s3\" {\n bucket = \"bucket\"\n endpoint = " + s(`"http://s3"`) + "\n}", "backup_store.s3.endpoint"},
		{"backup_store \"s3\" {\n bucket = \"bucket\"\n path_style = " + s(`true`) + "\n}", "backup_store.s3.path_style"},
		{"backup_store \"s3\" {\n bucket = \"bucket\"\n sse = " + s(`"AES256"`) + "\n}", "backup_store.s3.sse"},
		{"backup_store \"s3\" {\n bucket = \"bucket\"\n kind = " + s(`"s3"`) + "\n}", "backup_store.s3.kind"},
		{`backup_store "l" { directory = ` + s(`"d"`) + ` }`, "backup_store.l.directory"},
		{"backup_store \"l\" {\n directory = \"d\"\n encryption { age_recipients = " + s(`["age1x"]`) + " }\n}", "backup_store.l.encryption.age_recipients"},
		{`notify "slack" "ops" {` + "\n url = \"https://x\"\n on = " + s(`["failed"]`) + "\n}", "notify.slack.ops.on"},
		{`service "a" { image = ` + s(`"nginx:latest"`) + ` }`, "service.a.image"},
		{`service "a" {` + "\n image = \"a\"\n container_name = " + s(`"c"`) + "\n}", "service.a.container_name"},
		{`service "a" {` + "\n image = \"a\"\n init = " + s(`true`) + "\n}", "service.a.init"},
		{`service "a" {` + "\n image = \"a\"\n engines = " + s(`["default"]`) + "\n}", "service.a.engines"},
		{`service "a" {` + "\n image = \"a\"\n env = merge(var.m, {})\n}", "service.a.env"},
		{`service "a" {` + "\n image = \"a\"\n env = { (var.token) = \"x\" }\n}", "service.a.env"},
		{`service "a" {` + "\n image = \"a\"\n env = { for k, v in var.m : k => v }\n}", "service.a.env"},
		{`service "a" {` + "\n image = \"a\"\n command = split(\",\", var.token)\n}", "service.a.command"},
		{`service "a" {` + "\n image = \"a\"\n command = " + s(`["a", "b"]`) + "\n}", "service.a.command"},
		{`service "a" {` + "\n image = \"a\"\n build { context = " + s(`"."`) + " }\n}", "service.a.build.context"},
		{`service "a" {` + "\n image = \"a\"\n build { dockerfile = " + s(`"Dockerfile"`) + " }\n}", "service.a.build.dockerfile"},
		{`service "a" {` + "\n image = \"a\"\n build { args = var.m }\n}", "service.a.build.args"},
		{`service "a" {` + "\n image = \"a\"\n build { before = concat([\"make\"], split(\",\", var.token)) }\n}", "service.a.build.before"},
		{`service "a" {` + "\n image = \"a\"\n port {\n  container = " + s(`80`) + "\n  host = 8080\n }\n}", "service.a.port.container"},
		{`service "a" {` + "\n image = \"a\"\n port {\n  container = 80\n  host = " + s(`8080`) + "\n }\n}", "service.a.port.80.host"},
		{`service "a" {` + "\n image = \"a\"\n port {\n  container = 80\n  host = 8080\n  candidate = " + s(`8081`) + "\n }\n}", "service.a.port.80.candidate"},
		{`service "a" {` + "\n image = \"a\"\n port {\n  container = 80\n  host = 8080\n  protocol = " + s(`"tcp"`) + "\n }\n}", "service.a.port.80.protocol"},
		{`service "a" {` + "\n image = \"a\"\n volume \"data\" { target = " + s(`"/data"`) + " }\n}", "service.a.volume.data.target"},
		{`service "a" {` + "\n image = \"a\"\n volume \"data\" {\n  target = \"/data\"\n  shared = " + s(`true`) + "\n }\n}", "service.a.volume.data.shared"},
		{`service "a" {` + "\n image = \"a\"\n health_check { path = " + s(`"/h"`) + " }\n}", "service.a.health_check.path"},
		{`service "a" {` + "\n image = \"a\"\n health_check { status = " + s(`[200]`) + " }\n}", "service.a.health_check.status"},
		{`service "a" {` + "\n image = \"a\"\n health_check { interval = " + s(`"1s"`) + " }\n}", "service.a.health_check.interval"},
		{`service "a" {` + "\n image = \"a\"\n health_check { timeout = " + s(`"1s"`) + " }\n}", "service.a.health_check.timeout"},
		{`service "a" {` + "\n image = \"a\"\n health_check { deadline = " + s(`"1s"`) + " }\n}", "service.a.health_check.deadline"},
		{`service "a" {` + "\n image = \"a\"\n health_check { healthy = " + s(`2`) + " }\n}", "service.a.health_check.healthy"},
		{`service "a" {` + "\n image = \"a\"\n canary \"c\" { path = " + s(`"/c"`) + " }\n}", "service.a.canary.c.path"},
		{`service "a" {` + "\n image = \"a\"\n canary \"c\" {\n  path = \"/c\"\n  status = " + s(`[200]`) + "\n }\n}", "service.a.canary.c.status"},
		{`service "a" {` + "\n image = \"a\"\n canary \"c\" {\n  path = \"/c\"\n  body_contains = " + s(`"ok"`) + "\n }\n}", "service.a.canary.c.body_contains"},
		{`service "a" {` + "\n image = \"a\"\n sqlite \"db\" {\n  volume = " + s(`"data"`) + "\n  path = \"a.db\"\n }\n}", "service.a.sqlite.db.volume"},
		{`service "a" {` + "\n image = \"a\"\n sqlite \"db\" {\n  volume = \"data\"\n  path = " + s(`"a.db"`) + "\n }\n}", "service.a.sqlite.db.path"},
		{`service "a" {` + "\n image = \"a\"\n sqlite \"db\" {\n  volume = \"data\"\n  path = \"a.db\"\n  quick_check = " + s(`true`) + "\n }\n}", "service.a.sqlite.db.quick_check"},
		{`service "a" {` + "\n image = \"a\"\n backup {\n  volumes = " + s(`["data"]`) + "\n }\n}", "service.a.backup.volumes"},
		{`service "a" {` + "\n image = \"a\"\n backup {\n  volumes = [\"data\"]\n  store = " + s(`"local"`) + "\n }\n}", "service.a.backup.store"},
		{`service "a" {` + "\n image = \"a\"\n backup {\n  volumes = [\"data\"]\n  consistency = " + s(`"none"`) + "\n }\n}", "service.a.backup.consistency"},
		{`service "a" {` + "\n image = \"a\"\n backup {\n  volumes = [\"data\"]\n  keep = " + s(`3`) + "\n }\n}", "service.a.backup.keep"},
		{`service "a" {` + "\n image = \"a\"\n backup {\n  volumes = [\"data\"]\n  logs = " + s(`true`) + "\n }\n}", "service.a.backup.logs"},
		{`service "a" {` + "\n image = \"a\"\n backup {\n  volumes = [\"data\"]\n  volume \"data\" { consistency = " + s(`"none"`) + " }\n }\n}", "service.a.backup.volume.data.consistency"},
		{`service "a" {` + "\n image = \"a\"\n migration {\n  command = [\"m\"]\n  sqlite = " + s(`"db"`) + "\n }\n}", "service.a.migration.sqlite"},
		{`service "a" {` + "\n image = \"a\"\n migration {\n  command = [\"m\"]\n  deadline = " + s(`"1m"`) + "\n }\n}", "service.a.migration.deadline"},
		{`service "a" {` + "\n image = \"a\"\n migration {\n  command = [\"m\"]\n  dry_run = " + s(`true`) + "\n }\n}", "service.a.migration.dry_run"},
		{`service "a" {` + "\n image = \"a\"\n migration {\n  command = [\"m\"]\n  allow_destructive = " + s(`true`) + "\n }\n}", "service.a.migration.allow_destructive"},
		{`service "a" {` + "\n image = \"a\"\n migration {\n  command = [\"m\"]\n  hold_timeout = " + s(`"1s"`) + "\n }\n}", "service.a.migration.hold_timeout"},
		{`service "a" {` + "\n image = \"a\"\n smoke { requests = " + s(`10`) + " }\n}", "service.a.smoke.requests"},
		{`service "a" {` + "\n image = \"a\"\n smoke { duration = " + s(`"1s"`) + " }\n}", "service.a.smoke.duration"},
		{`service "a" {` + "\n image = \"a\"\n smoke { concurrency = " + s(`2`) + " }\n}", "service.a.smoke.concurrency"},
		{`service "a" {` + "\n image = \"a\"\n smoke { paths = " + s(`["/"]`) + " }\n}", "service.a.smoke.paths"},
		{`service "a" {` + "\n image = \"a\"\n smoke { max_error_rate = " + s(`0.1`) + " }\n}", "service.a.smoke.max_error_rate"},
		{`service "a" {` + "\n image = \"a\"\n smoke { p95 = " + s(`"1s"`) + " }\n}", "service.a.smoke.p95"},
		{`service "a" {` + "\n image = \"a\"\n rollout { batch = " + s(`1`) + " }\n}", "service.a.rollout.batch"},
		{`service "a" {` + "\n image = \"a\"\n rollout { wait = " + s(`"1s"`) + " }\n}", "service.a.rollout.wait"},
		{`service "a" {` + "\n image = \"a\"\n deploy { cutover = " + s(`"proxy"`) + " }\n}", "service.a.deploy.cutover"},
		{`service "a" {` + "\n image = \"a\"\n deploy { drain = " + s(`"1s"`) + " }\n}", "service.a.deploy.drain"},
		{`service "a" {` + "\n image = \"a\"\n deploy { stop_timeout = " + s(`"1s"`) + " }\n}", "service.a.deploy.stop_timeout"},
		{`service "a" {` + "\n image = \"a\"\n deploy { auto_rollback = " + s(`true`) + " }\n}", "service.a.deploy.auto_rollback"},
		{`service "a" {` + "\n image = \"a\"\n deploy { keep_releases = " + s(`3`) + " }\n}", "service.a.deploy.keep_releases"},
		{`service "a" {` + "\n image = \"a\"\n resources { memory = " + s(`"512m"`) + " }\n}", "service.a.resources.memory"},
		{`service "a" {` + "\n image = \"a\"\n resources { cpus = " + s(`1`) + " }\n}", "service.a.resources.cpus"},
		{`service "a" {` + "\n image = \"a\"\n log { max_size = " + s(`"10m"`) + " }\n}", "service.a.log.max_size"},
		{`service "a" {` + "\n image = \"a\"\n log { max_files = " + s(`3`) + " }\n}", "service.a.log.max_files"},
	}
	decl := "variable \"token\" {\n  type = string\n  sensitive = true\n}\nvariable \"m\" {\n  type = map(string)\n  sensitive = true\n}\n"
	for _, c := range refused {
		for _, unknown := range []bool{false, true} {
			src := decl + c.src + "\n"
			if c.path != "project" {
				src = "project = \"x\"\n" + src
			}
			_, diags, text := loadSrc(t, map[string]string{"main.hcl": src}, Options{Unknown: unknown, Env: []string{"DEPLOYER_VAR_token=" + testToken, "DEPLOYER_VAR_m={ K = \"" + testToken + "\" }"}})
			if !diags.HasErrors() || !strings.Contains(text, c.path+" is computed from a sensitive value") || !strings.Contains(text, "main.hcl:") {
				t.Errorf("%s (validate %v) is not refused, naming it:\n%s", c.path, unknown, text)
			}
			noPiece(t, c.path, text, testToken)
		}
	}
	// Where secrets belong: accepted, and shown by where they are.
	allowed := `project = "x"
registry "ghcr.io" {
  username = var.token
  password = var.token
}
backup_store "s3" {
  bucket      = "bucket"
  sse         = "aws:kms"
  kms_key_id  = var.token
  signing_key = "${var.token}${var.token}"
}
notify "slack" "ops" { url = "https://hooks.slack.com/${var.token}" }
service "a" {
  image   = "a"
  command = ["run", var.token]
  env     = merge({ PLAIN = "p" }, { TOKEN = var.token })
  build {
    args   = { A = upper(var.token), B = "b" }
    before = ["make", var.token]
  }
  volume "data" { target = "/data" }
  sqlite "db" {
    volume        = "data"
    path          = "a.db"
    seed_if_empty = ["seed", var.token]
  }
  backup { volumes = ["data"] }
  hook "before_cutover" { command = ["h", lower(var.token)] }
  migration { command = ["m", var.token] }
}
`
	res, diags, text := loadSrc(t, map[string]string{"main.hcl": decl + allowed, "Dockerfile": "FROM scratch\n"}, Options{Env: []string{"DEPLOYER_VAR_token=" + testToken, "DEPLOYER_VAR_m={}"}})
	if diags.HasErrors() {
		t.Fatalf("where secrets belong: %s", text)
	}
	p := res.Project
	for _, k := range []string{"registry.ghcr.io.username", "registry.ghcr.io.password", "backup_store.s3.kms_key_id", "backup_store.s3.signing_key", "notify.slack.ops.url",
		"service.a.command[1]", "service.a.env.TOKEN", "service.a.build.args.A", "service.a.build.before[1]", "service.a.sqlite.db.seed_if_empty[1]",
		"service.a.hook.before_cutover.command[1]", "service.a.migration.command[1]"} {
		if !p.Sensitive[k] {
			t.Errorf("%s is not sensitive", k)
		}
	}
	for _, k := range []string{"service.a.command[0]", "service.a.env.PLAIN", "service.a.build.args.B", "service.a.image"} {
		if p.Sensitive[k] {
			t.Errorf("%s is sensitive", k)
		}
	}
	t.Logf("%d attributes refused a secret (plan and validate), %d allowed", len(refused), 12)
}

// Finding 7: file() can read what CI writes into the directory (the TLS key the README has it
// write there). Credential files are sensitive, by content (a private key, whatever its name)
// or by name; a file named as an engine's TLS material is refused, and loading shows nothing
// else (what was evaluated since may hold its content).
func TestFileOfCredentials(t *testing.T) {
	key := "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBkeyMATERIALkeyMATERIALkeyMATERIAL\n-----END EC PRIVATE KEY-----\n"
	files := map[string]string{"certs/key.pem": key, "certs/ca.pem": "CA-CERT-CONTENT-1234\n", "notes.txt": "plain notes 1234\n", "id_ed25519": "ssh-key-content-5678\n", ".env": "DB_PASSWORD=hunter2-secret\n", "renamed.txt": key}
	src := `project = "x"
service "web" {
  image = "nginx:latest"
  env = {
    K     = replace(file("certs/key.pem"), "\n", " ")
    CA    = file("certs/ca.pem")
    NOTE  = file("notes.txt")
    SSH   = file("id_ed25519")
    DOT   = file(".env")
    RENAM = file("renamed.txt")
  }
}
`
	files["main.hcl"] = src
	res, diags, text := loadSrc(t, files, Options{})
	if diags.HasErrors() {
		t.Fatal(text)
	}
	p := res.Project
	for _, k := range []string{"K", "CA", "SSH", "DOT", "RENAM"} {
		if !p.IsSensitive("web", "env."+k) {
			t.Errorf("env.%s (a credential file) is not sensitive", k)
		}
	}
	if p.IsSensitive("web", "env.NOTE") {
		t.Error("a plain file is sensitive")
	}
	if !contains(p.Secrets, key) {
		t.Error("the key's content is not among the secrets masked")
	}
	// Read through a link with an innocent name: its content says what it is.
	files["main.hcl"] = "project = \"x\"\nservice \"web\" {\n  image = \"nginx:latest\"\n  env = { K = file(\"innocent.txt\") }\n}\n"
	dir := t.TempDir()
	for n, c := range files {
		os.MkdirAll(filepath.Dir(filepath.Join(dir, n)), 0o755)
		os.WriteFile(filepath.Join(dir, n), []byte(c), 0o644)
	}
	os.Symlink("certs/key.pem", filepath.Join(dir, "innocent.txt"))
	res, diags = Load(Options{Dir: dir})
	if diags.HasErrors() || !res.Project.IsSensitive("web", "env.K") {
		t.Errorf("a key read through a link: %s", res.DiagnosticsText(diags))
	}
	// The file the configuration names as TLS material, read with file() (through a link, or
	// into an error that would quote it): refused, and that error alone.
	for _, expr := range []string{`file("certs/key.pem")`, `file("innocent.txt")`, `tonumber(file("certs/ca.pem"))`, `file("./certs/../certs/ca.pem")`} {
		tls := "engine \"e\" {\n  host = \"tcp://10.0.0.1:2376\"\n  tls {\n    ca   = \"certs/ca.pem\"\n    cert = \"certs/cert.pem\"\n    key  = \"certs/key.pem\"\n  }\n}\n"
		os.WriteFile(filepath.Join(dir, "certs/cert.pem"), []byte("CERT"), 0o644)
		os.WriteFile(filepath.Join(dir, "main.hcl"), []byte("project = \"x\"\n"+tls+"locals { k = "+expr+" }\nservice \"web\" {\n  image = \"nginx:latest\"\n  port {\n    container = local.k\n    host = 1\n  }\n}\n"), 0o644)
		res, diags := Load(Options{Dir: dir})
		text := res.DiagnosticsText(diags)
		if len(diags) != 1 || !strings.Contains(text, "names as engine \"e\" tls.") || !strings.Contains(text, "main.hcl:10:") {
			t.Errorf("%s: want the one error at the call, got:\n%s", expr, text)
		}
		noPiece(t, expr, text, "BEGIN EC PRIVATE", "keyMATERIAL", "CA-CERT-CONTENT")
	}
	// A TLS path computed (known only once the engine block is read): file() read it, so that
	// error alone.
	tls := "engine \"e\" {\n  host = \"tcp://10.0.0.1:2376\"\n  tls { key = lower(\"CERTS/KEY.PEM\") }\n}\n"
	os.WriteFile(filepath.Join(dir, "main.hcl"), []byte("project = \"x\"\n"+tls+"service \"web\" {\n  image = \"nginx:latest\"\n  env = { K = file(\"certs/key.pem\") }\n  port {\n    container = 0\n    host = 1\n  }\n}\n"), 0o644)
	res, diags = Load(Options{Dir: dir})
	if text := res.DiagnosticsText(diags); len(diags) != 1 || diags[0].Summary != "file() reads TLS material" || !strings.Contains(text, "main.hcl:8:") {
		t.Errorf("a computed TLS path read with file(): %s", text)
	}
}

// Finding 8: a JSON object key computed from a secret made HCL panic. It is an error (that
// depends on a secret: the one error); and any panic while loading is an error too, not a crash.
func TestNoPanicWhileLoading(t *testing.T) {
	env := []string{"HOME=/home/q7zx-wv9k", "AWS_SECRET_ACCESS_KEY=" + awsKey}
	for _, src := range []string{
		`{"project":"x","locals":{"o":{"${env(\"HOME\")}":1}},"service":{"web":{"image":"nginx:latest"}}}`,
		`{"project":"x","locals":{"o":{"a":{"${env(\"AWS_SECRET_ACCESS_KEY\")}":[1]}}},"service":{"web":{"image":"nginx:latest"}}}`,
		`{"project":"x","variable":{"t":{"sensitive":true,"default":"abcdefgh"}},"locals":{"o":{"${var.t}":1}}}`,
		`{"project":"x","service":{"web":{"image":"nginx:latest","env":{"${env(\"HOME\")}":"x"}}}}`,
	} {
		for _, unknown := range []bool{false, true} {
			_, diags, text := loadSrc(t, map[string]string{"main.hcl.json": src}, Options{Env: env, Unknown: unknown})
			noPiece(t, "a JSON key from a secret", text, "q7zx-wv9k", awsKey)
			if !unknown && !diags.HasErrors() {
				t.Errorf("%s: no error", src)
			}
		}
	}
	// Any panic: a function made to panic stands for a defect anywhere in loading.
	prev := prechecks["join"]
	prechecks["join"] = func(string, []cty.Value) error { panic("boom: " + awsKey) }
	defer func() { prechecks["join"] = prev }()
	res, diags, text := loadSrc(t, map[string]string{"main.hcl": "project = \"x\"\nlocals { a = join(\",\", [\"a\"]) }\n"}, Options{})
	if res == nil || !diags.HasErrors() || !strings.Contains(text, "join() failed unexpectedly") || !strings.Contains(text, "main.hcl:2:") || strings.Contains(text, "goroutine") {
		t.Errorf("a panic in a function: %s", text)
	}
	noPiece(t, "a panic", text, awsKey)
	// A panic anywhere else in loading.
	prechecks["join"] = prev
	afterParse = func() { panic("boom: " + awsKey) }
	defer func() { afterParse = func() {} }()
	res, diags, text = loadSrc(t, map[string]string{"main.hcl": "project = \"x\"\n"}, Options{})
	if res == nil || len(diags) != 1 || !strings.Contains(text, "Internal error while loading the configuration") || strings.Contains(text, "goroutine") {
		t.Errorf("a panic while loading: %s", text)
	}
	noPiece(t, "a panic", text, awsKey)
}

// Finding 9: JSON the analysis could not read (a number Go's decoder cannot hold) left an env()
// rebuilt through an object index unmarked. Numbers are read as text (UseNumber), and what
// cannot be analysed is sensitive (fail closed): the value is refused where it stands, the same
// whatever the secret.
func TestJSONAnalysisFailsClosed(t *testing.T) {
	alphabet := `{"A"="A","K"="K","I"="I","q"="q","8"="8","Z"="Z","x"="x"}`
	var parts []string
	for i := 0; i < 6; i++ {
		parts = append(parts, fmt.Sprintf(`${%s[substr(env(\"AWS_SECRET_ACCESS_KEY\"),%d,1)]}`, strings.ReplaceAll(alphabet, `"`, `\"`), i))
	}
	for _, tail := range []string{`, 1e400`, `, 1e400, -1e-400, 123456789012345678901234567890`, ``} {
		src := `{"project":"rv-a10","service":{"web":{"image":"nginx:latest","engines":["` + strings.Join(parts, "") + `"` + tail + `]}}}`
		var first string
		// The first two evaluate, the third fails (a character not in the object): the same.
		for _, secret := range []string{awsKey, "ZZZZxxxx-1234", "%%%%%%%%-1234"} {
			_, diags, text := loadSrc(t, map[string]string{"main.hcl.json": src}, Options{Env: []string{"AWS_SECRET_ACCESS_KEY=" + secret}})
			if !diags.HasErrors() {
				t.Fatalf("loaded: %s", src)
			}
			noPiece(t, "engines from env() in JSON", text, secret[:6])
			if first == "" {
				first = text
			} else if text != first {
				t.Errorf("the output depends on the secret:\n%s\n---\n%s", first, text)
			}
		}
		if !strings.Contains(first, "service.web.engines is computed from a sensitive value") {
			t.Errorf("tail %q: %s", tail, first)
		}
	}
	// What cannot be analysed is sensitive: a JSON expression whose source is not JSON.
	l := &loader{parser: hclparse.NewParser()}
	f, d := l.parser.ParseJSON([]byte(`{"a": "x"}`), "m.hcl.json")
	if d.HasErrors() {
		t.Fatal(d)
	}
	attrs, _ := f.Body.JustAttributes()
	f.Bytes = []byte(`{"a": not json at all}`)
	if !l.sensitiveExpr(attrs["a"].Expr, nil) || !l.dependsOnSecret(attrs["a"].Expr, nil) {
		t.Error("an expression that cannot be analysed is taken as not sensitive")
	}
}

// Findings 10 and 11: the nesting limit holds whatever else is wrong in a file (a lexical
// error), in a value given on the command line or in the environment, and in fmt.
func TestNestingWithLexicalErrors(t *testing.T) {
	n := 300000
	deep := "x = " + strings.Repeat("[", n) + strings.Repeat("]", n) + "\n\x01\n"
	cases := map[string]func() (string, bool){
		"a file": func() (string, bool) {
			_, diags, text := loadSrc(t, map[string]string{"main.hcl": deep}, Options{})
			return text, diags.HasErrors()
		},
		"a JSON file": func() (string, bool) {
			_, diags, text := loadSrc(t, map[string]string{"main.hcl.json": "{\"x\": 01, \"y\": " + strings.Repeat("[", n) + strings.Repeat("]", n) + "}"}, Options{})
			return text, diags.HasErrors()
		},
		"a -var value": func() (string, bool) {
			_, diags, text := loadSrc(t, map[string]string{"main.hcl": "project = \"x\"\nvariable \"v\" { type = list(any) }\n"}, Options{Vars: []VarArg{{Name: "v", Value: strings.Repeat("[", n) + "\x01"}}})
			return text, diags.HasErrors()
		},
		"an environment value": func() (string, bool) {
			_, diags, text := loadSrc(t, map[string]string{"main.hcl": "project = \"x\"\nvariable \"v\" { type = list(any) }\n"}, Options{Env: []string{"DEPLOYER_VAR_v=" + strings.Repeat("[", n) + "\x01"}})
			return text, diags.HasErrors()
		},
		"fmt": func() (string, bool) {
			_, diags := Format([]byte(deep), "main.hcl")
			return NewSourceResult(map[string][]byte{"main.hcl": []byte(deep)}).DiagnosticsText(diags), diags.HasErrors()
		},
		"fmt without a lexical error": func() (string, bool) {
			_, diags := Format([]byte(strings.TrimSuffix(deep, "\x01\n")), "main.hcl")
			return NewSourceResult(nil).DiagnosticsText(diags), diags.HasErrors()
		},
	}
	for name, run := range cases {
		start := time.Now()
		text, errs := run()
		if !errs || !strings.Contains(text, "nested too deep") && !strings.Contains(text, "not a valid") {
			t.Errorf("%s: %s", name, text)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("%s took %s", name, d)
		}
	}
}

// Finding 12: a file's name is shown escaped when it holds what a terminal or a CI log would act
// on: an escape sequence, a new line that starts a workflow command, invalid UTF-8.
func TestFileNamesEscaped(t *testing.T) {
	name := "a\x1b[31mRED\n::error::injected\xff.hcl"
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, name), []byte("project = \"x\"\nservice \"web\" { image = 1 + }\n"), 0o644); err != nil {
		t.Skipf("this file system refuses the name: %v", err)
	}
	res, diags := Load(Options{Dir: dir})
	text := res.DiagnosticsText(diags)
	if !diags.HasErrors() || strings.ContainsAny(text, "\x1b\xff") || strings.Contains(text, "\n::error::") || !strings.Contains(text, `a\x1b[31mRED\n::error::injected\xff.hcl:2:`) {
		t.Errorf("the name is not escaped:\n%q", text)
	}
	if DisplayName("plain/main.hcl") != "plain/main.hcl" || DisplayName(`a\x1b.hcl`) == DisplayName("a\x1b.hcl") {
		t.Error("display names are not one per name")
	}
}

// Finding 13: what a link leads to outside the directory, and whether it exists, is never said:
// two links out, to a file that exists and to one that does not, are refused alike.
func TestLinksOutSaySame(t *testing.T) {
	root := t.TempDir()
	cfg := filepath.Join(root, "cfg")
	os.MkdirAll(filepath.Join(cfg, "sub"), 0o755)
	os.WriteFile(filepath.Join(root, "exists.txt"), []byte("x"), 0o644)
	pairs := [][2]string{{"/etc/passwd", "/etc/no-such-file"}, {"../exists.txt", "../missing.txt"}, {"sub/../../exists.txt", "sub/../../missing.txt"}, {"/etc", "/no-such-dir"}}
	for i, pair := range pairs {
		var texts []string
		for j, target := range pair {
			link := fmt.Sprintf("l%d", i)
			os.Remove(filepath.Join(cfg, link))
			os.Symlink(target, filepath.Join(cfg, link))
			path := link
			if strings.HasPrefix(target, "/etc") || target == "/no-such-dir" {
				path = link + "/passwd"
			}
			os.WriteFile(filepath.Join(cfg, "main.hcl"), []byte(fmt.Sprintf("project = \"x\"\nlocals { a = file(%q) }\n", path)), 0o644)
			res, diags := Load(Options{Dir: cfg})
			text := strings.ReplaceAll(res.DiagnosticsText(diags), target, "TARGET")
			if !diags.HasErrors() || strings.Contains(text, "cannot be read") {
				t.Errorf("%s: %s", pair[j], text)
			}
			texts = append(texts, text)
		}
		if texts[0] != texts[1] {
			t.Errorf("a link out to what exists and to what does not are told apart:\n%s\n%s", texts[0], texts[1])
		}
	}
}

// The semantic checks of values where secrets go: a check of a secret's value computed (a
// signing key too short) is the one error; of the variable itself, it names the attribute; the
// checks of a map's keys or a command's length, which no secret decides, are shown as ever.
func TestChecksOfSecretValues(t *testing.T) {
	decl := "project = \"x\"\nvariable \"key\" {\n  type = string\n  sensitive = true\n}\n"
	env := []string{"DEPLOYER_VAR_key=qz7-kv9-wx3"}
	cases := []struct{ src, want string }{
		{"backup_store \"s3\" {\n  bucket = \"bucket\"\n  signing_key = var.key\n}\n", "Signing key too short"},
		{"backup_store \"s3\" {\n  bucket = \"bucket\"\n  signing_key = upper(var.key)\n}\n", "A value computed from a secret is invalid"},
		{"backup_store \"s3\" {\n  bucket = \"bucket\"\n  kms_key_id = \"${var.key}-x\"\n}\n", "A value computed from a secret is invalid"},
		{"service \"a\" {\n  image = \"a\"\n  env = { \"1BAD\" = var.key }\n}\n", "Invalid environment variable name"},
		{"service \"a\" {\n  image = \"a\"\n  hook \"before_cutover\" { command = [] }\n  env = { A = var.key }\n}\n", "Empty hook command"},
	}
	for _, c := range cases {
		_, diags, text := loadSrc(t, map[string]string{"main.hcl": decl + c.src}, Options{Env: env})
		if !diags.HasErrors() || !strings.Contains(text, c.want) {
			t.Errorf("want %q:\n%s", c.want, text)
		}
		noPiece(t, c.want, text, "qz7-kv9-wx3")
	}
}

// The watch of time and memory names the expression it stopped (Evaluating), unless that one
// depends on a secret: which of many expressions took too long would tell something of it.
func TestWatchNamesNoSecretExpression(t *testing.T) {
	var seen []*hcl.Range
	prev := prechecks["join"]
	prechecks["join"] = func(string, []cty.Value) error { seen = append(seen, Evaluating()); return nil }
	defer func() { prechecks["join"] = prev }()
	src := `project = "x"
variable "token" {
  type      = string
  sensitive = true
}
locals {
  a = join(",", ["plain"])
  b = join(",", [env("AWS_SECRET_ACCESS_KEY")])
  c = join(",", [var.token])
  d = join(",", [file("key.pem")])
  e = join(",", [substr(env("AWS_SECRET_ACCESS_KEY"), 0, 1) == "A" ? "x" : "y"])
}
`
	_, diags, text := loadSrc(t, map[string]string{"main.hcl": src, "key.pem": "k"}, Options{Env: []string{"AWS_SECRET_ACCESS_KEY=" + awsKey, "DEPLOYER_VAR_token=" + testToken}})
	if diags.HasErrors() || len(seen) != 5 {
		t.Fatalf("%d calls seen: %s", len(seen), text)
	}
	if seen[0] == nil || seen[0].Start.Line != 7 {
		t.Errorf("a plain expression is not named: %v", seen[0])
	}
	for i, r := range seen[1:] {
		if r != nil {
			t.Errorf("local %c, which depends on a secret, is named: %v", 'b'+i, r)
		}
	}
}
