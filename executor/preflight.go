package executor

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor/plan"
)

// Before any candidate starts, apply checks what would otherwise fail only once a candidate
// was started and checked, seconds to minutes later: that no process outside Docker holds a
// host port the services need (a container that holds one is checkPorts' business), and that
// the backup stores the deploy writes to answer, have their bucket and take a write. Plan
// checks the ports too where the engine is local (it binds them on this machine), and the
// stores as far as it can without writing; a store it cannot reach is a warning there, since
// a plan in CI may run without the store's credentials.

// preflightTimeout bounds the check of one store, and the helper that binds ports on a remote
// engine's host.
const preflightTimeout = 20 * time.Second

// preflight runs apply's preflight step, before any candidate starts.
func (rn *run) preflight(ctx context.Context, pl *plan.Plan, step *plan.Step) error {
	return rn.step("", step.Kind, step.Arg, step.Detail, func() error {
		if needs := plan.PortNeeds(rn.Project, pl); len(needs) > 0 {
			all, err := rn.Runtime.AllContainers(ctx)
			if err != nil {
				return err
			}
			free := plan.BindLocally(rn.probeHost())
			if rn.remote() {
				if free, err = rn.bindOnEngine(ctx, needs); err != nil {
					rn.warn("", "the host ports could not be checked on the engine's host (%v): a port held there fails the deploy only when the release starts", err)
					free = nil
				}
			}
			if free != nil {
				if problems := plan.HeldOutside(rn.Project, needs, all, free); len(problems) > 0 {
					return plan.PortsError(problems)
				}
			}
		}
		stores := plan.StoreNeeds(rn.Project, pl)
		for _, name := range plan.SortedKeys(stores) {
			if err := checkStore(ctx, rn.Project, name, true); err != nil {
				return fmt.Errorf("%w (for %s); nothing was changed", err, plan.Addresses(stores[name]))
			}
		}
		return nil
	})
}

// BindCheck is what the helper (`deployer internal bind-check ADDR...`) answers: the addresses
// it could not listen on because they are in use.
type BindCheck struct {
	Held []string `json:"held"`
}

// CheckBinds tries to listen on each address ("host:port") and reports those in use.
func CheckBinds(addrs []string) BindCheck {
	out := BindCheck{Held: []string{}}
	for _, a := range addrs {
		l, err := net.Listen("tcp", a)
		if err == nil {
			l.Close()
		} else if errors.Is(err, syscall.EADDRINUSE) {
			out.Held = append(out.Held, a)
		}
	}
	return out
}

// bindOnEngine asks the engine's host which ports are in use: a helper container of the
// deployer on the host's network tries to listen on them.
func (rn *run) bindOnEngine(ctx context.Context, needs []plan.PortNeed) (func(plan.PortNeed) bool, error) {
	helper, err := rn.hp.helperImage(ctx)
	if err != nil {
		return nil, err
	}
	cmd := []string{"internal", "bind-check"}
	for _, n := range needs {
		cmd = append(cmd, n.String())
	}
	spec := ContainerSpec{Name: rn.Project.Name + "-deployer-preflight", Image: helper, Cmd: cmd, HostNetwork: true,
		Labels: map[string]string{plan.LabelProject: rn.Project.Name, plan.LabelRole: plan.RoleOneOff}}
	code, logs, err := rn.hp.helperRun(ctx, spec, preflightTimeout)
	if err != nil {
		return nil, err
	}
	var res BindCheck
	if line := lastJSONLine(logs); code != 0 || json.Unmarshal([]byte(line), &res) != nil {
		return nil, fmt.Errorf("the helper exited with code %d: %s", code, firstLine(strings.TrimSpace(logs)))
	}
	held := map[string]bool{}
	for _, a := range res.Held {
		held[a] = true
	}
	return func(n plan.PortNeed) bool { return !held[n.String()] }, nil
}

// checkStore checks a backup store: it answers, its bucket (or directory) exists, and (write)
// it takes an object, which is deleted again. Without write nothing is written: an S3 store is
// asked for its bucket, a local directory for write permission.
func checkStore(ctx context.Context, p *config.Project, name string, write bool) error {
	ctx, cancel := context.WithTimeout(ctx, preflightTimeout)
	defer cancel()
	if cfg := p.Stores[name]; cfg != nil && cfg.Kind == config.StoreLocal && !write {
		return localWritable(p, cfg)
	}
	st, err := OpenStore(ctx, p, name)
	if err != nil {
		return err
	}
	err = st.Check(ctx)
	if err == nil && write {
		b := make([]byte, 8)
		rand.Read(b)
		key := p.Name + "/.deployer-write-check-" + hex.EncodeToString(b)
		if err = st.Put(ctx, key, strings.NewReader("written by deployer apply to check the store; deleted at once\n")); err == nil {
			err = st.Delete(ctx, key)
		}
	}
	if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("backup store %s: no answer within %s", st, preflightTimeout)
	}
	return err
}

// localWritable checks, without writing, that a local store's directory (or the directory that
// would hold it) may be written by this process.
func localWritable(p *config.Project, cfg *config.Store) error {
	dir := cfg.Directory
	if !filepath.IsAbs(dir) {
		dir = filepath.Join(p.Dir, dir)
	}
	at := dir
	for {
		st, err := os.Stat(at)
		if err == nil && !st.IsDir() {
			return fmt.Errorf("backup store %s: %s is not a directory", dir, at)
		}
		if err == nil {
			break
		}
		parent := filepath.Dir(at)
		if parent == at {
			return fmt.Errorf("backup store %s: %w", dir, err)
		}
		at = parent
	}
	if err := unix.Access(at, unix.W_OK|unix.X_OK); err != nil {
		return fmt.Errorf("backup store %s is not writable: %s: %w", dir, at, err)
	}
	return nil
}

// MakePlan makes the project's plan (Make) with the checks that reach past the engine: the
// backup stores answer, and the routes of the project's proxy.
func MakePlan(ctx context.Context, p *config.Project, eng Engine, opts plan.PlanOptions) (*plan.Plan, error) {
	if opts.CheckStore == nil {
		opts.CheckStore = func(ctx context.Context, p *config.Project, store string) error {
			return checkStore(ctx, p, store, false)
		}
	}
	if opts.ProxyRoutes == nil {
		opts.ProxyRoutes = readProxyRoutes
	}
	return plan.Make(ctx, p, eng, opts)
}
