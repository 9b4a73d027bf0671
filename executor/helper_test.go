package executor

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// runsOn tells a deployer binary that can run FROM scratch on the engine from one that cannot.
func TestRunsOn(t *testing.T) {
	dir := t.TempDir()
	static := filepath.Join(dir, "static")
	cmd := exec.Command("go", "build", "-o", static, "./testdata/hello")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	b, _ := os.ReadFile(static)
	other := filepath.Join(dir, "other")
	patched := append([]byte(nil), b...)
	if runtime.GOARCH == "arm64" {
		patched[18], patched[19] = 62, 0 // e_machine: EM_X86_64
	} else {
		patched[18], patched[19] = 183, 0 // e_machine: EM_AARCH64
	}
	os.WriteFile(other, patched, 0o755)
	script := filepath.Join(dir, "script")
	os.WriteFile(script, []byte("#!/bin/sh\n"), 0o755)

	if err := runsOn(static, "linux", runtime.GOARCH); err != nil {
		t.Errorf("a static binary for the engine: %v", err)
	}
	for _, c := range []struct {
		bin, os, want string
	}{
		{other, "linux", "is built for EM_"},
		{script, "linux", "is not a Linux binary"},
		{static, "windows", "the engine runs windows containers"},
	} {
		err := runsOn(c.bin, c.os, runtime.GOARCH)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s on %s: %v, want %q", filepath.Base(c.bin), c.os, err, c.want)
		}
	}
}
