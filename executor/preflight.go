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
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/deployer-dev/deployer/config"
)

// Before any candidate starts, apply checks what would otherwise fail only once a candidate
// was started and checked, seconds to minutes later: that no process outside Docker holds a
// host port the services need (a container that holds one is checkPorts' business), and that
// the backup stores the deploy writes to answer, have their bucket and take a write. Plan
// checks the ports too where the engine is local (it binds them on this machine), and the
// stores as far as it can without writing; a store it cannot reach is a warning there, since
// a plan in CI may run without the store's credentials.

// StepPreflight is apply's step that runs these checks, after the lock.
const StepPreflight StepKind = "preflight"

// preflightTimeout bounds the check of one store, and the helper that binds ports on a remote
// engine's host.
const preflightTimeout = 20 * time.Second

// portNeed is a host port a release the plan starts will need.
type portNeed struct {
	service   string
	port      int
	candidate bool // the candidate's, published on the loopback address
}

func (n portNeed) String() string {
	if n.candidate {
		return fmt.Sprintf("127.0.0.1:%d", n.port)
	}
	return fmt.Sprintf(":%d", n.port)
}

// starts reports whether a change starts a release: it then needs its ports free.
func starts(ch *Change) bool {
	switch ch.Action {
	case ActionCreate, ActionReplace, ActionTakeover, ActionUpdate:
		return true
	}
	return false
}

// portNeeds are the host ports, and the fixed candidate ports, of the services whose release
// the plan starts.
func portNeeds(p *config.Project, plan *Plan) []portNeed {
	var out []portNeed
	for _, ch := range plan.Changes {
		s := p.Service(ch.Service)
		if s == nil || !starts(ch) {
			continue
		}
		for _, port := range s.Ports {
			if port.Host != 0 {
				out = append(out, portNeed{service: s.Name, port: port.Host})
			}
			if port.Candidate != 0 && ch.Action != ActionUpdate {
				out = append(out, portNeed{service: s.Name, port: port.Candidate, candidate: true})
			}
		}
	}
	return out
}

// storeNeeds are the backup stores the plan's deploys write to (a backup is taken before the
// cutover from a live release), with the services that use each.
func storeNeeds(p *config.Project, plan *Plan) map[string][]string {
	out := map[string][]string{}
	for _, ch := range plan.Changes {
		s := p.Service(ch.Service)
		if s == nil || s.Backup == nil || ch.Action != ActionReplace && ch.Action != ActionTakeover {
			continue
		}
		out[s.Backup.Store] = append(out[s.Backup.Store], s.Name)
	}
	return out
}

// preflightDetail says what the preflight step checks; "" when there is nothing to check.
func preflightDetail(p *config.Project, plan *Plan, local bool) string {
	var parts []string
	if needs := portNeeds(p, plan); len(needs) > 0 {
		var ports []string
		seen := map[string]bool{}
		for _, n := range needs {
			if !seen[n.String()] {
				seen[n.String()] = true
				ports = append(ports, n.String())
			}
		}
		where := "this machine"
		if !local {
			where = "the engine's host"
		}
		parts = append(parts, fmt.Sprintf("no process outside Docker holds %s on %s", strings.Join(ports, ", "), where))
	}
	stores := storeNeeds(p, plan)
	for _, name := range sortedKeys(stores) {
		parts = append(parts, fmt.Sprintf("backup_store.%s answers and takes a write", name))
	}
	if len(parts) == 0 {
		return ""
	}
	return "check that " + strings.Join(parts, ", and that ")
}

// preflightPlan is plan's part of the checks: the ports where the engine is local and
// opts.ProbeHost says where its ports are (an error, as ports held by other containers are),
// the stores without writing (warnings on the plan).
func preflightPlan(ctx context.Context, p *config.Project, plan *Plan, all []Container, opts PlanOptions) error {
	if h := opts.ProbeHost; h != "" && !opts.Remote && LocalEngine("tcp://"+net.JoinHostPort(h, "0")) {
		if problems := heldOutside(p, portNeeds(p, plan), all, bindLocally(h)); len(problems) > 0 {
			return portsError(problems)
		}
	}
	stores := storeNeeds(p, plan)
	for _, name := range sortedKeys(stores) {
		if opts.CheckStore == nil {
			break
		}
		if err := opts.CheckStore(ctx, p, name); err != nil {
			plan.Warnings = append(plan.Warnings, fmt.Sprintf("%s (for %s): apply would stop before starting a candidate", err, addresses(stores[name])))
		}
	}
	return nil
}

// preflight runs apply's preflight step, before any candidate starts.
func (rn *run) preflight(ctx context.Context, plan *Plan, step *Step) error {
	return rn.step("", step.Kind, step.Arg, step.Detail, func() error {
		if needs := portNeeds(rn.Project, plan); len(needs) > 0 {
			all, err := rn.Runtime.AllContainers(ctx)
			if err != nil {
				return err
			}
			free := bindLocally(rn.probeHost())
			if rn.remote() {
				if free, err = rn.bindOnEngine(ctx, needs); err != nil {
					rn.warn("", "the host ports could not be checked on the engine's host (%v): a port held there fails the deploy only when the release starts", err)
					free = nil
				}
			}
			if free != nil {
				if problems := heldOutside(rn.Project, needs, all, free); len(problems) > 0 {
					return portsError(problems)
				}
			}
		}
		stores := storeNeeds(rn.Project, plan)
		for _, name := range sortedKeys(stores) {
			if err := checkStore(ctx, rn.Project, name, true); err != nil {
				return fmt.Errorf("%w (for %s); nothing was changed", err, addresses(stores[name]))
			}
		}
		return nil
	})
}

// portsError is the error of ports held outside Docker.
func portsError(problems []string) error {
	return fmt.Errorf("%s; nothing was changed. A port serves one project: stop what holds it, or choose another port", strings.Join(problems, "; "))
}

// addresses names services as service.NAME.
func addresses(services []string) string {
	var out []string
	for _, s := range services {
		out = append(out, "service."+s)
	}
	return strings.Join(out, ", ")
}

// heldOutside names the ports needed that are held, by free's account, and that nothing Docker
// reports explains: no running container publishes them and no project's running proxy may
// route them (another project's for its live releases; this project's for any service of the
// proxy cutover, whose candidate it may show too). Those a container holds are checkPorts' to
// name, or the project's own.
func heldOutside(p *config.Project, needs []portNeed, all []Container, free func(portNeed) bool) []string {
	accounted := map[int]bool{}
	proxies := map[string]bool{} // projects whose proxy runs
	for _, c := range all {
		if c.Running() && c.Role() == RoleProxy {
			proxies[c.Labels[LabelProject]] = true
		}
	}
	for _, c := range all {
		if c.Running() {
			for _, pub := range c.Published {
				accounted[pub.HostPort] = true
			}
		}
		if proj := c.Labels[LabelProject]; proj != "" && proxies[proj] && isLive(c) {
			for _, port := range proxiedPorts(c) {
				accounted[port] = true
			}
		}
	}
	if proxies[p.Name] {
		obs := observe(p, all)
		for _, s := range p.Services {
			// A live release of the proxy cutover, set aside or stopped by an interrupted
			// switch to the restart cutover, still has its ports held by the proxy.
			if st := obs.Services[s.Name]; st != nil && st.Live != nil {
				for _, port := range proxiedPorts(*st.Live) {
					accounted[port] = true
				}
			}
			if s.Deploy.Cutover == config.CutoverProxy {
				for _, port := range s.Ports {
					accounted[port.Host], accounted[port.Candidate] = true, true
				}
			}
		}
	}
	var out []string
	seen := map[string]bool{}
	for _, n := range needs {
		if accounted[n.port] || seen[n.String()] || free(n) {
			continue
		}
		seen[n.String()] = true
		what := "host"
		if n.candidate {
			what = "candidate"
		}
		out = append(out, fmt.Sprintf("%s port %d of service.%s is held by a process outside Docker (no container publishes it)%s", what, n.port, n.service, holder(n.port)))
	}
	sort.Strings(out)
	return out
}

// holder names, where it can, the process on this machine that listens on a port.
func holder(port int) string {
	if who := portHolder(port); who != "" {
		return ": " + who + " on this machine"
	}
	return ""
}

// bindLocally reports a port free when this process can listen on it at host, the address
// where the engine's published ports are reached from here (the loopback address for a local
// Docker engine: a listener there, or on every address, holds the port against the engine).
// A port it may not bind for another reason than being in use (a privileged one) counts as
// free: nothing was found to hold it.
func bindLocally(host string) func(portNeed) bool {
	return func(n portNeed) bool {
		l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(n.port)))
		if err == nil {
			l.Close()
			return true
		}
		return !errors.Is(err, syscall.EADDRINUSE)
	}
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
func (rn *run) bindOnEngine(ctx context.Context, needs []portNeed) (func(portNeed) bool, error) {
	helper, err := rn.hp.helperImage(ctx)
	if err != nil {
		return nil, err
	}
	cmd := []string{"internal", "bind-check"}
	for _, n := range needs {
		cmd = append(cmd, n.String())
	}
	spec := ContainerSpec{Name: rn.Project.Name + "-deployer-preflight", Image: helper, Cmd: cmd, HostNetwork: true,
		Labels: map[string]string{LabelProject: rn.Project.Name, LabelRole: RoleOneOff}}
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
	return func(n portNeed) bool { return !held[n.String()] }, nil
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
