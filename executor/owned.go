package executor

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor/plan"
)

// owned is what a run makes and checks of the project's own on the engine: the names it
// derives (taken by something else: stop), its volumes, and its network and the addresses on it.
type owned struct{ rn *run }

// nameTaken explains a creation the engine refused because the name is taken (a race with
// the checks before, or something the checks do not see): it names what holds it.
func (own *owned) nameTaken(ctx context.Context, name, what string) error {
	rn := own.rn
	holder := "something else"
	if st, err := rn.Runtime.Inspect(ctx, name); err == nil {
		holder = plan.ContainerOwner(st)
	}
	return fmt.Errorf("the container name %s (%s) is taken by %s: remove or rename it", name, what, holder)
}

// checkOwnership checks, in a run, that the names of the services given and the project's are
// its own (ownership.check), right before it changes anything.
func (own *owned) checkOwnership(ctx context.Context, services []*config.Service) error {
	rn := own.rn
	all, err := rn.Runtime.AllContainers(ctx)
	if err != nil {
		return err
	}
	o := &plan.Ownership{Ctx: ctx, Eng: rn.Runtime, Project: rn.Project, All: all, Proxy: plan.NeedsProxy(rn.Project, !rn.remote())}
	return o.Check(services)
}

// makeVolumes creates the services' volumes that do not exist yet, with the project's labels
// (and shared, as the configuration says), before any container mounts them: the engine
// would make them without. One that exists is kept as it is (ownership.check judged it).
func (own *owned) makeVolumes(ctx context.Context, services []*config.Service) error {
	rn := own.rn
	for _, s := range services {
		for _, v := range s.Volumes {
			if err := own.makeVolume(ctx, v.Name, plan.DataLabels(rn.Project, v)); err != nil {
				return fmt.Errorf("service.%s: %w", s.Name, err)
			}
		}
	}
	return nil
}

// makeVolume creates a volume with labels unless one of the name exists.
func (own *owned) makeVolume(ctx context.Context, name string, labels map[string]string) error {
	rn := own.rn
	if _, err := rn.Runtime.InspectVolume(ctx, name); !errors.Is(err, ErrNotFound) {
		return err
	}
	err := rn.Runtime.CreateVolume(ctx, name, labels)
	if errors.Is(err, ErrNameTaken) {
		v, ierr := rn.Runtime.InspectVolume(ctx, name)
		if ierr == nil && v.Labels[plan.LabelProject] == rn.Project.Name {
			return nil // made meanwhile by another run of the project
		}
		holder := "something else"
		if ierr == nil {
			holder = plan.WhoseLabels(v.Labels)
		}
		return fmt.Errorf("the volume %s was made meanwhile, %s: run plan again", name, holder)
	}
	return err
}

// removeOwnVolume removes a volume the deployer made for a service (role: its scratch space, a
// safety copy) that an interrupted run left; one of that name that is not that (another
// project's, a service's, one the deployer did not make) is never removed: an error names it.
func (own *owned) removeOwnVolume(ctx context.Context, name, service, role string) error {
	rn := own.rn
	v, err := rn.Runtime.InspectVolume(ctx, name)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	l := v.Labels
	if l[plan.LabelProject] != rn.Project.Name || l[plan.LabelService] != service || l[plan.LabelRole] != role {
		return fmt.Errorf("a volume named %s exists, %s, that is not service.%s's %s volume: it is left as it is; rename or remove it", name, plan.WhoseLabels(l), service, role)
	}
	return rn.Runtime.RemoveVolume(ctx, name)
}

// The proxy reaches releases by their address on the project's network, and keeps its routes
// across a restart of the host. A release therefore gets a fixed address from the network's
// fixed range when it is created: the engine gives it back the same one whenever it starts
// again, in whatever order the host brings containers back after a reboot.

// network is the project's network as one run knows it.
type network struct {
	fixed string // its range of fixed addresses, once ensured ("" for a network made without one)
}

// ensureNetwork makes sure the project's network exists and learns its fixed range.
func (own *owned) ensureNetwork(ctx context.Context) error {
	rn := own.rn
	fixed, err := rn.Runtime.EnsureNetwork(ctx, plan.NetworkName(rn.Project.Name), map[string]string{plan.LabelProject: rn.Project.Name})
	if err != nil {
		return err
	}
	rn.net = network{fixed: fixed}
	return nil
}

// backendAddr is where the proxy reaches a release's port: its address on the project network.
func (own *owned) backendAddr(c *ContainerState, port int) (string, error) {
	rn := own.rn
	ip := c.IPs[plan.NetworkName(rn.Project.Name)]
	if ip == "" {
		return "", fmt.Errorf("container %s is not on network %s", c.Name, plan.NetworkName(rn.Project.Name))
	}
	return fmt.Sprintf("%s:%d", ip, port), nil
}

// createRelease creates a release's container at a fixed address of its own when the network
// has a fixed range (one made by an earlier version has none: the engine picks the address).
func (rn *run) createRelease(ctx context.Context, spec ContainerSpec) (string, error) {
	if rn.net.fixed != "" && spec.Network == plan.NetworkName(rn.Project.Name) && spec.IP == "" {
		addr, err := rn.own.freeAddress(ctx)
		if err != nil {
			return "", err
		}
		spec.IP = addr
		labels := make(map[string]string, len(spec.Labels)+1)
		for k, v := range spec.Labels {
			labels[k] = v
		}
		labels[plan.LabelAddress] = addr
		spec.Labels = labels
	}
	return rn.Runtime.CreateContainer(ctx, spec)
}

// freeAddress is the lowest address of the fixed range that nothing holds: no container
// connected to the network now, whoever connected it (anyone may connect a container to the
// project's network with an address of its choice), and no container labelled for the project,
// running or not (a stopped release keeps its address for when it is started again).
func (own *owned) freeAddress(ctx context.Context) (string, error) {
	rn := own.rn
	name := plan.NetworkName(rn.Project.Name)
	fixed, err := netip.ParsePrefix(rn.net.fixed)
	if err != nil {
		return "", fmt.Errorf("network %s: fixed range %q: %v", name, rn.net.fixed, err)
	}
	obs, err := plan.Observe(ctx, rn.Runtime, rn.Project)
	if err != nil {
		return "", err
	}
	used := map[string]bool{}
	for _, c := range obs.Labelled {
		used[c.Labels[plan.LabelAddress]] = true
	}
	connected, err := rn.Runtime.NetworkAddresses(ctx, name)
	if err != nil {
		return "", err
	}
	for addr := range connected {
		used[addr] = true
	}
	return pickAddress(fixed, used)
}

// addressHint names what holds a release's address when the engine refused to start it for
// that ("Address already in use": something was connected to the network with that address
// after the deployer chose it).
func (own *owned) addressHint(ctx context.Context, id string, err error) error {
	rn := own.rn
	if err == nil || !strings.Contains(err.Error(), "ddress already in use") {
		return err
	}
	st, ierr := rn.Runtime.Inspect(ctx, id)
	if ierr != nil || st.Spec.IP == "" {
		return err
	}
	name, addr := plan.NetworkName(rn.Project.Name), st.Spec.IP
	holder, who := "something connected to the network meanwhile", "CONTAINER"
	if connected, cerr := rn.Runtime.NetworkAddresses(ctx, name); cerr == nil && connected[addr] != "" {
		who = connected[addr]
		holder = "container " + who
		if other, oerr := rn.Runtime.Inspect(ctx, who); oerr == nil {
			holder = plan.ContainerOwner(other)
		}
	}
	return fmt.Errorf("the address %s on network %s, given to %s, is taken by %s: disconnect it (docker network disconnect %s %s), or run apply again, which picks another address (%v)", addr, name, st.Name, holder, name, who, err)
}

// pickAddress returns the lowest address of the range not in used, skipping the range's first
// two (the network's own and its gateway's).
func pickAddress(fixed netip.Prefix, used map[string]bool) (string, error) {
	addr := fixed.Addr().Next().Next()
	for ; fixed.Contains(addr); addr = addr.Next() {
		if !used[addr.String()] {
			return addr.String(), nil
		}
	}
	return "", fmt.Errorf("no free address left in the fixed range %s of the project's network: remove old releases", fixed)
}
