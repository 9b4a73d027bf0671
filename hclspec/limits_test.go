package hclspec

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A configuration from an untrusted pull request cannot crash the loader, hang it, or make it
// build huge values: each of these shapes ends in a positioned error, quickly.
func TestBadInputNeverCrashes(t *testing.T) {
	deep := func(open, close string, n int) string {
		return strings.Repeat(open, n) + "1" + strings.Repeat(close, n)
	}
	cases := []struct {
		name, src, want string
	}{
		{"file() of a device", `a = file("/dev/zero")`, "is an absolute path"},
		{"file() of a directory", `a = file(".")`, "is a directory, not a regular file"},
		{"nested parentheses", "a = " + deep("(", ")", 100000), "Expression nested too deep"},
		{"nested lists", "a = " + deep("[", "]", 100000), "Expression nested too deep"},
		{"nested templates", "a = " + deep(`"${`, `}"`, 50000), "Expression nested too deep"},
		{"a chain of operators", "a = " + strings.Repeat("1+", 500000) + "1", "Expression nested too deep"},
		{"a chain of unary operators", "a = " + strings.Repeat("!", 500000) + "true", "Expression nested too deep"},
		{"a chain of indexes", "a = [1]" + strings.Repeat("[local.z]", 100000), "Expression nested too deep"},
		{"nested calls", "a = " + strings.Repeat("abs(", 100000) + "1" + strings.Repeat(")", 100000), "Expression nested too deep"},
		{"a huge range", "a = range(1000000000)", "more than the 100000 the deployer allows"},
		{"a huge setproduct", "a = setproduct(range(1000), range(1000), range(1000))", "more than the 100000 the deployer allows"},
		{"a huge replace", `a = replace(join("", [for i in range(1000) : format("%010000d", 0)]), "", "yyyy")`, "bytes, more than"},
		{"a huge format width", `a = format("%999999999d", 1)`, "more than 10000"},
		{"a huge power", `a = tostring(pow(10, 100000000))`, "more than 10000 digits"},
		{"doubling strings", "a0 = join(\"\", [for i in range(1000) : format(\"%010000d\", 0)])\n" + doubling(20), "bytes, more than"},
		{"deep JSON to decode", `a = jsondecode("` + strings.Repeat("[", 5000) + strings.Repeat("]", 5000) + `")`, "nests more than"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			src := "project = \"x\"\nlocals {\n  z = 0\n" + c.src + "\n}\n"
			os.WriteFile(filepath.Join(dir, "main.hcl"), []byte(src), 0o644)
			start := time.Now()
			res, diags := Load(Options{Dir: dir})
			text := res.DiagnosticsText(diags)
			if !diags.HasErrors() || !strings.Contains(text, c.want) {
				t.Fatalf("want an error %q, got:\n%.2000s", c.want, text)
			}
			if !strings.Contains(text, "main.hcl:") {
				t.Errorf("the error does not say where:\n%.2000s", text)
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("took %s", d)
			}
		})
	}
	// The same shapes outside files: a variable's value on the command line, a JSON file.
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "main.hcl"), []byte("project = \"x\"\nvariable \"v\" { type = list(any) }\n"), 0o644)
	_, diags := Load(Options{Dir: dir, Vars: []VarArg{{Name: "v", Value: deep("[", "]", 100000)}}})
	if !diags.HasErrors() || !strings.Contains(diags.Error(), "nested too deep") {
		t.Errorf("-var: %v", diags)
	}
	jdir := t.TempDir()
	os.WriteFile(filepath.Join(jdir, "main.hcl.json"), []byte(`{"project": "x", "locals": {"a": `+deep("[", "]", 100000)+`}}`), 0o644)
	if _, diags := Load(Options{Dir: jdir}); !diags.HasErrors() || !strings.Contains(diags.Error(), "nested too deep") {
		t.Errorf("JSON: %v", diags)
	}
	// A file larger than configuration files ever are.
	bdir := t.TempDir()
	os.WriteFile(filepath.Join(bdir, "main.hcl"), []byte("project = \"x\"\n# "+strings.Repeat("x", MaxFileSize)+"\n"), 0o644)
	if _, diags := Load(Options{Dir: bdir}); !diags.HasErrors() || !strings.Contains(diags.Error(), "larger than 4 MiB") {
		t.Errorf("large file: %v", diags)
	}
}

// doubling is n locals, each the previous one twice.
func doubling(n int) string {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		b.WriteString("a" + itoa(i) + " = join(\"\", [local.a" + itoa(i-1) + ", local.a" + itoa(i-1) + "])\n")
	}
	return b.String()
}

func itoa(i int) string { return strconv.Itoa(i) }
