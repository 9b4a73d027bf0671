package main

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// A deployer built the way most users build it (`go build` or `go install`, cgo on, so
// dynamically linked) deploys through the proxy and restores a backup: both run the deployer
// itself in a container, which then carries its interpreter and libraries.
func TestDynamicallyLinkedDeployer(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "deployer")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v: %s", err, out)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	dynamic := false
	for _, p := range f.Progs {
		dynamic = dynamic || p.Type == elf.PT_INTERP
	}
	f.Close()
	if !dynamic {
		if os.Getenv("CI") != "" {
			t.Fatal("a cgo build is static here: the test proves nothing")
		}
		t.Skip("cgo builds are static here")
	}
	r := newCLIRig(t)
	r.useProxy()
	r.addBackup("")
	for _, v := range []string{"v1", "v2"} {
		if out, code := r.runWith(bin, nil, "apply", "-auto-approve", "-var", "version="+v); code != 0 || r.get("/") != "version="+v {
			t.Fatalf("apply %s: %d\n%s", v, code, out)
		}
	}
	out, code := r.runWith(bin, nil, "backups", "list", "service.app")
	id := regexp.MustCompile(`(\d{8}T\S+-r1)`).FindStringSubmatch(out)
	if code != 0 || id == nil {
		t.Fatalf("list: %d\n%s", code, out)
	}
	if out, code := r.runWith(bin, nil, "backups", "restore", "service.app", id[1], "-auto-approve"); code != 0 || !strings.Contains(out, "volumes restored") {
		t.Fatalf("restore: %d\n%s", code, out)
	}
	if got := r.get("/"); got != "version=v2" {
		t.Errorf("after the restore: %q", got)
	}
}
