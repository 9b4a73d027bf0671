package hclspec

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// unknownConfig uses required variables (no default) everywhere a check depends on a value:
// the image, a container name, ports, durations, sizes, lists, a store's endpoint and signing
// key, an engine's host beside its tls block, a sensitive token, a validation rule.
const unknownConfig = `
project = "shop"

variable "tag" { type = string }
variable "token" {
  type      = string
  sensitive = true
}
variable "signing_key" {
  type      = string
  sensitive = true
}
variable "name" { type = string }
variable "port" { type = number }
variable "protocol" { type = string }
variable "drain" { type = string }
variable "size" { type = string }
variable "vols" { type = list(string) }
variable "endpoint" { type = string }
variable "engine_host" { type = string }
variable "kind" { type = string }
variable "dir" { type = string }
variable "cpus" { type = number }
variable "checked" {
  type = string
  validation {
    condition     = length(var.checked) > 3
    error_message = "checked needs 4 characters."
  }
}
variable "anything" {}

locals {
  image = "shop:${var.tag}"
  both  = "${var.tag}-${var.token}"
}

engine "e" {
  host = var.engine_host
  tls { ca = "ca.pem" }
}

backup_store "s3" {
  bucket      = "shop-backups"
  endpoint    = var.endpoint
  signing_key = var.signing_key
  sse         = var.kind
  kms_key_id  = "key-1"
}

backup_store "other" {
  kind      = var.kind
  directory = var.dir
}

backup_store "local" { directory = var.dir }

service "web" {
  image          = local.image
  container_name = var.name
  env = {
    TOKEN = var.token
    BOTH  = local.both
    PLAIN = "plain"
    ANY   = var.anything
  }
  port {
    container = var.port
    host      = 8080
    protocol  = var.protocol
  }
  port {
    container = var.port # the same container port: known to be a duplicate once it is known
    host      = 8081
  }
  volume "data" { target = "/data" }
  health_check { path = "/" }
  sqlite "db" {
    volume = "data"
    path   = "db.sqlite"
  }
  migration { command = ["./migrate"] }
  backup {
    store   = backup_store.s3
    volumes = var.vols
    volume "data" { consistency = "none" }
  }
  deploy {
    drain   = var.drain
    cutover = var.protocol
  }
  resources {
    memory = var.size
    cpus   = var.cpus
  }
  log {
    max_files = 3
    max_size  = var.size
  }
  smoke { duration = var.drain }
  command = [var.checked, "--tag", var.tag]
}

service "api" {
  image          = "api:1"
  container_name = "shop-web" # the web service's default name: checked once that is known
  engines        = [engine.e]
}

notify "slack" "ops" { url = var.token }
`

// validate needs no variable values: a required variable without one is an unknown value of
// its type, and every check that needs a value is skipped for it, with no false error. Plan
// and apply still require the values.
func TestValidateWithoutValues(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "main.hcl"), []byte(unknownConfig), 0o644)
	res, diags := Load(Options{Dir: dir, Unknown: true})
	if diags.HasErrors() {
		t.Fatalf("validate without values: %s", res.DiagnosticsText(diags))
	}
	p := res.Project
	if len(res.Unknown) != 16 || !slices.Contains(res.Unknown, "var.token") {
		t.Errorf("unknown variables %v", res.Unknown)
	}
	for _, path := range []string{"service.web.image", "service.web.container_name", "service.web.deploy.drain", "backup_store.s3.endpoint", "engine.e.host", "service.web.env.TOKEN"} {
		if p.Known(path) {
			t.Errorf("%s is known", path)
		}
	}
	if !p.Sensitive["service.web.env.TOKEN"] || !p.Sensitive["notify.slack.ops.url"] || !p.Sensitive["backup_store.s3.signing_key"] {
		t.Errorf("sensitive, unknown: %v", p.Sensitive)
	}
	if s := p.Service("web"); s.Env["PLAIN"] != "plain" || !p.Known("service.web.env.PLAIN") || !p.Known("service.web.env") {
		t.Errorf("env %v", s.Env)
	}

	// Plan and apply: each required variable is named.
	res, diags = Load(Options{Dir: dir})
	text := res.DiagnosticsText(diags)
	if n := strings.Count(text, "No value for required variable"); n != 16 {
		t.Errorf("%d variables without a value named, want 16:\n%s", n, text)
	}

	// With values, the same checks run on them.
	vars := []VarArg{{Name: "tag", Value: "v1"}, {Name: "token", Value: "tok-12345678"}, {Name: "signing_key", Value: "0123456789abcdef0123"},
		{Name: "name", Value: "shop-web-live"}, {Name: "port", Value: "80"}, {Name: "protocol", Value: "http"}, {Name: "drain", Value: "5s"},
		{Name: "size", Value: "64m"}, {Name: "vols", Value: `["data"]`}, {Name: "endpoint", Value: "http://127.0.0.1:9000"},
		{Name: "engine_host", Value: "tcp://10.0.0.9:2376"}, {Name: "kind", Value: "aws:kms"}, {Name: "dir", Value: "b"}, {Name: "cpus", Value: "1"},
		{Name: "checked", Value: "serve"}, {Name: "anything", Value: "any-value"}}
	res, diags = Load(Options{Dir: dir, Vars: vars})
	text = res.DiagnosticsText(diags)
	if !strings.Contains(text, "Container port 80 is published twice") || strings.Count(text, "Error:") != 1 {
		t.Errorf("with values, want the duplicated container port refused, got:\n%s", text)
	}
	// The kind variable feeds both a store's sse and another's kind: as a kind it is wrong;
	// the protocol variable is a cutover too, which "http" is not.
	vars[4] = VarArg{Name: "port", Value: "80"}
	src := strings.Replace(unknownConfig, "container = var.port # the same", "container = 81 # the same", 1)
	os.WriteFile(filepath.Join(dir, "main.hcl"), []byte(src), 0o644)
	res, diags = Load(Options{Dir: dir, Vars: vars})
	text = res.DiagnosticsText(diags)
	if !strings.Contains(text, `backup_store "other": kind "aws:kms"`) || !strings.Contains(text, `cutover "http"`) || strings.Count(text, "Error:") != 2 {
		t.Errorf("with values, want the store's kind and the cutover refused, got:\n%s", text)
	}
}

// The checks that need no value still run without one: references, types, known values, and
// validation rules of variables that have a value.
func TestValidateWithoutValuesStillChecks(t *testing.T) {
	cases := []struct{ name, src, want string }{
		{"undeclared reference", `service "a" { image = "a:${var.tga}" }`, `No input variable named "tga" is declared. Did you mean "tag"?`},
		{"undeclared local", `service "a" { image = local.nope }`, "Reference to undeclared local value"},
		{"a list where a number goes", `service "a" {
  image = var.tag
  port {
    container = [var.port]
    host      = 80
  }
}`, "container must be a number"},
		{"a function given the wrong type", `service "a" { image = upper(var.list) }`, "Invalid function argument"},
		{"an unknown list in arithmetic", `locals { x = var.list * 2 }`, "Unsuitable value for left operand"},
		{"a known bad value beside an unknown one", `service "a" {
  image = var.tag
  deploy {
    drain   = "forever"
    cutover = var.tag
  }
}`, "Invalid duration"},
		{"a known duplicate port", `service "a" {
  image = var.tag
  port {
    container = 80
    host      = 8080
  }
}
service "b" {
  image = var.tag
  port {
    container = 80
    host      = 8080
  }
}`, "Port used twice"},
		{"a validation rule of a variable with a value", `variable "with_default" {
  default = "ab"
  validation {
    condition     = length(var.with_default) > 3
    error_message = "needs 4 characters."
  }
}`, "needs 4 characters."},
		{"an unknown attribute", `service "a" {
  image = var.tag
  imagee = "x"
}`, "Unsupported argument"},
		{"a sensitive address", `docker { host = var.token }`, "Sensitive value in an address"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			src := "project = \"x\"\nvariable \"tag\" { type = string }\nvariable \"port\" { type = number }\nvariable \"list\" { type = list(string) }\nvariable \"token\" {\n  type = string\n  sensitive = true\n}\n" + c.src + "\n"
			os.WriteFile(filepath.Join(dir, "main.hcl"), []byte(src), 0o644)
			res, diags := Load(Options{Dir: dir, Unknown: true})
			if text := res.DiagnosticsText(diags); !diags.HasErrors() || !strings.Contains(text, c.want) {
				t.Errorf("want %q, got:\n%s", c.want, text)
			}
		})
	}
}
