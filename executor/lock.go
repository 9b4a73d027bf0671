package executor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/deployer-dev/deployer/executor/plan"
)

// lockPoll is how often a held lock is tried again while waiting for it.
const lockPoll = 500 * time.Millisecond

// lock takes the project's deploy lock, waiting up to LockTimeout. A lock left by a deployer
// that died on this same machine (its process is gone) is broken with a warning. The returned
// function releases the lock; it works after ctx is cancelled.
func (rn *run) lock(ctx context.Context) (func(), error) {
	var release func()
	err := rn.step("", plan.StepLock, "", rn.plannedOr("", plan.StepLock, plan.LockWords(rn.Project.Name)), func() error {
		image, err := rn.Runtime.EnsureLockImage(ctx)
		if err != nil {
			return fmt.Errorf("deploy lock: %w", err)
		}
		host, _ := os.Hostname()
		me := thisProcess()
		spec := ContainerSpec{Name: plan.LockName(rn.Project.Name), Image: image, Labels: map[string]string{
			plan.LabelProject: rn.Project.Name, plan.LabelRole: plan.RoleLock, plan.LabelHolder: rn.Holder,
			plan.LabelCreatedAt: time.Now().UTC().Format(time.RFC3339), plan.LabelLockHost: host, plan.LabelLockPID: strconv.Itoa(os.Getpid()),
			plan.LabelLockBoot: me.boot, plan.LabelLockPIDNS: me.pidns, plan.LabelLockStart: me.start,
		}}
		deadline := time.Now().Add(rn.LockTimeout)
		broken := 0
		for {
			id, err := rn.Runtime.CreateContainer(ctx, spec)
			if err == nil {
				release = func() {
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					defer cancel()
					rn.step("", plan.StepUnlock, "", rn.plannedOr("", plan.StepUnlock, plan.UnlockWords), func() error { return rn.Runtime.RemoveContainer(ctx, id) })
				}
				return nil
			}
			if !errors.Is(err, ErrNameTaken) {
				return fmt.Errorf("deploy lock: %w", err)
			}
			held, err := rn.lockHolder(ctx)
			if err != nil {
				return err
			}
			switch {
			case held == nil:
				// Released between our attempt and the look: try again, within the deadline.
			case staleLock(held, host) && broken < 3: // a lock that comes back stale again and again is not left by a crash
				broken++
				rn.warn("", "breaking the deploy lock of %s: that deployer process is gone (same machine, boot and PID namespace, and PID %s runs no more or is another process)", plan.DescribeLock(held), held.Labels[plan.LabelLockPID])
				if err := rn.Runtime.RemoveContainer(ctx, held.ID); err != nil {
					return err
				}
				continue // at once: nobody holds it now
			}
			if !time.Now().Before(deadline) {
				if held == nil {
					return fmt.Errorf("the deploy lock of project %q (container %s) was taken and released again and again for %s: run again", rn.Project.Name, spec.Name, rn.LockTimeout)
				}
				wait := "wait for it with -lock-timeout 5m"
				if rn.LockTimeout > 0 {
					wait = fmt.Sprintf("waited %s", rn.LockTimeout)
				}
				return fmt.Errorf("the deploy lock of project %q is held by %s; %s, or if that deploy is gone, run `deployer unlock -force`",
					rn.Project.Name, plan.DescribeLock(held), wait)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(lockPoll):
			}
		}
	})
	return release, err
}

// lockHolder is the project's lock that holds the lock's name, nil when nothing does (it was
// released meanwhile). A container of that name that is not the project's lock is an error
// naming it, at once: no wait ends it (a lock is a container the deployer labelled as such).
func (rn *run) lockHolder(ctx context.Context) (*Container, error) {
	return lockHolder(ctx, rn.Runtime, rn.Project.Name)
}

func lockHolder(ctx context.Context, rt Runtime, project string) (*Container, error) {
	name := plan.LockName(project)
	st, err := rt.Inspect(ctx, name)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("deploy lock: %w", err)
	}
	c := &Container{ID: st.ID, Name: st.Name, Image: st.Spec.Image, Labels: st.Spec.Labels}
	if c.Labels[plan.LabelProject] != project || c.Role() != plan.RoleLock {
		return nil, fmt.Errorf("the deploy lock's name %s is taken by %s, so project %q cannot take its lock: remove or rename that container, or rename the project; nothing was changed",
			name, plan.Whose(*c), project)
	}
	return c, nil
}

// process identifies a process beyond its PID, which is reused and means nothing outside its
// PID namespace.
type process struct{ boot, pidns, start string }

// thisProcess is the deployer's own identity; its parts are empty where /proc does not tell
// (another OS): such a lock is never judged gone.
func thisProcess() process {
	boot, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	pidns, _ := os.Readlink("/proc/self/ns/pid")
	return process{boot: strings.TrimSpace(string(boot)), pidns: pidns, start: startTime("self")}
}

// startTime is a process's start time in clock ticks since boot (field 22 of /proc/PID/stat),
// "" when the process does not exist.
func startTime(pid string) string {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return ""
	}
	// The command name (field 2) is in parentheses and may hold spaces: count after its end.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return ""
	}
	fields := strings.Fields(string(b[i+1:]))
	if len(fields) < 20 {
		return ""
	}
	return fields[19]
}

// staleLock reports whether the lock's holder is provably gone: it was taken on this machine,
// in this boot and in this PID namespace, and its PID runs no process now or another one (a
// later start time). Anything less certain (another machine with the same name, a CI job in a
// container, a lock of an earlier version that recorded none of this) is not stale: the holder
// is named, and `deployer unlock -force` is the way.
func staleLock(c *Container, host string) bool {
	l := c.Labels
	me := thisProcess()
	if l[plan.LabelLockHost] != host || l[plan.LabelLockBoot] == "" || l[plan.LabelLockBoot] != me.boot || l[plan.LabelLockPIDNS] == "" || l[plan.LabelLockPIDNS] != me.pidns || l[plan.LabelLockStart] == "" {
		return false
	}
	pid, err := strconv.Atoi(l[plan.LabelLockPID])
	if err != nil || pid <= 0 || pid == os.Getpid() {
		return false
	}
	now := startTime(strconv.Itoa(pid))
	return now == "" || now != l[plan.LabelLockStart]
}

// Unlock breaks the project's deploy lock and returns who held it (nil when nobody did). Only
// the container bearing the lock's name and labelled as the project's lock is removed: one of
// another name labelled so is not the lock, and one of that name labelled otherwise is an
// error naming it.
func Unlock(ctx context.Context, rt Runtime, project string) (*Container, error) {
	held, err := lockHolder(ctx, rt, project)
	if err != nil || held == nil {
		return nil, err
	}
	return held, rt.RemoveContainer(ctx, held.ID)
}

// DescribeLock says who holds a lock and since when.
func DescribeLock(c *Container) string { return plan.DescribeLock(c) }
