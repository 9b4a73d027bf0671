package executor

import (
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/deployer-dev/deployer/executor/selfimage"
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

	if err := selfimage.RunsOn(static, "linux", runtime.GOARCH); err != nil {
		t.Errorf("a static binary for the engine: %v", err)
	}
	// A binary built with cgo and the external linker, as `go install` builds the deployer on a
	// machine with a C compiler: its image carries its interpreter and libc.
	dynamic := filepath.Join(dir, "dynamic")
	cmd = exec.Command("go", "build", "-ldflags=-linkmode=external", "-o", dynamic, "./testdata/hello")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI has a C compiler, and this build must work: %v: %s", err, out)
		}
		t.Logf("no cgo build here (%v: %s): the dynamic case is not checked", err, out)
	} else {
		img, err := selfimage.Of(dynamic, "linux", runtime.GOARCH)
		if err != nil {
			t.Fatalf("a dynamic binary: %v", err)
		}
		var libc, interp bool
		for p := range img.Files {
			libc = libc || strings.Contains(p, "libc.so")
			interp = interp || strings.Contains(p, "ld-linux")
		}
		if !libc || !interp {
			t.Errorf("the image of a dynamic binary lacks libc or its interpreter: %v", img.Files)
		}
	}
	for _, c := range []struct {
		bin, os, want string
	}{
		{other, "linux", "is built for EM_"},
		{script, "linux", "is not a Linux binary"},
		{static, "windows", "the engine runs windows containers"},
	} {
		err := selfimage.RunsOn(c.bin, c.os, runtime.GOARCH)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s on %s: %v, want %q", filepath.Base(c.bin), c.os, err, c.want)
		}
	}
}

func TestPickAddress(t *testing.T) {
	fixed := netip.MustParsePrefix("10.1.2.0/25")
	if a, err := pickAddress(fixed, map[string]bool{"": true}); err != nil || a != "10.1.2.2" {
		t.Errorf("first: %s %v", a, err)
	}
	if a, _ := pickAddress(fixed, map[string]bool{"10.1.2.2": true, "10.1.2.4": true}); a != "10.1.2.3" {
		t.Errorf("a gap: %s", a)
	}
	used := map[string]bool{}
	for a := fixed.Addr(); fixed.Contains(a); a = a.Next() {
		used[a.String()] = true
	}
	if _, err := pickAddress(fixed, used); err == nil || !strings.Contains(err.Error(), "no free address") {
		t.Errorf("full: %v", err)
	}
}
