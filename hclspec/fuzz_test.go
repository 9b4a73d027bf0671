package hclspec

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// FuzzLoad feeds arbitrary bytes to the loader as a native-syntax and as a JSON file, with
// secrets in the environment. Whatever the input, it must return diagnostics or a project,
// never panic or hang, and never show a secret the input does not hold itself.
func FuzzLoad(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*/*.hcl*")
	seeds = append(seeds, "../examples/quickstart/deployer.hcl", "../examples/manual-generator/deployer.hcl")
	for _, s := range seeds {
		if b, err := os.ReadFile(s); err == nil {
			f.Add(b, false)
		}
	}
	f.Add([]byte(`{"project": "x", "service": {"a": {"image": "${var.x}"}}}`), true)
	// The shapes an untrusted configuration may try: deep nesting, devices, huge values.
	for _, src := range []string{
		"project = \"x\"\nlocals { a = " + strings.Repeat("(", 1200) + "1" + strings.Repeat(")", 1200) + " }\n",
		"project = \"x\"\nlocals { a = " + strings.Repeat("1+", 1200) + "1 }\n",
		"project = \"x\"\nlocals { a = \"" + strings.Repeat("${\"", 600) + "x" + strings.Repeat("\"}", 600) + "\" }\n",
		`project = "x"` + "\n" + `locals { a = file("/dev/zero") }`,
		`project = "x"` + "\n" + `locals { a = setproduct(range(1000), range(1000), range(100)) }`,
		`project = "x"` + "\n" + `locals { a = format("%99999999d", 1) }`,
		`project = "x"` + "\n" + `locals { a = jsondecode("[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]") }`,
	} {
		f.Add([]byte(src), false)
	}
	f.Add([]byte(`{"project": "x", "locals": {"a": `+strings.Repeat("[", 1200)+strings.Repeat("]", 1200)+`}}`), true)
	// The review's shapes: a secret rebuilt through HCL's errors, a JSON key from a secret, a
	// number JSON's decoder cannot hold, a lexical error after deep nesting.
	f.Add([]byte(`project = "x"`+"\n"+`locals { d = { for i in [1, 2] : join(" ", split("", env("AWS_SECRET_ACCESS_KEY"))) => i } }`), false)
	f.Add([]byte(`{"project":"x","locals":{"o":{"${env(\"AWS_SECRET_ACCESS_KEY\")}":1}}}`), true)
	f.Add([]byte(`{"project":"x","service":{"w":{"image":"i","engines":["${{\"A\"=\"A\"}[substr(env(\"AWS_SECRET_ACCESS_KEY\"),0,1)]}", 1e400]}}}`), true)
	f.Add([]byte("x = "+strings.Repeat("[", 1200)+strings.Repeat("]", 1200)+"\n\x01\n"), false)
	f.Fuzz(func(t *testing.T, src []byte, json bool) {
		dir := t.TempDir()
		name := "main.hcl"
		if json {
			name = "main.hcl.json"
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, src, 0o644); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		const secret = "AKIAq8ZxW77889900w"
		res, diags := Load(Options{Dir: dir, Env: []string{"DEPLOYER_VAR_x=1", "AWS_SECRET_ACCESS_KEY=" + secret, "DEPLOYER_VAR_token=" + secret}})
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("loading took %s", d)
		}
		if res == nil {
			t.Fatal("nil result")
		}
		text := res.DiagnosticsText(diags)
		if !strings.Contains(string(src), "q8Zx") && strings.Contains(text, "q8Zx") {
			t.Fatalf("the diagnostics show the secret:\n%s", text)
		}
		if !diags.HasErrors() && res.Project == nil {
			t.Fatal("no errors and no project")
		}
	})
}
