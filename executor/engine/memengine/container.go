package memengine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/deployer-dev/deployer/executor/engine"
)

// container is one container: its spec, and while it runs, its program and port forwarders.
type container struct {
	e       *Engine
	id      string
	name    string
	spec    engine.ContainerSpec
	image   *image
	created time.Time
	addr    string            // where its program listens
	mounts  map[string]string // target -> volume directory

	// Guarded by e.mu.
	state    string // created, running, paused, exited
	exitCode int
	restarts int
	ports    map[int]int // container port -> host port, while running
	stopping bool
	proc     *Process
	done     chan struct{} // closed when the program has ended
	logs     bytes.Buffer
	fwd      []net.Listener
}

func (c *container) summary() engine.Container {
	s := engine.Container{ID: c.id, Name: c.name, Image: c.spec.Image, ImageID: c.image.id, State: c.state, Status: c.state,
		Labels: copyMap(c.spec.Labels), Created: c.created}
	for _, v := range c.spec.Volumes {
		s.Mounts = append(s.Mounts, v.Name)
	}
	if c.state == "running" || c.state == "paused" {
		for _, p := range c.spec.Ports {
			s.Published = append(s.Published, engine.Published{HostIP: p.HostIP, HostPort: c.ports[p.Container]})
		}
	}
	return s
}

func copyMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// CreateContainer creates a container; its volumes are made on first use.
func (e *Engine) CreateContainer(_ context.Context, s engine.ContainerSpec) (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.check("create", s.Name); err != nil {
		return "", err
	}
	img := e.image(s.Image)
	if img == nil {
		return "", fmt.Errorf("create %s: no such image: %s", s.Name, s.Image)
	}
	if s.Name != "" && e.find(s.Name) != nil {
		return "", engine.ErrNameTaken
	}
	if _, ok := e.networks[s.Network]; s.Network != "" && !ok {
		return "", fmt.Errorf("create %s: network %s not found", s.Name, s.Network)
	}
	c := &container{e: e, name: s.Name, spec: s, image: img, created: time.Now(), state: "created", mounts: map[string]string{}}
	// A container inherits its image's labels, under its own, as Docker's do.
	c.spec.Labels, c.spec.Env = copyMap(img.labels), copyMap(s.Env)
	for k, v := range s.Labels {
		c.spec.Labels[k] = v
	}
	e.nextID++
	c.id = fmt.Sprintf("%064x", 1<<40+e.nextID)
	for _, v := range s.Volumes {
		dir, err := e.volume(v.Name)
		if err != nil {
			return "", err
		}
		c.mounts[v.Target] = dir
	}
	c.addr = s.IP
	if c.addr == "" {
		addr, err := e.address()
		if err != nil {
			return "", fmt.Errorf("create %s: %w", s.Name, err)
		}
		c.addr = addr
	}
	e.containers[c.id] = c
	return c.id, nil
}

// get finds a container for an operation, or says why not; called with e.mu held.
func (e *Engine) get(op, id string) (*container, error) {
	c := e.find(id)
	name := id
	if c != nil {
		name = c.name
	}
	if err := e.check(op, name); err != nil {
		return nil, err
	}
	if c == nil {
		return nil, fmt.Errorf("%s %s: %w", op, id, engine.ErrNotFound)
	}
	return c, nil
}

// StartContainer publishes the container's ports and starts its program.
func (e *Engine) StartContainer(_ context.Context, id string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	c, err := e.get("start", id)
	if err != nil {
		return err
	}
	if c.state == "running" || c.state == "paused" {
		return nil
	}
	if holder := e.holder(c.spec.Network, c.addr, c); holder != nil {
		return fmt.Errorf("start %s: Address already in use (%s on network %s, held by %s)", c.name, c.addr, c.spec.Network, holder.name)
	}
	if err := c.publish(); err != nil {
		return err
	}
	c.stopping = false
	c.run()
	return nil
}

// publish opens a forwarder on 127.0.0.1 for each published port; called with e.mu held.
func (c *container) publish() error {
	c.ports = map[int]int{}
	for _, p := range c.spec.Ports {
		ln, err := net.Listen("tcp", net.JoinHostPort(c.e.hostIP(), strconv.Itoa(p.HostPort)))
		if err != nil {
			c.unpublish()
			return fmt.Errorf("start %s: Bind for 0.0.0.0:%d failed: port is already allocated (%v)", c.name, p.HostPort, err)
		}
		c.fwd = append(c.fwd, ln)
		c.ports[p.Container] = ln.Addr().(*net.TCPAddr).Port
		go c.forward(ln, p.Container)
	}
	return nil
}

func (c *container) unpublish() {
	for _, ln := range c.fwd {
		ln.Close()
	}
	c.fwd, c.ports = nil, nil
}

// forward passes every connection on ln to the container's port, as the engine's port
// publishing does: a connection to a port the container's program does not listen on is
// closed. The address is a loopback one of this machine, where a listener on all addresses
// (the quickstart's proxy on *:8080) would answer in the program's place: a published port
// never reaches past its container.
func (c *container) forward(ln net.Listener, port int) {
	target := net.JoinHostPort(c.addr, strconv.Itoa(port))
	for {
		in, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer in.Close()
			if !c.listens(port) {
				return
			}
			out, err := net.DialTimeout("tcp", target, 2*time.Second)
			if err != nil {
				return
			}
			defer out.Close()
			done := make(chan struct{}, 2)
			go func() { io.Copy(out, in); closeWrite(out); done <- struct{}{} }()
			go func() { io.Copy(in, out); closeWrite(in); done <- struct{}{} }()
			<-done
			<-done
		}()
	}
}

// listens reports whether the container's program listens on the port now.
func (c *container) listens(port int) bool {
	c.e.mu.Lock()
	p := c.proc
	c.e.mu.Unlock()
	return p != nil && p.listensOn(port)
}

func closeWrite(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
}

// run starts the program; when it ends by itself, the restart policy may start it again.
// Called with e.mu held.
func (c *container) run() {
	ctx, cancel := context.WithCancel(context.Background())
	p := &Process{Cmd: c.spec.Cmd, Env: c.env(), Addr: c.addr, Name: c.name, HostIP: c.e.hostIP(), mounts: c.mounts, out: &logWriter{c: c}, cancel: cancel}
	done := make(chan struct{})
	c.proc, c.done, c.state = p, done, "running"
	go func() {
		code := c.image.prog(ctx, p)
		p.closeListeners()
		cancel()
		c.e.mu.Lock()
		defer c.e.mu.Unlock()
		close(done)
		if c.proc != p {
			return // killed and replaced meanwhile
		}
		c.exitCode, c.state, c.proc = code, "exited", nil
		if !c.stopping && c.spec.Restart == "unless-stopped" && c.e.containers[c.id] != nil {
			c.restarts++
			c.run()
			return
		}
		c.unpublish()
	}()
}

func (c *container) env() map[string]string {
	env := copyMap(c.image.env)
	for k, v := range c.spec.Env {
		env[k] = v
	}
	return env
}

// StopContainer asks the program to stop (its context ends), and kills it after timeout.
func (e *Engine) StopContainer(ctx context.Context, id string, timeout time.Duration) error {
	e.mu.Lock()
	c, err := e.get("stop", id)
	if err != nil || c.proc == nil {
		e.mu.Unlock()
		return err
	}
	c.stopping = true
	p, done := c.proc, c.done
	e.mu.Unlock()
	p.cancel()
	select {
	case <-done:
	case <-time.After(timeout):
		c.kill()
	case <-ctx.Done():
		c.kill()
	}
	return nil
}

// kill ends the container at once, as SIGKILL does: exit code 137.
func (c *container) kill() {
	c.e.mu.Lock()
	defer c.e.mu.Unlock()
	c.stopping = true
	if p := c.proc; p != nil {
		p.markKilled() // first: a program sees a kill, not a stop (SIGKILL, no graceful end)
		p.cancel()
		p.closeListeners()
		c.proc, c.state, c.exitCode = nil, "exited", 137
	}
	c.unpublish()
}

// RemoveContainer kills and removes a container; one that does not exist is no error. Volumes
// stay.
func (e *Engine) RemoveContainer(_ context.Context, id string) error {
	e.mu.Lock()
	c, err := e.get("remove", id)
	e.mu.Unlock()
	if errors.Is(err, engine.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	c.kill()
	e.mu.Lock()
	delete(e.containers, c.id)
	e.mu.Unlock()
	return nil
}

// RenameContainer gives a container another name.
func (e *Engine) RenameContainer(_ context.Context, id, name string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	c, err := e.get("rename", id)
	if err != nil {
		return err
	}
	if c.name == name {
		return fmt.Errorf("rename %s: renaming a container with the same name as its current name", c.name)
	}
	if e.find(name) != nil {
		return fmt.Errorf("rename %s to %s: the name is already in use", c.name, name)
	}
	c.name = name
	return nil
}

// SetRestart sets the restart policy.
func (e *Engine) SetRestart(_ context.Context, id, policy string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	c, err := e.get("restart-policy", id)
	if err != nil {
		return err
	}
	c.spec.Restart = policy
	return nil
}

// Inspect reports a container.
func (e *Engine) Inspect(_ context.Context, id string) (*engine.ContainerState, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	c, err := e.get("inspect", id)
	if err != nil {
		return nil, err
	}
	spec := c.spec
	spec.Name, spec.Labels, spec.Env = c.name, copyMap(c.spec.Labels), copyMap(c.spec.Env)
	st := &engine.ContainerState{ID: c.id, Name: c.name, Running: c.state == "running" || c.state == "paused", Status: c.state,
		ExitCode: c.exitCode, Restarts: c.restarts, Ports: map[int]int{}, ImageID: c.image.id, Spec: spec, IPs: map[string]string{}}
	for k, v := range c.ports {
		st.Ports[k] = v
	}
	if c.spec.Network != "" {
		st.IPs[c.spec.Network] = c.addr
	}
	return st, nil
}

// Logs returns the last lines of the container's output.
func (e *Engine) Logs(_ context.Context, id string, lines int) (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	c, err := e.get("logs", id)
	if err != nil {
		return "", err
	}
	all := strings.Split(strings.TrimRight(c.logs.String(), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n"), nil
}

// LogStream returns the container's whole output.
func (e *Engine) LogStream(_ context.Context, id string) (io.ReadCloser, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	c, err := e.get("logs", id)
	if err != nil {
		return nil, err
	}
	return io.NopCloser(bytes.NewReader(append([]byte(nil), c.logs.Bytes()...))), nil
}

// Wait waits for the container's program to end and returns its exit code.
func (e *Engine) Wait(ctx context.Context, id string) (int, error) {
	e.mu.Lock()
	c, err := e.get("wait", id)
	if err != nil {
		e.mu.Unlock()
		return 0, err
	}
	done := c.done
	running := c.proc != nil
	e.mu.Unlock()
	if running {
		select {
		case <-done:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return c.exitCode, nil
}

// Pause and Unpause mark the container paused: its program is told (Process.Paused).
func (e *Engine) Pause(_ context.Context, id string) error   { return e.pause(id, true) }
func (e *Engine) Unpause(_ context.Context, id string) error { return e.pause(id, false) }

func (e *Engine) pause(id string, paused bool) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	c, err := e.get("pause", id)
	if err != nil {
		return err
	}
	if c.proc == nil {
		return fmt.Errorf("pause %s: container is not running", c.name)
	}
	c.state = "running"
	if paused {
		c.state = "paused"
	}
	c.proc.setPaused(paused)
	return nil
}

// Exec runs a command in a running container, through the handler its program set.
func (e *Engine) Exec(ctx context.Context, id string, cmd []string) (string, int, error) {
	c, p, err := e.execIn(id, &e.execs.OneShot)
	if err != nil {
		return "", 0, err
	}
	h := p.execHandler()
	if h == nil {
		return "", 0, fmt.Errorf("exec in %s: %q: executable file not found", c.name, strings.Join(cmd, " "))
	}
	out, code := h(ctx, cmd)
	return out, code, nil
}

// execIn finds the running container an exec goes into, and counts the exec in counts.
func (e *Engine) execIn(id string, counts ...*int) (*container, *Process, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	c, err := e.get("exec", id)
	if err != nil {
		return nil, nil, err
	}
	if c.proc == nil {
		return nil, nil, fmt.Errorf("exec in %s: container is not running", c.name)
	}
	for _, n := range counts {
		*n++
	}
	return c, c.proc, nil
}

// ExecSession runs a command with its stdin and stdout kept open: the process's session
// handler answers it; without one (or for a command it does not run) the exec ends at once,
// its one-shot output as the error its reads end with. A kill of the container ends it.
func (e *Engine) ExecSession(ctx context.Context, id string, cmd []string) (io.ReadWriteCloser, error) {
	c, p, err := e.execIn(id, &e.execs.Sessions, &e.execs.Open)
	if err != nil {
		return nil, err
	}
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	s := &session{in: inW, out: outR, outW: outW, done: make(chan struct{})}
	s.check = func() error {
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.check("exec", c.name)
	}
	go func() {
		select {
		case <-p.Killed():
			inR.Close()
			outW.CloseWithError(io.EOF)
		case <-s.done:
		}
	}()
	go func() {
		defer func() {
			outW.Close()
			e.mu.Lock()
			e.execs.Open--
			e.mu.Unlock()
		}()
		if h := p.sessionHandler(); h != nil && h(cmd, inR, outW) {
			return
		}
		msg := fmt.Sprintf("%q: executable file not found", strings.Join(cmd, " "))
		if h := p.execHandler(); h != nil {
			msg, _ = h(context.WithoutCancel(ctx), cmd)
		}
		outW.CloseWithError(fmt.Errorf("exec in %s ended: %s", c.name, strings.TrimSpace(msg)))
	}()
	return s, nil
}

type session struct {
	in    *io.PipeWriter
	out   *io.PipeReader
	outW  *io.PipeWriter
	check func() error // a planned fault, or a frozen engine
	done  chan struct{}
	once  sync.Once
}

func (s *session) Read(b []byte) (int, error) { return s.out.Read(b) }

// Write sends a request; a planned "exec" fault fails it and ends the session.
func (s *session) Write(b []byte) (int, error) {
	if err := s.check(); err != nil {
		s.in.CloseWithError(err)
		s.outW.CloseWithError(err)
		return 0, err
	}
	return s.in.Write(b)
}
func (s *session) Close() error {
	s.once.Do(func() { close(s.done) })
	s.in.Close()
	s.out.Close()
	return nil
}

// logWriter appends a program's output to its container's logs.
type logWriter struct{ c *container }

func (w *logWriter) Write(b []byte) (int, error) {
	w.c.e.mu.Lock()
	defer w.c.e.mu.Unlock()
	return w.c.logs.Write(b)
}
