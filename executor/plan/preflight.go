package plan

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor/engine"
)

// StepPreflight is apply's step that runs these checks, after the lock.
const StepPreflight StepKind = "preflight"

// PortNeed is a host port a release the plan starts will need.
type PortNeed struct {
	service   string
	port      int
	candidate bool // the candidate's, published on the loopback address
}

// starts reports whether a change starts a release: it then needs its ports free.
func starts(ch *Change) bool {
	switch ch.Action {
	case ActionCreate, ActionReplace, ActionTakeover, ActionUpdate:
		return true
	}
	return false
}

// PortNeeds are the host ports, and the fixed candidate ports, of the services whose release
// the plan starts.
func PortNeeds(p *config.Project, plan *Plan) []PortNeed {
	var out []PortNeed
	for _, ch := range plan.Changes {
		s := p.Service(ch.Service)
		if s == nil || !starts(ch) {
			continue
		}
		for _, port := range s.Ports {
			if port.Host != 0 {
				out = append(out, PortNeed{service: s.Name, port: port.Host})
			}
			if port.Candidate != 0 && ch.Action != ActionUpdate {
				out = append(out, PortNeed{service: s.Name, port: port.Candidate, candidate: true})
			}
		}
	}
	return out
}

// StoreNeeds are the backup stores the plan's deploys write to (a backup is taken before the
// cutover from a live release), with the services that use each.
func StoreNeeds(p *config.Project, plan *Plan) map[string][]string {
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
	if needs := PortNeeds(p, plan); len(needs) > 0 {
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
	stores := StoreNeeds(p, plan)
	for _, name := range SortedKeys(stores) {
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
func preflightPlan(ctx context.Context, p *config.Project, plan *Plan, all []engine.Container, opts PlanOptions) error {
	if h := opts.ProbeHost; h != "" && !opts.Remote && LocalEngine("tcp://"+net.JoinHostPort(h, "0")) {
		if problems := HeldOutside(p, PortNeeds(p, plan), all, BindLocally(h)); len(problems) > 0 {
			return PortsError(problems)
		}
	}
	stores := StoreNeeds(p, plan)
	for _, name := range SortedKeys(stores) {
		if opts.CheckStore == nil {
			break
		}
		if err := opts.CheckStore(ctx, p, name); err != nil {
			plan.Warnings = append(plan.Warnings, fmt.Sprintf("%s (for %s): apply would stop before starting a candidate", err, Addresses(stores[name])))
		}
	}
	return nil
}

// PortsError is the error of ports held outside Docker.
func PortsError(problems []string) error {
	return fmt.Errorf("%s; nothing was changed. A port serves one project: stop what holds it, or choose another port", strings.Join(problems, "; "))
}

// Addresses names services as service.NAME.
func Addresses(services []string) string {
	var out []string
	for _, s := range services {
		out = append(out, "service."+s)
	}
	return strings.Join(out, ", ")
}

// HeldOutside names the ports needed that are held, by free's account, and that nothing Docker
// reports explains: no running container publishes them and no project's running proxy may
// route them (another project's for its live releases; this project's for any service of the
// proxy cutover, whose candidate it may show too). Those a container holds are checkPorts' to
// name, or the project's own.
func HeldOutside(p *config.Project, needs []PortNeed, all []engine.Container, free func(PortNeed) bool) []string {
	accounted := map[int]bool{}
	proxies := map[string]bool{} // projects whose proxy runs
	for _, c := range all {
		if c.Running() && c.Role() == RoleProxy {
			proxies[c.Labels[engine.LabelProject]] = true
		}
	}
	for _, c := range all {
		if c.Running() {
			for _, pub := range c.Published {
				accounted[pub.HostPort] = true
			}
		}
		if proj := c.Labels[engine.LabelProject]; proj != "" && proxies[proj] && isLive(c) {
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

// BindLocally reports a port free when this process can listen on it at host, the address
// where the engine's published ports are reached from here (the loopback address for a local
// Docker engine: a listener there, or on every address, holds the port against the engine).
// A port it may not bind for another reason than being in use (a privileged one) counts as
// free: nothing was found to hold it.
func BindLocally(host string) func(PortNeed) bool {
	return func(n PortNeed) bool {
		l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(n.port)))
		if err == nil {
			l.Close()
			return true
		}
		return !errors.Is(err, syscall.EADDRINUSE)
	}
}

func (n PortNeed) String() string {
	if n.candidate {
		return fmt.Sprintf("127.0.0.1:%d", n.port)
	}
	return fmt.Sprintf(":%d", n.port)
}

// StoreWarnings says, for each S3 store a service backs up to without a signing_key, what that
// lets anyone who can write to its bucket do.
func StoreWarnings(p *config.Project) []string {
	var out []string
	seen := map[string]bool{}
	for _, s := range p.Services {
		if s.Backup == nil || seen[s.Backup.Store] {
			continue
		}
		seen[s.Backup.Store] = true
		if w := UnsignedStoreWarning(p.Stores[s.Backup.Store]); w != "" {
			out = append(out, w)
		}
	}
	return out
}

func UnsignedStoreWarning(st *config.Store) string {
	if st == nil || st.Kind != config.StoreS3 || st.SigningKey != "" {
		return ""
	}
	return fmt.Sprintf("backup_store.%s (s3://%s) has no signing_key: anyone who can write to the bucket can write backups the deployer cannot tell from its own; "+
		"a prune after them deletes your genuine backups, and a restore of one writes their data into your volumes. Set signing_key, from a sensitive variable",
		st.Name, st.Bucket)
}
