package memengine

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/deployer-dev/deployer/executor/proxy"
)

// Proxy runs the deployer's proxy, as `deployer proxy serve` does in its container: a
// proxy.Server behind its real control socket, keeping its routes in the /state volume, and
// answering the `deployer proxy ctl REQUEST` execs and `deployer proxy ctl -` sessions the
// deployer sends. Its routes bind 127.0.0.1.
func Proxy(ctx context.Context, p *Process) int { return proxyProgram(ctx, p, true) }

// ProxyWithoutSessions is the proxy of a deployer from before `deployer proxy ctl -`: it
// answers one request per exec, and a session exits at once.
func ProxyWithoutSessions(ctx context.Context, p *Process) int { return proxyProgram(ctx, p, false) }

func proxyProgram(ctx context.Context, p *Process, sessions bool) int {
	if len(p.Cmd) > 0 && p.Cmd[0] == "internal" {
		// The deployer's helper commands (snapshots, restores) need a real filesystem: this
		// image answers as a deployer without them would.
		p.Printf("Error: unknown command %q for \"deployer internal\"", p.Cmd[1:])
		return 1
	}
	dir, err := os.MkdirTemp("", "memproxy") // short: a unix socket's path is
	if err != nil {
		p.Printf("deployer proxy: %v", err)
		return 1
	}
	defer os.RemoveAll(dir)
	socket := filepath.Join(dir, "ctl.sock")
	srv := proxy.NewServer()
	srv.BindHost = p.HostIP
	if state, ok := p.Path("/state/routes.json"); ok {
		srv.StateFile = state
	}
	p.OnExec(func(ctx context.Context, cmd []string) (string, int) {
		if len(cmd) != 4 || cmd[1] != "proxy" || cmd[2] != "ctl" {
			return "unknown command", 127
		}
		req, err := proxy.ParseRequest(cmd[3])
		if err != nil {
			return "Error: control request: " + err.Error(), 1
		}
		resp, err := proxy.Ctl(socket, req)
		if err != nil {
			return "Error: " + err.Error(), 1
		}
		b, _ := json.Marshal(resp)
		return string(b) + "\n", 0
	})
	p.OnExecSession(func(cmd []string, stdin io.Reader, stdout io.Writer) bool {
		if !sessions || len(cmd) != 4 || cmd[1] != "proxy" || cmd[2] != "ctl" || cmd[3] != proxy.SessionArg {
			return false
		}
		proxy.CtlSession(socket, stdin, stdout)
		return true
	})
	p.Printf("deployer proxy (in memory): control on %s", socket)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, socket, 5*time.Second) }()
	select {
	case err = <-done:
	case <-p.Killed():
		srv.Close()
		return 137
	}
	if err != nil {
		p.Printf("deployer proxy: %v", err)
		return 1
	}
	return 0
}
