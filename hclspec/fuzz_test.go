package hclspec

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoad feeds arbitrary bytes to the loader as a native-syntax and as a JSON file. Whatever the
// input, it must return diagnostics or a project, never panic or hang.
func FuzzLoad(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*/*.hcl*")
	seeds = append(seeds, "../examples/quickstart/deployer.hcl", "../examples/manual-generator/deployer.hcl")
	for _, s := range seeds {
		if b, err := os.ReadFile(s); err == nil {
			f.Add(b, false)
		}
	}
	f.Add([]byte(`{"project": "x", "service": {"a": {"image": "${var.x}"}}}`), true)
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
		res, diags := Load(Options{Dir: dir, Env: []string{"DEPLOYER_VAR_x=1"}})
		if res == nil {
			t.Fatal("nil result")
		}
		_ = res.DiagnosticsText(diags)
		if !diags.HasErrors() && res.Project == nil {
			t.Fatal("no errors and no project")
		}
	})
}
