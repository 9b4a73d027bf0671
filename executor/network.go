package executor

import (
	"context"
	"fmt"
	"net/netip"
)

// The proxy reaches releases by their address on the project's network, and keeps its routes
// across a restart of the host. A release therefore gets a fixed address from the network's
// fixed range when it is created: the engine gives it back the same one whenever it starts
// again, in whatever order the host brings containers back after a reboot.

// network is the project's network as one run knows it.
type network struct {
	fixed string // its range of fixed addresses, once ensured ("" for a network made without one)
}

// ensureNetwork makes sure the project's network exists and learns its fixed range.
func (rn *run) ensureNetwork(ctx context.Context) error {
	fixed, err := rn.Runtime.EnsureNetwork(ctx, NetworkName(rn.Project.Name), map[string]string{LabelProject: rn.Project.Name})
	if err != nil {
		return err
	}
	rn.net = network{fixed: fixed}
	return nil
}

// backendAddr is where the proxy reaches a release's port: its address on the project network.
func (rn *run) backendAddr(c *ContainerState, port int) (string, error) {
	ip := c.IPs[NetworkName(rn.Project.Name)]
	if ip == "" {
		return "", fmt.Errorf("container %s is not on network %s", c.Name, NetworkName(rn.Project.Name))
	}
	return fmt.Sprintf("%s:%d", ip, port), nil
}

// createRelease creates a release's container at a fixed address of its own when the network
// has a fixed range (one made by an earlier version has none: the engine picks the address).
func (rn *run) createRelease(ctx context.Context, spec ContainerSpec) (string, error) {
	if rn.net.fixed != "" && spec.Network == NetworkName(rn.Project.Name) && spec.IP == "" {
		addr, err := rn.freeAddress(ctx)
		if err != nil {
			return "", err
		}
		spec.IP = addr
		labels := make(map[string]string, len(spec.Labels)+1)
		for k, v := range spec.Labels {
			labels[k] = v
		}
		labels[LabelAddress] = addr
		spec.Labels = labels
	}
	return rn.Runtime.CreateContainer(ctx, spec)
}

// freeAddress is the lowest address of the fixed range that no container of the project holds,
// running or not (a stopped release keeps its address for when it is started again).
func (rn *run) freeAddress(ctx context.Context) (string, error) {
	fixed, err := netip.ParsePrefix(rn.net.fixed)
	if err != nil {
		return "", fmt.Errorf("network %s: fixed range %q: %v", NetworkName(rn.Project.Name), rn.net.fixed, err)
	}
	obs, err := Observe(ctx, rn.Runtime, rn.Project.Name)
	if err != nil {
		return "", err
	}
	used := map[string]bool{}
	for _, c := range obs.All {
		used[c.Labels[LabelAddress]] = true
	}
	return pickAddress(fixed, used)
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
