package executor

import (
	"os"
	"strconv"
	"testing"

	"github.com/deployer-dev/deployer/executor/plan"
)

// A lock is judged gone only when its holder provably is: this machine, this boot, this PID
// namespace, and its PID runs no process now, or another one than the one that took it.
func TestStaleLock(t *testing.T) {
	host, _ := os.Hostname()
	me := thisProcess()
	if me.boot == "" || me.pidns == "" || me.start == "" {
		t.Skip("no /proc to tell processes apart")
	}
	parent := strconv.Itoa(os.Getppid())
	lock := func(edit func(l map[string]string)) *Container {
		l := map[string]string{plan.LabelLockHost: host, plan.LabelLockBoot: me.boot, plan.LabelLockPIDNS: me.pidns, plan.LabelLockPID: "3999999", plan.LabelLockStart: "42"}
		edit(l)
		return &Container{Labels: l}
	}
	cases := []struct {
		name  string
		edit  func(l map[string]string)
		stale bool
	}{
		{"its PID runs nothing", func(l map[string]string) {}, true},
		{"its PID is another process now", func(l map[string]string) { l[plan.LabelLockPID] = parent }, true},
		{"its process runs", func(l map[string]string) { l[plan.LabelLockPID], l[plan.LabelLockStart] = parent, startTime(parent) }, false},
		{"another PID namespace (a CI job in a container)", func(l map[string]string) { l[plan.LabelLockPIDNS] = "pid:[4026532999]" }, false},
		{"another boot (two VMs from one image, or a reboot)", func(l map[string]string) { l[plan.LabelLockBoot] = "00000000-0000-0000-0000-000000000000" }, false},
		{"another machine", func(l map[string]string) { l[plan.LabelLockHost] = "ci-runner-7" }, false},
		{"an earlier version's lock: host and PID only", func(l map[string]string) {
			delete(l, plan.LabelLockBoot)
			delete(l, plan.LabelLockPIDNS)
			delete(l, plan.LabelLockStart)
		}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := staleLock(lock(c.edit), host); got != c.stale {
				t.Errorf("stale = %v, want %v", got, c.stale)
			}
		})
	}
}
