package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The reproductions of the adversarial review of issue 22 item 2 that need the command line
// (reports/config-review.md); the rest are hclspec's tests and testdata/script/untrusted_*.

// Findings 2 and 3 at the command line: 100 checks, each failing by one bit of a secret (the
// review decoded the secret from which ones failed, and where), give the same output whatever
// the secret is, in plan; validate reads no secret and finds nothing to say. The error count
// line is the same too.
func TestSecretChecksGiveOneOutput(t *testing.T) {
	classes := []string{"13579ACEGIKMOQSUWYacegikmoqsuwy", "2367BCFGJKNORSVWZbcfgjknorsvwz", "4567DEFGLMNOTUVWdefglmnotuvw", "89HIJKLMNOXYZhijklmnoxyz"}
	var rules, locals strings.Builder
	for i := 0; i < 25; i++ {
		for b, class := range classes {
			// a2: validation rules (env() in a rule is refused outright: here the variable).
			fmt.Fprintf(&rules, "  validation {\n    condition     = length(regexall(\"^.{%d}[%s]\", var.slack_webhook)) > 0\n    error_message = \"p%d b%d\"\n  }\n", i, class, i, b)
			// a3: locals that fail on a regex without a match.
			fmt.Fprintf(&locals, "  p%d_b%d = regex(\"^.{%d}[%s]\", env(\"AWS_SECRET_ACCESS_KEY\"))\n", i, b, i, class)
		}
	}
	configs := map[string]string{
		"validation rules": "project = \"x\"\nvariable \"slack_webhook\" {\n" + rules.String() + "}\nservice \"web\" { image = \"nginx:latest\" }\n",
		"locals":           "project = \"x\"\nlocals {\n" + locals.String() + "}\nservice \"web\" { image = \"nginx:latest\" }\n",
	}
	for name, src := range configs {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			os.WriteFile(filepath.Join(dir, "main.hcl"), []byte(src), 0o644)
			var first string
			for _, secret := range []string{"AKIAq8ZxW77889900wQzRv", "wJalrXUtnFEMIK7MDENGbPx", "9f8e7d6c5b4a3928170", "zzzzzzzzzzzzzzzzzzzzzz"} {
				t.Setenv("DEPLOYER_VAR_slack_webhook", secret)
				t.Setenv("AWS_SECRET_ACCESS_KEY", secret)
				var out, errOut bytes.Buffer
				if code := run([]string{"validate", dir}, nil, &out, &errOut); code != 0 {
					t.Fatalf("validate (no secrets read) exits %d: %s", code, errOut.String())
				}
				out.Reset()
				errOut.Reset()
				if code := run([]string{"plan", dir}, nil, &out, &errOut); code != 1 {
					t.Fatalf("plan exits %d: %s%s", code, out.String(), errOut.String())
				}
				// The temporary directory's name is random digits: a secret's digits may be in it.
				all := strings.ReplaceAll(out.String()+errOut.String(), dir, "DIR")
				for i := 0; i+4 <= len(secret); i++ {
					if strings.Contains(all, secret[i:i+4]) {
						t.Fatalf("plan shows %q:\n%s", secret[i:i+4], all)
					}
				}
				// One error: for the rules, at the variable (which rule is not said); for the
				// locals, nowhere.
				if !strings.Contains(all, "The configuration has 1 error") || name == "locals" && strings.Contains(all, "-->") {
					t.Errorf("want one error:\n%s", all)
				}
				if first == "" {
					first = all
				} else if all != first {
					t.Errorf("the output depends on the secret:\n%s\n---\n%s", first, all)
				}
			}
		})
	}
}

// Finding 6: an image computed from a secret would be sent to the engine (the review's engine
// logged GET /images/nginx:https:__ho/json). It is refused before the engine is contacted.
func TestSensitiveImageNeverSent(t *testing.T) {
	port, accepted := countingListener(t)
	t.Setenv("DEPLOYER_VAR_slack_webhook", "https://q7zx.hq/T0q/B9k/ZXWVqzxwv7788")
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "main.hcl"), []byte(fmt.Sprintf(`project = "x"
variable "slack_webhook" {
  type      = string
  sensitive = true
}
docker { host = "tcp://127.0.0.1:%d" }
service "web" {
  image = "nginx:${substr(replace(var.slack_webhook, "/", "_"), 0, 10)}"
}
`, port)), 0o644)
	for _, cmd := range []string{"validate", "plan"} {
		var out, errOut bytes.Buffer
		if code := run([]string{cmd, dir}, nil, &out, &errOut); code != 1 {
			t.Errorf("%s exits %d", cmd, code)
		}
		if all := out.String() + errOut.String(); !strings.Contains(all, "service.web.image is computed from a sensitive value") || strings.Contains(all, "q7zx") || strings.Contains(all, "https:__") {
			t.Errorf("%s:\n%s", cmd, all)
		}
	}
	if n := accepted.Load(); n != 0 {
		t.Errorf("the engine was contacted %d times", n)
	}
}

// Finding 12: a file's name goes into every output escaped: in validate's and fmt's errors and
// in fmt's list of files, no escape sequence, no line that starts a workflow command, no
// invalid UTF-8.
func TestFileNamesEscapedInOutput(t *testing.T) {
	name := "a\x1b[31mRED\n::error::injected\xff.hcl"
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, name), []byte("project = \"x\"\nservice \"web\" { image = 1 + }\n"), 0o644); err != nil {
		t.Skipf("this file system refuses the name: %v", err)
	}
	fmtDir := t.TempDir()
	os.WriteFile(filepath.Join(fmtDir, name), []byte("project=\"x\"\n"), 0o644)
	for _, args := range [][]string{{"validate", dir}, {"fmt", "-check", dir}, {"fmt", "-check", fmtDir}, {"fmt", "-check", filepath.Join(fmtDir, name)}} {
		var out, errOut bytes.Buffer
		run(args, nil, &out, &errOut)
		all := out.String() + errOut.String()
		if strings.ContainsAny(all, "\x1b\xff") || strings.Contains(all, "\n::") || strings.HasPrefix(all, "::") {
			t.Errorf("%v shows the name as it is:\n%q", args, all)
		}
		if !strings.Contains(all, `a\x1b[31mRED\n::error::injected\xff.hcl`) {
			t.Errorf("%v does not name the file, escaped:\n%q", args, all)
		}
	}
}

// Finding 11: fmt is bounded as validate is: a file that takes more memory to format than the
// watch allows ends in an error (the limit is lowered here, so that the test stays small; the
// real one is 1 GiB, which a 3.8 MB file reaches).
func TestFmtIsWatched(t *testing.T) {
	dir := t.TempDir()
	var out, errOut bytes.Buffer
	// Nested deeper than the limit, with a lexical error or not: refused before it is parsed.
	for _, tail := range []string{"", "\x01\n"} {
		os.WriteFile(filepath.Join(dir, "main.hcl"), []byte("x = "+strings.Repeat("[", 100000)+strings.Repeat("]", 100000)+"\n"+tail), 0o644)
		out.Reset()
		errOut.Reset()
		if code := run([]string{"fmt", "-check", dir}, nil, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "Expression nested too deep") {
			t.Errorf("fmt of a deep file exits %d:\n%s", code, errOut.String())
		}
	}
	// Last: the formatting the watch stops goes on in this process until it exits.
	prev := evalMemoryLimit
	evalMemoryLimit = 48 << 20
	defer func() { evalMemoryLimit = prev }()
	os.WriteFile(filepath.Join(dir, "main.hcl"), []byte("x = ["+strings.Repeat("1,", 300000)+"1]\n"), 0o644)
	out.Reset()
	errOut.Reset()
	code := run([]string{"fmt", "-check", dir}, nil, &out, &errOut)
	if code != 1 || !strings.Contains(errOut.String(), "File too large to format") || !strings.Contains(errOut.String(), "more than 48 MiB of memory") {
		t.Errorf("fmt exits %d:\n%s%s", code, out.String(), errOut.String())
	}
}

// The evaluation's time bound counts the CPU time it takes, so a busy machine does not turn a
// configuration that meets the memory bound into one that meets the time bound; one that blocks
// without computing (reading a pipe) meets the wall clock's.
func TestWatchBoundsCPUAndWallTime(t *testing.T) {
	prevCPU, prevWall := evalTimeLimit, evalWallLimit
	defer func() { evalTimeLimit, evalWallLimit = prevCPU, prevWall }()
	evalTimeLimit, evalWallLimit = 300*time.Millisecond, time.Minute
	stop := make(chan struct{})
	d := watch("Evaluating the configuration", func() {
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			default:
			}
		}
	})
	close(stop)
	if d == nil || d.Detail != "Evaluating the configuration took more than 300ms of CPU time:" {
		t.Errorf("a spinning evaluation: %+v", d)
	}
	evalTimeLimit, evalWallLimit = time.Minute, 300*time.Millisecond
	blocked := make(chan struct{})
	defer close(blocked)
	d = watch("Evaluating the configuration", func() { <-blocked })
	if d == nil || d.Detail != "Evaluating the configuration took more than 300ms:" {
		t.Errorf("a blocked evaluation: %+v", d)
	}
}
