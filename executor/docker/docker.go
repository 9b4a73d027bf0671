// Package docker is the deployer's one door to the Docker engine: containers, images, volumes,
// networks, exec and copy, through the engine's API. It is the only package that imports the
// Docker SDK, so another kind of host is an addition here, not a rewrite elsewhere.
package docker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/client"
	"github.com/docker/docker/errdefs"

	"github.com/deployer-dev/deployer/executor/engine"
)

// PingTimeout bounds how long an engine may take to answer before the deployer says it does not;
// SSHPingTimeout an engine reached over ssh://, whose first answer includes starting ssh, its
// handshake and `docker system dial-stdio` on the host (seconds on a busy or distant one).
const (
	PingTimeout    = 5 * time.Second
	SSHPingTimeout = 20 * time.Second
)

// Engine talks to one Docker engine.
type Engine struct {
	cli  *client.Client
	host string
	// watchdog fails the calls to a tcp:// engine that stops answering (watchdog.go).
	watchdog *watchdog

	rootOnce sync.Once
	root     string // the engine's data directory (DockerRootDir), "" when it does not say
}

// New connects to the engine at host; an empty host means DOCKER_HOST, then the local socket.
// Nothing is sent until the first call.
func New(host string) (*Engine, error) { return NewWithTLS(host, nil) }

// TLSFiles are the CA, client certificate and key files of an engine reached over TLS.
type TLSFiles struct{ CA, Cert, Key string }

// NewWithTLS connects to the engine at host with its own TLS material (an engine block's
// tls), instead of DOCKER_CERT_PATH's.
func NewWithTLS(host string, tls *TLSFiles) (*Engine, error) {
	opts := []client.Opt{client.FromEnv, client.WithAPIVersionNegotiation()}
	if host != "" {
		opts = append(opts, client.WithHost(host))
	}
	if tls != nil {
		opts = append(opts, client.WithTLSClientConfig(tls.CA, tls.Cert, tls.Key))
	}
	named := describeHost(host)
	if strings.HasPrefix(named, "ssh://") {
		t, err := parseSSH(named)
		if err != nil {
			return nil, fmt.Errorf("docker engine: %w", err)
		}
		// The API goes over ssh; the URL only names the engine in requests.
		opts = append(opts, client.WithHost("http://docker.engine"), client.WithDialContext(t.dial))
	}
	var wd *watchdog
	if strings.HasPrefix(named, "tcp://") {
		bound, err := EngineTimeout()
		if err != nil {
			return nil, fmt.Errorf("docker engine %s: %w", named, err)
		}
		wd = newWatchdog(named, bound)
		opts = append(opts, wd.opt())
	}
	cli, err := client.NewClientWithOpts(opts...)
	if err != nil {
		return nil, fmt.Errorf("docker engine %s: %w", named, err)
	}
	e := &Engine{cli: cli, host: cli.DaemonHost(), watchdog: wd}
	if strings.HasPrefix(named, "ssh://") {
		e.host = named
	}
	if wd != nil {
		wd.host = e.host
		wd.ping = func(ctx context.Context) error { _, err := cli.Ping(ctx); return err }
	}
	return e, nil
}

func describeHost(host string) string {
	if host != "" {
		return host
	}
	if h := os.Getenv("DOCKER_HOST"); h != "" {
		return h
	}
	return client.DefaultDockerHost
}

// Close releases the connection.
func (e *Engine) Close() error {
	if e.watchdog != nil {
		e.watchdog.close()
	}
	return e.cli.Close()
}

// Host names the engine.
func (e *Engine) Host() string { return e.host }

// Client is the SDK client, for the packages that extend the engine (tests among them).
func (e *Engine) Client() *client.Client { return e.cli }

// Ping checks that the engine answers, within PingTimeout (SSHPingTimeout over ssh://).
func (e *Engine) Ping(ctx context.Context) error {
	limit := PingTimeout
	if strings.HasPrefix(e.host, "ssh://") {
		limit = SSHPingTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	if _, err := e.cli.Ping(ctx); err != nil {
		msg := err.Error()
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			msg = fmt.Sprintf("no answer within %s", limit)
		}
		return fmt.Errorf("docker engine at %s does not answer: %s (is the engine running, and is DOCKER_HOST or docker.host right?)", e.host, msg)
	}
	return nil
}

// Containers lists every container labelled with the project, running or not, in one call.
func (e *Engine) Containers(ctx context.Context, project string) ([]engine.Container, error) {
	list, err := e.cli.ContainerList(ctx, container.ListOptions{
		All:     true,
		Filters: filters.NewArgs(filters.Arg("label", engine.LabelProject+"="+project)),
	})
	if err != nil {
		return nil, fmt.Errorf("docker engine at %s: list containers of project %q: %w", e.host, project, err)
	}
	return e.containers(ctx, list), nil
}

// AllContainers lists every container on the engine, with the ports they publish.
func (e *Engine) AllContainers(ctx context.Context) ([]engine.Container, error) {
	list, err := e.cli.ContainerList(ctx, container.ListOptions{All: true})
	if err != nil {
		return nil, fmt.Errorf("docker engine at %s: list containers: %w", e.host, err)
	}
	return e.containers(ctx, list), nil
}

// volumeOfBind is the volume whose files a bind mount of source reaches (a bind of
// <root>/volumes/NAME/_data, or of a directory in it, mounts volume NAME's files), "" for none.
func (e *Engine) volumeOfBind(ctx context.Context, source string) string {
	e.rootOnce.Do(func() {
		if info, err := e.cli.Info(ctx); err == nil {
			e.root = info.DockerRootDir
		}
	})
	if e.root == "" {
		return ""
	}
	rest, ok := strings.CutPrefix(path.Clean(source), path.Join(e.root, "volumes")+"/")
	if !ok {
		return ""
	}
	name, _, _ := strings.Cut(rest, "/")
	return name
}

func (e *Engine) containers(ctx context.Context, list []container.Summary) []engine.Container {
	out := make([]engine.Container, 0, len(list))
	for _, c := range list {
		name := ""
		if len(c.Names) > 0 {
			name = strings.TrimPrefix(c.Names[0], "/")
		}
		out = append(out, engine.Container{
			ID:      c.ID,
			Name:    name,
			Image:   c.Image,
			ImageID: c.ImageID,
			State:   string(c.State),
			Status:  c.Status,
			Labels:  c.Labels,
			Created: time.Unix(c.Created, 0),
		})
		last := &out[len(out)-1]
		for _, p := range c.Ports {
			if p.PublicPort != 0 {
				last.Published = append(last.Published, engine.Published{HostIP: p.IP, HostPort: int(p.PublicPort)})
			}
		}
		for _, m := range c.Mounts {
			switch {
			case m.Type == mount.TypeVolume && m.Name != "":
				last.Mounts = append(last.Mounts, m.Name)
			case m.Type == mount.TypeBind:
				// A bind of the volume's directory on the host mounts its files as well.
				if name := e.volumeOfBind(ctx, m.Source); name != "" {
					last.Mounts = append(last.Mounts, name)
				}
			}
		}
	}
	return out
}

// ImageID resolves a local image reference to its ID.
func (e *Engine) ImageID(ctx context.Context, ref string) (string, error) {
	img, err := e.cli.ImageInspect(ctx, ref)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return "", fmt.Errorf("image %s: %w", ref, engine.ErrNotFound)
		}
		return "", fmt.Errorf("docker engine at %s: inspect image %s: %w", e.host, ref, err)
	}
	return img.ID, nil
}

// ImageLabels are a local image's labels.
func (e *Engine) ImageLabels(ctx context.Context, ref string) (map[string]string, error) {
	img, err := e.cli.ImageInspect(ctx, ref)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return nil, fmt.Errorf("image %s: %w", ref, engine.ErrNotFound)
		}
		return nil, fmt.Errorf("docker engine at %s: inspect image %s: %w", e.host, ref, err)
	}
	if img.Config == nil {
		return map[string]string{}, nil
	}
	return img.Config.Labels, nil
}

// ImageContent reports an image's layers and configuration.
func (e *Engine) ImageContent(ctx context.Context, ref string) (*engine.ImageContent, error) {
	img, err := e.cli.ImageInspect(ctx, ref)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return nil, fmt.Errorf("image %s: %w", ref, engine.ErrNotFound)
		}
		return nil, fmt.Errorf("docker engine at %s: inspect image %s: %w", e.host, ref, err)
	}
	out := &engine.ImageContent{ID: img.ID, Layers: img.RootFS.Layers, OS: img.Os, Arch: img.Architecture, Labels: map[string]string{}}
	if c := img.Config; c != nil {
		out.Entrypoint, out.Cmd, out.Env, out.User, out.WorkingDir = c.Entrypoint, c.Cmd, c.Env, c.User, c.WorkingDir
		for v := range c.Volumes {
			out.Volumes = append(out.Volumes, v)
		}
		sort.Strings(out.Volumes)
		for k, v := range c.Labels {
			out.Labels[k] = v
		}
		out.Other = c.Healthcheck != nil || len(c.OnBuild) > 0 || len(c.Shell) > 0 || c.StopSignal != "" || len(c.ExposedPorts) > 0
	}
	return out, nil
}

// ImageEnv is the environment an image sets.
func (e *Engine) ImageEnv(ctx context.Context, image string) (map[string]string, error) {
	img, err := e.cli.ImageInspect(ctx, image)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return nil, fmt.Errorf("image %s: %w", image, engine.ErrNotFound)
		}
		return nil, fmt.Errorf("docker engine at %s: inspect image %s: %w", e.host, image, err)
	}
	out := map[string]string{}
	if img.Config != nil {
		for _, kv := range img.Config.Env {
			if k, v, ok := strings.Cut(kv, "="); ok {
				out[k] = v
			}
		}
	}
	return out, nil
}

var _ engine.Runtime = (*Engine)(nil)

// ProbeHost is the address where ports published by the engine at host are reached: the
// loopback address for a local socket, the engine's host name for a TCP or SSH engine.
func ProbeHost(host string) string {
	u, err := url.Parse(host)
	if err != nil || u.Scheme == "unix" || u.Scheme == "npipe" || u.Hostname() == "" {
		return "127.0.0.1"
	}
	return u.Hostname()
}

// KeyVolume is the volume that keeps a project's key (as a label: it holds no data).
func KeyVolume(project string) string { return project + "-deployer-key" }

// ProjectKey returns the project's random key, kept as a label of a volume of its own
// (<project>-deployer-key), made on first use: the engine creates a name once, so concurrent
// first runs agree on one key. The volume holds no data.
func (e *Engine) ProjectKey(ctx context.Context, project string) ([]byte, error) {
	key, err := e.ReadProjectKey(ctx, project)
	if key != nil || err != nil {
		return key, err
	}
	key = make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	if _, err := e.cli.VolumeCreate(ctx, volume.CreateOptions{Name: KeyVolume(project),
		Labels: map[string]string{engine.LabelProject: project, engine.LabelKey: hex.EncodeToString(key)}}); err != nil {
		return nil, fmt.Errorf("docker engine at %s: make the project's key: %w", e.host, err)
	}
	// Read it back: a volume of that name made meanwhile keeps its own label.
	if key, err = e.ReadProjectKey(ctx, project); err == nil && key == nil {
		err = fmt.Errorf("docker engine at %s: the project's key volume %s is gone as soon as made", e.host, KeyVolume(project))
	}
	return key, err
}

// ReadProjectKey returns the project's key, nil when it has none yet (nothing was applied).
func (e *Engine) ReadProjectKey(ctx context.Context, project string) ([]byte, error) {
	name := KeyVolume(project)
	v, err := e.cli.VolumeInspect(ctx, name)
	if errdefs.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("docker engine at %s: read the project's key: %w", e.host, err)
	}
	if owner := v.Labels[engine.LabelProject]; owner != project {
		// Another project's volume (one of its services may name a volume so): its label is
		// no key of this project's, and taking it for one would leak nothing but mislead.
		whose := fmt.Sprintf("project %q", owner)
		if owner == "" {
			whose = "no project: it was not made by the deployer"
		}
		return nil, fmt.Errorf("docker engine at %s: the volume %s, where project %q keeps its key, is labelled for %s: rename the project, or remove that volume if it is a leftover", e.host, name, project, whose)
	}
	key, err := hex.DecodeString(v.Labels[engine.LabelKey])
	if err != nil || len(key) < 16 {
		return nil, fmt.Errorf("docker engine at %s: volume %s holds no valid key (label %s): remove it (`docker volume rm %s`) and run again", e.host, name, engine.LabelKey, name)
	}
	return key, nil
}

// RemoveProjectKey removes the project's key volume; one that is gone already is not an error.
func (e *Engine) RemoveProjectKey(ctx context.Context, project string) error {
	if _, err := e.ReadProjectKey(ctx, project); err != nil {
		return err // not the project's key: left alone
	}
	return e.RemoveVolume(ctx, KeyVolume(project))
}

// Networks lists the networks labelled with the project.
func (e *Engine) Networks(ctx context.Context, project string) ([]string, error) {
	list, err := e.cli.NetworkList(ctx, network.ListOptions{Filters: filters.NewArgs(filters.Arg("label", engine.LabelProject+"="+project))})
	if err != nil {
		return nil, fmt.Errorf("docker engine at %s: list networks: %w", e.host, err)
	}
	var out []string
	for _, n := range list {
		out = append(out, n.Name)
	}
	sort.Strings(out)
	return out, nil
}

// networkSettleTimeout bounds how long RemoveNetwork waits for the engine to let go of the
// endpoints of containers that are gone already.
const networkSettleTimeout = 20 * time.Second

// RemoveNetwork removes a network; one that is gone already is not an error. Right after its
// containers are removed the engine may still report "active endpoints" while it tears their
// endpoints down: the removal is then tried again, for a bounded time, as long as no container
// that still exists is connected. One that is connected is an error at once, naming it.
func (e *Engine) RemoveNetwork(ctx context.Context, name string) error {
	deadline := time.Now().Add(networkSettleTimeout)
	wait := 50 * time.Millisecond
	for {
		err := e.cli.NetworkRemove(ctx, name)
		if err == nil || isNotFound(err) {
			return nil
		}
		if !strings.Contains(err.Error(), "active endpoints") || time.Now().After(deadline) {
			return fmt.Errorf("remove network %s: %w", name, err)
		}
		if held := e.networkHolders(ctx, name); held != "" {
			return fmt.Errorf("remove network %s: %s still connected to it: %w", name, held, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("remove network %s: %w", name, err)
		case <-time.After(wait):
		}
		wait = min(wait*2, time.Second)
	}
}

// networkHolders names the containers connected to a network that still exist (or cannot be
// told gone), as "container X" or "containers X, Y"; an endpoint whose container is gone is
// one the engine has yet to tear down.
func (e *Engine) networkHolders(ctx context.Context, name string) string {
	n, err := e.cli.NetworkInspect(ctx, name, network.InspectOptions{})
	if err != nil {
		return ""
	}
	var out []string
	for id, c := range n.Containers {
		if _, err := e.cli.ContainerInspect(ctx, id); !isNotFound(err) {
			label := c.Name
			if label == "" {
				label = short(id)
			}
			out = append(out, label)
		}
	}
	sort.Strings(out)
	switch len(out) {
	case 0:
		return ""
	case 1:
		return "container " + out[0] + " is"
	}
	return "containers " + strings.Join(out, ", ") + " are"
}

// Volumes lists the volumes labelled with the project (its key's, the deployer's scratch
// volumes, the services' volumes it created).
func (e *Engine) Volumes(ctx context.Context, project string) ([]engine.Volume, error) {
	resp, err := e.cli.VolumeList(ctx, volume.ListOptions{Filters: filters.NewArgs(filters.Arg("label", engine.LabelProject+"="+project))})
	if err != nil {
		return nil, fmt.Errorf("docker engine at %s: list volumes: %w", e.host, err)
	}
	var out []engine.Volume
	for _, v := range resp.Volumes {
		if v != nil {
			out = append(out, engine.Volume{Name: v.Name, Labels: v.Labels})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// InspectVolume reports a volume by name, with its labels.
func (e *Engine) InspectVolume(ctx context.Context, name string) (*engine.Volume, error) {
	v, err := e.cli.VolumeInspect(ctx, name)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return nil, fmt.Errorf("volume %s: %w", name, engine.ErrNotFound)
		}
		return nil, fmt.Errorf("docker engine at %s: inspect volume %s: %w", e.host, name, err)
	}
	return &engine.Volume{Name: v.Name, Labels: v.Labels}, nil
}

// CreateVolume makes a labelled volume for the deployer's own use; an existing one is kept.
func (e *Engine) CreateVolume(ctx context.Context, name string, labels map[string]string) error {
	if v, err := e.cli.VolumeInspect(ctx, name); err == nil {
		for k, want := range labels {
			if v.Labels[k] != want {
				return fmt.Errorf("%w: a volume named %s exists that the deployer did not make for this", engine.ErrNameTaken, name)
			}
		}
		return nil
	}
	if _, err := e.cli.VolumeCreate(ctx, volume.CreateOptions{Name: name, Labels: labels}); err != nil {
		return fmt.Errorf("create volume %s: %w", name, err)
	}
	return nil
}
