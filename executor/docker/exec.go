package docker

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/errdefs"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/deployer-dev/deployer/executor/engine"
)

// networkAttempts bounds EnsureNetwork's tries: another deployer making the same network, or
// a subnet taken between the probe and the creation, is a conflict worth a second look, not an
// endless one.
const networkAttempts = 5

// EnsureNetwork creates a bridge network unless one of that name exists, and returns its range
// of fixed addresses ("" for a network made without one). An existing network without the
// labels is someone else's: ErrNameTaken, naming whose.
func (e *Engine) EnsureNetwork(ctx context.Context, name string, labels map[string]string) (string, error) {
	var last error
	for attempt := 0; attempt < networkAttempts; attempt++ {
		if n, err := e.cli.NetworkInspect(ctx, name, network.InspectOptions{}); err == nil {
			if !hasLabels(n.Labels, labels) {
				return "", fmt.Errorf("%w: a network named %s exists that is %s", engine.ErrNameTaken, name, labelledFor(n.Labels))
			}
			return n.Labels[engine.LabelFixedRange], nil
		}
		// Fixed addresses need a subnet given at creation. The engine picks a free one (it knows
		// the host's routes and the other networks) for a network made without; that one is
		// made, read and replaced by one with the same subnet given explicitly.
		subnet, err := e.freeSubnet(ctx, name, labels)
		if err != nil {
			return "", err
		}
		fixed, dynamic, err := halves(subnet)
		if err != nil {
			return "", fmt.Errorf("create network %s: %w", name, err)
		}
		l := map[string]string{engine.LabelFixedRange: fixed.String()}
		for k, v := range labels {
			l[k] = v
		}
		_, err = e.cli.NetworkCreate(ctx, name, network.CreateOptions{Driver: "bridge", Labels: l,
			IPAM: &network.IPAM{Config: []network.IPAMConfig{{Subnet: subnet.String(), IPRange: dynamic.String()}}}})
		if err == nil {
			return fixed.String(), nil
		}
		if !isConflict(err) && attempt >= 2 || ctx.Err() != nil {
			return "", fmt.Errorf("create network %s: %w", name, err)
		}
		last = err // made meanwhile by another deployer, or the subnet was taken meanwhile: look again
	}
	return "", fmt.Errorf("create network %s: gave up after %d attempts: %w", name, networkAttempts, last)
}

// freeSubnet asks the engine for a subnet it would give a new network.
func (e *Engine) freeSubnet(ctx context.Context, name string, labels map[string]string) (netip.Prefix, error) {
	probe := name + "-subnet-probe"
	// One an interrupted run left goes; one of that name made by anyone else stays.
	if n, err := e.cli.NetworkInspect(ctx, probe, network.InspectOptions{}); err == nil {
		if !hasLabels(n.Labels, labels) {
			return netip.Prefix{}, fmt.Errorf("create network %s: %w: a network named %s exists that is %s", name, engine.ErrNameTaken, probe, labelledFor(n.Labels))
		}
		e.cli.NetworkRemove(ctx, n.ID)
	}
	resp, err := e.cli.NetworkCreate(ctx, probe, network.CreateOptions{Driver: "bridge", Labels: labels})
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("create network %s: %w", name, err)
	}
	defer e.cli.NetworkRemove(context.WithoutCancel(ctx), resp.ID)
	n, err := e.cli.NetworkInspect(ctx, resp.ID, network.InspectOptions{})
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("create network %s: %w", name, err)
	}
	for _, c := range n.IPAM.Config {
		if p, err := netip.ParsePrefix(c.Subnet); err == nil && p.Addr().Is4() {
			return p.Masked(), nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("create network %s: the engine gave no IPv4 subnet", name)
}

// NetworkLabels are a network's labels.
func (e *Engine) NetworkLabels(ctx context.Context, name string) (map[string]string, error) {
	n, err := e.cli.NetworkInspect(ctx, name, network.InspectOptions{})
	if err != nil {
		if errdefs.IsNotFound(err) {
			return nil, fmt.Errorf("network %s: %w", name, engine.ErrNotFound)
		}
		return nil, fmt.Errorf("docker engine at %s: inspect network %s: %w", e.host, name, err)
	}
	if n.Labels == nil {
		return map[string]string{}, nil
	}
	return n.Labels, nil
}

// NetworkAddresses lists the IPv4 addresses of the containers connected to a network now.
func (e *Engine) NetworkAddresses(ctx context.Context, name string) (map[string]string, error) {
	n, err := e.cli.NetworkInspect(ctx, name, network.InspectOptions{})
	if err != nil {
		if errdefs.IsNotFound(err) {
			return nil, fmt.Errorf("network %s: %w", name, engine.ErrNotFound)
		}
		return nil, fmt.Errorf("docker engine at %s: inspect network %s: %w", e.host, name, err)
	}
	out := map[string]string{}
	for id, ep := range n.Containers {
		who := ep.Name
		if who == "" {
			who = id
		}
		if p, err := netip.ParsePrefix(ep.IPv4Address); err == nil {
			out[p.Addr().String()] = who
		} else if a, err := netip.ParseAddr(ep.IPv4Address); err == nil {
			out[a.String()] = who
		}
	}
	return out, nil
}

// hasLabels reports whether have carries every label of want.
func hasLabels(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

// labelledFor says whose an object is by its labels, for an error.
func labelledFor(labels map[string]string) string {
	if p := labels[engine.LabelProject]; p != "" {
		return fmt.Sprintf("project %q's", p)
	}
	return "not made by the deployer"
}

// halves splits a subnet into its lower half (fixed addresses) and upper half (the engine's).
func halves(p netip.Prefix) (lower, upper netip.Prefix, err error) {
	bits := p.Bits()
	if bits > 28 {
		return lower, upper, fmt.Errorf("subnet %s is too small", p)
	}
	a := p.Addr().As4()
	lower = netip.PrefixFrom(netip.AddrFrom4(a), bits+1)
	a[bits/8] |= 0x80 >> (bits % 8)
	upper = netip.PrefixFrom(netip.AddrFrom4(a), bits+1)
	return lower, upper, nil
}

// Exec runs a command in a running container and returns its output and exit code.
func (e *Engine) Exec(ctx context.Context, id string, cmd []string) (string, int, error) {
	execID, att, err := e.execAttached(ctx, id, container.ExecOptions{Cmd: cmd, AttachStdout: true, AttachStderr: true})
	if err != nil {
		return "", -1, err
	}
	defer att.Close()
	var out, errOut bytes.Buffer
	if _, err := stdcopy.StdCopy(&out, &errOut, att.Reader); err != nil {
		return "", -1, fmt.Errorf("exec in %s: %w", short(id), err)
	}
	ins, err := e.cli.ContainerExecInspect(ctx, execID)
	if err != nil {
		return "", -1, fmt.Errorf("exec in %s: %w", short(id), err)
	}
	if ins.ExitCode != 0 && errOut.Len() > 0 {
		return out.String() + errOut.String(), ins.ExitCode, nil
	}
	return out.String(), ins.ExitCode, nil
}

// ExecSession runs a command in a running container with its stdin and stdout attached, on
// one connection to the engine for as long as the session lasts.
func (e *Engine) ExecSession(ctx context.Context, id string, cmd []string) (io.ReadWriteCloser, error) {
	_, att, err := e.execAttached(ctx, id, container.ExecOptions{Cmd: cmd, AttachStdin: true, AttachStdout: true, AttachStderr: true})
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	go func() {
		var errOut tailBuffer
		_, err := stdcopy.StdCopy(pw, &errOut, att.Reader)
		if err == nil {
			err = io.EOF
			if msg := strings.TrimSpace(errOut.String()); msg != "" {
				err = fmt.Errorf("exec in %s ended: %s", short(id), msg)
			}
		}
		pw.CloseWithError(err)
	}()
	return &execSession{att: att, out: pr}, nil
}

// execAttached creates an exec in container id and starts it attached.
func (e *Engine) execAttached(ctx context.Context, id string, o container.ExecOptions) (string, types.HijackedResponse, error) {
	created, err := e.cli.ContainerExecCreate(ctx, id, o)
	if err != nil {
		return "", types.HijackedResponse{}, fmt.Errorf("exec in %s: %w", short(id), err)
	}
	att, err := e.cli.ContainerExecAttach(ctx, created.ID, container.ExecAttachOptions{})
	if err != nil {
		return "", types.HijackedResponse{}, fmt.Errorf("exec in %s: %w", short(id), err)
	}
	return created.ID, att, nil
}

// execSession is a running exec's stdin (the hijacked connection) and its demultiplexed stdout.
type execSession struct {
	att  types.HijackedResponse
	out  *io.PipeReader
	once sync.Once
}

func (s *execSession) Read(b []byte) (int, error)  { return s.out.Read(b) }
func (s *execSession) Write(b []byte) (int, error) { return s.att.Conn.Write(b) }

func (s *execSession) Close() error {
	s.once.Do(func() {
		s.att.CloseWrite()
		s.att.Close()
		s.out.Close()
	})
	return nil
}

// SetRestart changes a container's restart policy.
func (e *Engine) SetRestart(ctx context.Context, id, policy string) error {
	update := container.UpdateConfig{RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyMode(policy)}}
	_, err := e.cli.ContainerUpdate(ctx, id, update)
	// A container the engine is restarting (a crash loop) can be caught between its process's
	// exit and the next start: the engine then fails the update ("container not running",
	// "cannot update a stopped container") and keeps the old policy. Moments later it takes.
	for i := 0; err != nil && restarting(err) && i < 20 && ctx.Err() == nil; i++ {
		time.Sleep(100 * time.Millisecond)
		_, err = e.cli.ContainerUpdate(ctx, id, update)
	}
	if err != nil {
		return fmt.Errorf("restart policy of %s: %w", short(id), err)
	}
	return nil
}

func restarting(err error) bool {
	return strings.Contains(err.Error(), "not running") || strings.Contains(err.Error(), "stopped container")
}

// Platform is the engine's OS and architecture, as Go names them ("linux", "amd64").
func (e *Engine) Platform(ctx context.Context) (string, string, error) {
	v, err := e.cli.ServerVersion(ctx)
	if err != nil {
		return "", "", fmt.Errorf("docker engine %s: %w", e.host, err)
	}
	return v.Os, v.Arch, nil
}
