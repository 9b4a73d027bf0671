package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/deployer-dev/deployer/executor"
	"github.com/deployer-dev/deployer/executor/plan"
)

// A deploy that runs in another PID namespace on this machine (a CI job in a container with the
// host's network and Docker socket, or a VM cloned from one image) holds the lock under a PID
// that means nothing here. Its lock is not broken: the holder is named and the second apply
// stops. Its PID is chosen so that no process here has it, as happens.
func TestLockFromAnotherPIDNamespace(t *testing.T) {
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("no unshare")
	}
	r := newCLIRig(t)
	if out, code := r.run(nil, "apply", "-auto-approve"); code != 0 {
		t.Fatalf("first deploy: %s", out)
	}
	last := 0
	for n := 300000; n < 400000; n += 1000 {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", n+1)); os.IsNotExist(err) {
			last = n
			break
		}
	}
	// A candidate that takes 30s to listen keeps the first deploy, and its lock, for the health
	// check's 20s.
	script := fmt.Sprintf("echo %d > /proc/sys/kernel/ns_last_pid && %q apply -auto-approve -var version=v2 -var mode=slow", last, deployerBin(t))
	ns := exec.Command("unshare", "-p", "-f", "--mount-proc", "sh", "-c", script)
	ns.Dir = r.dir
	out := &strings.Builder{}
	ns.Stdout, ns.Stderr = out, out
	if err := ns.Start(); err != nil {
		t.Fatal(err)
	}
	defer ns.Wait()
	deadline := time.Now().Add(20 * time.Second)
	var lock *executor.Container
	for lock == nil && time.Now().Before(deadline) {
		obs, _ := plan.Observe(context.Background(), r.eng, projectOnly(r.project))
		lock = obs.Lock
		time.Sleep(100 * time.Millisecond)
	}
	if lock == nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("the deploy in another PID namespace took no lock:\n%s", out)
		}
		t.Skipf("cannot run a deploy in another PID namespace here:\n%s", out)
	}
	if pid := lock.Labels[plan.LabelLockPID]; pid != fmt.Sprint(last+1) {
		t.Fatalf("the lock records PID %s, want %d", pid, last+1)
	}
	got, code := r.run(nil, "apply", "-auto-approve", "-var", "version=v3")
	if code != 1 || !strings.Contains(got, "is held by") || !strings.Contains(got, fmt.Sprintf("pid %d", last+1)) || strings.Contains(got, "breaking the deploy lock") {
		t.Errorf("second apply: %d\n%s", code, got)
	}
	obs, _ := plan.Observe(context.Background(), r.eng, projectOnly(r.project))
	if obs.Lock == nil || obs.Lock.ID != lock.ID {
		t.Errorf("the lock of the running deploy was broken")
	}
}
