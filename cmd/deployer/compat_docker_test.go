package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// previousCommit is the deployer before backups were encrypted and signed, manifests checked
// against the configuration, and candidate ports freed after a deploy (2026-11-28): what
// operators run today. What it made must keep working.
const previousCommit = "20e746b55929c91e5bcc38110105d6c2a99335c2"

var (
	prevOnce sync.Once
	prevBin  string
	prevErr  error
)

// previousDeployer builds the deployer of previousCommit from this repository's history.
func previousDeployer(t testing.TB) string {
	t.Helper()
	prevOnce.Do(func() {
		root, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
		if err != nil {
			prevErr = fmt.Errorf("the previous version is built from git history, and this is not a checkout: %v", err)
			return
		}
		dir, err := os.MkdirTemp("", "deployer-previous")
		if err != nil {
			prevErr = err
			return
		}
		src := filepath.Join(dir, "src")
		os.MkdirAll(src, 0o755)
		archive := exec.Command("sh", "-c", fmt.Sprintf("git -C %q archive %s | tar -x -C %q", strings.TrimSpace(string(root)), previousCommit, src))
		if out, err := archive.CombinedOutput(); err != nil {
			prevErr = fmt.Errorf("commit %s is not in this clone's history (a shallow clone? run `git fetch --unshallow`): %v: %s", previousCommit[:12], err, out)
			return
		}
		prevBin = filepath.Join(dir, "deployer")
		build := exec.Command("go", "build", "-ldflags", "-X main.version=previous", "-o", prevBin, "./cmd/deployer")
		build.Dir = src
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			prevErr = fmt.Errorf("build the previous version: %v: %s", err, out)
		}
	})
	if prevErr != nil {
		t.Fatal(prevErr)
	}
	return prevBin
}

// addBackup adds a backup block to the rig's configuration, in a local store of the test.
func (r *cliRig) addBackup(extra string) string {
	r.t.Helper()
	store := filepath.Join(r.t.TempDir(), "store")
	cfg, _ := os.ReadFile(filepath.Join(r.dir, "deployer.hcl"))
	block := fmt.Sprintf("backup_store \"local\" {\n  directory = %q\n%s}\n", store, extra)
	withBackup := strings.Replace(string(cfg), "  deploy {", "  backup {\n    store   = backup_store.local\n    volumes = [\""+r.project+"-data\"]\n  }\n  deploy {", 1)
	os.WriteFile(filepath.Join(r.dir, "deployer.hcl"), []byte(block+withBackup), 0o644)
	return store
}

// Backups made by the previous version are listed, verified and restored by this one.
func TestPreviousVersionBackups(t *testing.T) {
	prev := previousDeployer(t)
	r := newCLIRig(t)
	r.addBackup("")
	if out, code := r.runWith(prev, nil, "apply", "-auto-approve"); code != 0 {
		t.Fatalf("apply with the previous version: %s", out)
	}
	out, code := r.runWith(prev, nil, "backup", "service.app")
	id := regexp.MustCompile(`backup (\S+-r1) of release 1 is complete`).FindStringSubmatch(out)
	if code != 0 || id == nil {
		t.Fatalf("backup with the previous version: %d\n%s", code, out)
	}
	if out, code := r.run(nil, "backups", "list", "service.app"); code != 0 || !strings.Contains(out, id[1]) || strings.Contains(out, "refused") {
		t.Errorf("list: %d\n%s", code, out)
	}
	if out, code := r.run(nil, "backups", "verify", "service.app", id[1]); code != 0 || !strings.Contains(out, "is intact") {
		t.Errorf("verify: %d\n%s", code, out)
	}
	if out, code := r.run(nil, "backups", "restore", "service.app", id[1], "-auto-approve"); code != 0 || !strings.Contains(out, "volumes restored from backup "+id[1]) {
		t.Errorf("restore: %d\n%s", code, out)
	}
	if got := r.get("/"); got != "version=v1" {
		t.Errorf("serving %q", got)
	}
}
