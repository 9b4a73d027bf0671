package memengine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Program is what a container of an image runs. It returns its exit code; ctx ends when the
// container is stopped (the SIGTERM), and a program that does not end then is killed after the
// stop timeout: its listeners close, Killed is closed, its exit code is 137.
type Program func(ctx context.Context, p *Process) int

// Process is a running container as its program sees it.
type Process struct {
	Cmd  []string
	Env  map[string]string
	Addr string // the container's address, where it listens
	Name string // the container's name when it started
	// HostIP is the engine's host address (Engine.HostIP), which host-network programs bind.
	HostIP string

	mounts map[string]string // target -> directory
	out    io.Writer
	cancel context.CancelFunc

	mu        sync.Mutex
	paused    bool
	listeners []net.Listener
	exec      func(ctx context.Context, cmd []string) (string, int)
	session   func(cmd []string, stdin io.Reader, stdout io.Writer) (ok bool)
	kill      chan struct{}
	dead      bool // killed, or its program ended: no more listening
}

// Printf writes a line of output to the container's logs.
func (p *Process) Printf(format string, args ...any) {
	fmt.Fprintf(p.out, strings.TrimSuffix(format, "\n")+"\n", args...)
}

// Output is the container's log.
func (p *Process) Output() io.Writer { return p.out }

// Path maps a path in the container to its file on this machine: paths under a volume's
// target only (the container has no other files). ok is false elsewhere.
func (p *Process) Path(file string) (string, bool) {
	file = path.Clean("/" + file)
	best := ""
	for target := range p.mounts {
		if (file == target || strings.HasPrefix(file, strings.TrimSuffix(target, "/")+"/")) && len(target) > len(best) {
			best = target
		}
	}
	if best == "" {
		return "", false
	}
	return filepath.Join(p.mounts[best], filepath.FromSlash(strings.TrimPrefix(file, best))), true
}

// Listen listens on the container's address. A killed container listens no more.
func (p *Process) Listen(port int) (net.Listener, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.dead {
		return nil, fmt.Errorf("listen on %s:%d: the container was killed", p.Addr, port)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(p.Addr, strconv.Itoa(port)))
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			// The container's address is a loopback one of this machine: a listener on all
			// addresses there holds the port for every container of the engine.
			return nil, fmt.Errorf("%w: something on this machine listens on port %d on all addresses, which the in-memory engine's containers share: give the app another port (APP_PORT)", err, port)
		}
		return nil, err
	}
	p.listeners = append(p.listeners, ln)
	return ln, nil
}

// listensOn reports whether the program listens on the port.
func (p *Process) listensOn(port int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, ln := range p.listeners {
		if a, ok := ln.Addr().(*net.TCPAddr); ok && a.Port == port {
			return true
		}
	}
	return false
}

// OnExec sets what answers an exec in the container.
func (p *Process) OnExec(h func(ctx context.Context, cmd []string) (stdout string, code int)) {
	p.mu.Lock()
	p.exec = h
	p.mu.Unlock()
}

// OnExecSession sets what answers an exec with its stdin and stdout kept open (ExecSession):
// h reads the stdin and writes the stdout until the stdin ends; it returns false at once for a
// command it does not run, which then ends as a one-shot exec of it would.
func (p *Process) OnExecSession(h func(cmd []string, stdin io.Reader, stdout io.Writer) (ok bool)) {
	p.mu.Lock()
	p.session = h
	p.mu.Unlock()
}

func (p *Process) sessionHandler() func([]string, io.Reader, io.Writer) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.session
}

func (p *Process) execHandler() func(context.Context, []string) (string, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exec
}

// Paused reports whether the container is paused.
func (p *Process) Paused() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.paused
}

func (p *Process) setPaused(v bool) {
	p.mu.Lock()
	p.paused = v
	p.mu.Unlock()
}

// closeListeners closes what the program listens on, for good.
func (p *Process) closeListeners() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dead = true
	for _, ln := range p.listeners {
		ln.Close()
	}
	p.listeners = nil
}

// Killed is closed when the container is killed: a program that ignores its context ends then.
func (p *Process) Killed() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.kill == nil {
		p.kill = make(chan struct{})
	}
	return p.kill
}

// markKilled closes killed.
func (p *Process) markKilled() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.kill == nil {
		p.kill = make(chan struct{})
	}
	select {
	case <-p.kill:
	default:
		close(p.kill)
	}
}
