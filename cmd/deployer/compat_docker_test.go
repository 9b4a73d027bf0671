package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
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

// Releases, a lock and a proxy made by the previous version: this version plans them as they
// are (a sensitive value hashed the old way is not a change), deploys over them with the seed's
// fixed candidate port although the old live release still publishes it, upgrades the old proxy
// without a failed request, rolls back to the old release, and names the old version's lock
// instead of breaking it.
func TestPreviousVersionReleases(t *testing.T) {
	prev := previousDeployer(t)
	r := newCLIRig(t)
	r.useProxy()
	cfg, _ := os.ReadFile(filepath.Join(r.dir, "deployer.hcl"))
	s := strings.Replace(string(cfg), "    APP_DATA        = \"/data\"\n", "    APP_DATA        = \"/data\"\n    API_KEY         = var.api_key\n", 1)
	s += "\nvariable \"api_key\" {\n  sensitive = true\n  default   = \"key-5f4e3d2c1b\"\n}\n"
	os.WriteFile(filepath.Join(r.dir, "deployer.hcl"), []byte(s), 0o644)
	cand := regexp.MustCompile(`candidate = (\d+)`).FindStringSubmatch(s)[1]

	if out, code := r.runWith(prev, nil, "apply", "-auto-approve"); code != 0 {
		t.Fatalf("apply with the previous version: %s", out)
	}
	if out, code := r.run(nil, "plan", "-detailed-exitcode"); code != 0 {
		t.Errorf("plan of what the previous version deployed: exit %d (want 0: nothing changed)\n%s", code, out)
	}
	// The old live release publishes the candidate port itself: the deploy goes on without
	// showing the candidate there, and the proxy the old version made is upgraded.
	stop := make(chan struct{})
	failures := make(chan string, 1000)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if got := r.get("/"); !strings.HasPrefix(got, "version=") {
				failures <- got
			}
		}
	}()
	out, code := r.run(nil, "apply", "-auto-approve", "-var", "version=v2")
	close(stop)
	wg.Wait()
	close(failures)
	if code != 0 || r.get("/") != "version=v2" {
		t.Fatalf("apply over the previous version's release: %d\n%s", code, out)
	}
	for f := range failures {
		t.Errorf("a request failed during the deploy over the previous version: %s", f)
	}
	if out, code := r.run(nil, "apply", "-auto-approve", "-var", "version=v3"); code != 0 || !strings.Contains(out, "the proxy shows it on 127.0.0.1:"+cand) {
		t.Fatalf("the next apply: %d\n%s", code, out)
	}
	if out, code := r.run(nil, "rollback", "service.app", "-to", "1"); code != 0 || r.get("/") != "version=v1" {
		t.Fatalf("rollback to the previous version's release: %d\n%s", code, out)
	}

	// A lock left by the previous version (killed) records no boot or PID namespace: it is named,
	// not broken, and unlock -force clears it.
	out, code = r.runWith(prev, []string{"DEPLOYER_TEST_KILL_AT=candidate"}, "apply", "-auto-approve", "-var", "version=v4")
	if code != -int(syscall.SIGKILL) {
		t.Fatalf("the previous version was not killed: %d\n%s", code, out)
	}
	if out, code := r.run(nil, "plan"); code != 0 || !strings.Contains(out, "deploy lock held by") {
		t.Errorf("plan with the old lock: %d\n%s", code, out)
	}
	out, code = r.run(nil, "apply", "-auto-approve", "-var", "version=v4")
	if code != 1 || !strings.Contains(out, "is held by") || !strings.Contains(out, "deployer unlock -force") {
		t.Errorf("apply with the old lock: %d\n%s", code, out)
	}
	if out, code := r.run(nil, "unlock", "-force"); code != 0 {
		t.Fatalf("unlock: %s", out)
	}
	if out, code := r.run(nil, "apply", "-auto-approve", "-var", "version=v4"); code != 0 || r.get("/") != "version=v4" {
		t.Fatalf("apply after unlock: %d\n%s", code, out)
	}
}
