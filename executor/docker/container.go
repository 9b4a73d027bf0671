package docker

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/errdefs"
	"github.com/docker/docker/pkg/stdcopy"
	"github.com/docker/go-connections/nat"

	"github.com/deployer-dev/deployer/executor/engine"
)

// CreateContainer creates (not starts) a container and returns its ID.
func (e *Engine) CreateContainer(ctx context.Context, s engine.ContainerSpec) (string, error) {
	env := make([]string, 0, len(s.Env))
	for _, k := range sortedKeys(s.Env) {
		env = append(env, k+"="+s.Env[k])
	}
	exposed := nat.PortSet{}
	bindings := nat.PortMap{}
	for _, p := range s.Ports {
		port := nat.Port(fmt.Sprintf("%d/tcp", p.Container))
		exposed[port] = struct{}{}
		host := ""
		if p.HostPort != 0 {
			host = strconv.Itoa(p.HostPort)
		}
		bindings[port] = append(bindings[port], nat.PortBinding{HostIP: p.HostIP, HostPort: host})
	}
	var mounts []mount.Mount
	for _, v := range s.Volumes {
		mounts = append(mounts, mount.Mount{Type: mount.TypeVolume, Source: v.Name, Target: v.Target})
	}
	cfg := &container.Config{Image: s.Image, Env: env, Labels: s.Labels, ExposedPorts: exposed}
	if len(s.Cmd) > 0 {
		cfg.Cmd = s.Cmd
	}
	host := &container.HostConfig{PortBindings: bindings, Mounts: mounts}
	if s.HostNetwork {
		host.NetworkMode = "host"
		host.PortBindings, cfg.ExposedPorts = nil, nil
	} else if s.NoNetwork {
		host.NetworkMode = "none"
		host.PortBindings, cfg.ExposedPorts = nil, nil
	} else if s.Network != "" {
		host.NetworkMode = container.NetworkMode(s.Network)
	}
	if s.Restart != "" {
		host.RestartPolicy = container.RestartPolicy{Name: container.RestartPolicyMode(s.Restart)}
	}
	if s.Init {
		yes := true
		host.Init = &yes
	}
	host.Resources.Memory, host.Resources.NanoCPUs = s.Memory, s.NanoCPUs
	if len(s.LogOpts) > 0 {
		host.LogConfig = container.LogConfig{Type: "json-file", Config: s.LogOpts}
	}
	var netCfg *network.NetworkingConfig
	if s.Network != "" && s.IP != "" && !s.HostNetwork {
		netCfg = &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{
			s.Network: {IPAMConfig: &network.EndpointIPAMConfig{IPv4Address: s.IP}},
		}}
	}
	resp, err := e.cli.ContainerCreate(ctx, cfg, host, netCfg, nil, s.Name)
	if err != nil {
		if isConflict(err) {
			return "", fmt.Errorf("create container %s: %w: %v", s.Name, engine.ErrNameTaken, err)
		}
		return "", fmt.Errorf("create container %s: %w", s.Name, err)
	}
	return resp.ID, nil
}

// StartContainer starts a created or stopped container.
func (e *Engine) StartContainer(ctx context.Context, id string) error {
	if err := e.cli.ContainerStart(ctx, id, container.StartOptions{}); err != nil {
		return fmt.Errorf("start container %s: %w", short(id), err)
	}
	return nil
}

// StopContainer sends SIGTERM, then SIGKILL after timeout.
func (e *Engine) StopContainer(ctx context.Context, id string, timeout time.Duration) error {
	secs := int(timeout.Round(time.Second) / time.Second)
	if err := e.cli.ContainerStop(ctx, id, container.StopOptions{Timeout: &secs}); err != nil && !isNotFound(err) {
		return fmt.Errorf("stop container %s: %w", short(id), err)
	}
	return nil
}

// RemoveContainer removes a container (forcing a running one down); its named volumes stay.
// RemoveVolume removes a volume; one that is gone already is not an error.
func (e *Engine) RemoveVolume(ctx context.Context, name string) error {
	err := e.cli.VolumeRemove(ctx, name, true)
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("remove volume %s: %w", name, err)
	}
	return nil
}

func (e *Engine) RemoveContainer(ctx context.Context, id string) error {
	err := e.cli.ContainerRemove(ctx, id, container.RemoveOptions{Force: true, RemoveVolumes: false})
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("remove container %s: %w", short(id), err)
	}
	return nil
}

// RenameContainer gives a container another name.
func (e *Engine) RenameContainer(ctx context.Context, id, name string) error {
	if err := e.cli.ContainerRename(ctx, id, name); err != nil {
		return fmt.Errorf("rename container %s to %s: %w", short(id), name, err)
	}
	return nil
}

// Inspect reports a container's state, published ports and the spec it was created from.
func (e *Engine) Inspect(ctx context.Context, id string) (*engine.ContainerState, error) {
	c, err := e.cli.ContainerInspect(ctx, id)
	if err != nil {
		if isNotFound(err) {
			return nil, fmt.Errorf("container %s: %w", short(id), engine.ErrNotFound)
		}
		return nil, fmt.Errorf("inspect container %s: %w", short(id), err)
	}
	st := &engine.ContainerState{ID: c.ID, Name: strings.TrimPrefix(c.Name, "/"), Ports: map[int]int{}, ImageID: c.Image, Restarts: c.RestartCount}
	st.Spec.Name = st.Name
	st.Spec.Image = c.Image
	if c.HostConfig != nil {
		st.Spec.Restart = string(c.HostConfig.RestartPolicy.Name)
		st.Spec.Init = c.HostConfig.Init != nil && *c.HostConfig.Init
		st.Spec.Memory, st.Spec.NanoCPUs = c.HostConfig.Memory, c.HostConfig.NanoCPUs
		if lc := c.HostConfig.LogConfig; lc.Type == "json-file" && len(lc.Config) > 0 {
			st.Spec.LogOpts = lc.Config
		}
		for port, binds := range c.HostConfig.PortBindings {
			for _, b := range binds {
				hp, _ := strconv.Atoi(b.HostPort)
				st.Spec.Ports = append(st.Spec.Ports, engine.PortBinding{Container: port.Int(), HostIP: b.HostIP, HostPort: hp})
			}
		}
		sort.Slice(st.Spec.Ports, func(i, j int) bool { return st.Spec.Ports[i].Container < st.Spec.Ports[j].Container })
	}
	for _, m := range c.Mounts {
		switch m.Type {
		case mount.TypeVolume:
			st.Spec.Volumes = append(st.Spec.Volumes, engine.VolumeMount{Name: m.Name, Target: m.Destination})
		case mount.TypeBind:
			st.Binds = append(st.Binds, engine.VolumeMount{Name: m.Source, Target: m.Destination})
		}
	}
	if c.State != nil {
		st.Running = c.State.Running || c.State.Restarting
		st.Status = string(c.State.Status)
		st.ExitCode = c.State.ExitCode
		st.Error = c.State.Error
		st.OOM = c.State.OOMKilled
	}
	if c.Config != nil {
		st.Spec.Labels = c.Config.Labels
		st.Spec.Cmd = c.Config.Cmd
		st.Spec.Env = map[string]string{}
		for _, kv := range c.Config.Env {
			if k, v, ok := strings.Cut(kv, "="); ok {
				st.Spec.Env[k] = v
			}
		}
	}
	if c.HostConfig != nil {
		switch nm := string(c.HostConfig.NetworkMode); nm {
		case "host":
			st.Spec.HostNetwork = true
		case "none":
			st.Spec.NoNetwork = true
		case "", "default", "bridge":
		default:
			st.Spec.Network = nm
		}
	}
	st.IPs = map[string]string{}
	if c.NetworkSettings != nil {
		for name, n := range c.NetworkSettings.Networks {
			if n != nil && n.IPAddress != "" {
				st.IPs[name] = n.IPAddress
			}
			if n != nil && name == st.Spec.Network && n.IPAMConfig != nil {
				st.Spec.IP = n.IPAMConfig.IPv4Address
			}
		}
		for port, binds := range c.NetworkSettings.Ports {
			for _, b := range binds {
				if hp, err := strconv.Atoi(b.HostPort); err == nil && hp > 0 {
					st.Ports[port.Int()] = hp
					break
				}
			}
		}
	}
	return st, nil
}

// Logs returns the last lines of a container's output (stdout and stderr interleaved).
func (e *Engine) Logs(ctx context.Context, id string, lines int) (string, error) {
	rc, err := e.cli.ContainerLogs(ctx, id, container.LogsOptions{ShowStdout: true, ShowStderr: true, Tail: strconv.Itoa(lines)})
	if err != nil {
		return "", fmt.Errorf("logs of %s: %w", short(id), err)
	}
	defer rc.Close()
	var buf bytes.Buffer
	if _, err := stdcopy.StdCopy(&buf, &buf, io.LimitReader(rc, 1<<20)); err != nil {
		return buf.String(), nil // a TTY container's log is not multiplexed; what was read is still useful
	}
	return buf.String(), nil
}

// Wait blocks until the container exits and returns its exit code.
func (e *Engine) Wait(ctx context.Context, id string) (int, error) {
	okC, errC := e.cli.ContainerWait(ctx, id, container.WaitConditionNotRunning)
	select {
	case r := <-okC:
		if r.Error != nil && r.Error.Message != "" {
			return int(r.StatusCode), fmt.Errorf("wait for %s: %s", short(id), r.Error.Message)
		}
		return int(r.StatusCode), nil
	case err := <-errC:
		return -1, fmt.Errorf("wait for %s: %w", short(id), err)
	}
}

func isNotFound(err error) bool { return errdefs.IsNotFound(err) }
func isConflict(err error) bool { return errdefs.IsConflict(err) }

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
