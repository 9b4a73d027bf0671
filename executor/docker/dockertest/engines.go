package dockertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/deployer-dev/deployer/executor/docker"
)

// HostEngine is a Docker engine of a test's own, in a network namespace of its own: a host for
// multi-engine tests. Its 127.0.0.1 is its own; its socket is a file on this machine.
type HostEngine struct {
	Name   string // web1, web2, ...
	NS     string // the network namespace, under /var/run/netns
	Dir    string // its data, exec root, socket and pid file
	Host   string // unix://Dir/docker.sock
	Engine *docker.Engine
	cmd    *exec.Cmd
	addr   string // the namespace's address on the link to this machine, once made
}

// HostEngines starts n engines (web1 ... webN), each in its own network namespace, as
// facts.md describes, and stops and removes them when the test ends. They need root, ip
// (iproute2), nsenter and dockerd; without them the test fails when CI is set (.ci/run
// installs them) and is skipped otherwise. With -short it is skipped.
func HostEngines(t testing.TB, n int) []*HostEngine {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: a test of real Docker engines")
	}
	missing := ""
	for _, tool := range []string{"ip", "nsenter", "dockerd"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing += " " + tool
		}
	}
	if os.Geteuid() != 0 {
		missing += " root"
	}
	if missing != "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("the multi-engine tests need%s (.ci/run installs iproute2, util-linux and docker.io, and runs as root)", missing)
		}
		t.Skipf("the multi-engine tests need%s", missing)
	}
	var b [3]byte
	rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	out := make([]*HostEngine, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range out {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i], errs[i] = startHostEngine(fmt.Sprintf("web%d", i+1), fmt.Sprintf("dt%s-h%d", id, i+1))
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		var wg sync.WaitGroup
		for _, h := range out {
			if h != nil {
				wg.Add(1)
				go func() { defer wg.Done(); h.stop() }()
			}
		}
		wg.Wait()
	})
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func startHostEngine(name, ns string) (*HostEngine, error) {
	dir, err := os.MkdirTemp("", "dte") // short: a unix socket's path is
	if err != nil {
		return nil, err
	}
	h := &HostEngine{Name: name, NS: ns, Dir: dir, Host: "unix://" + filepath.Join(dir, "docker.sock")}
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("ip netns add %s: %v: %s", ns, err, out)
	}
	if out, err := h.Run("ip", "link", "set", "lo", "up"); err != nil {
		h.stop()
		return nil, fmt.Errorf("%s: lo up: %v: %s", ns, err, out)
	}
	// The machine's daemon.json sets data-root, which clashes with the flag: a file of its own.
	os.WriteFile(filepath.Join(dir, "daemon.json"), []byte(`{"storage-driver": "fuse-overlayfs", "mtu": 1400}`), 0o644)
	log, err := os.Create(filepath.Join(dir, "dockerd.log"))
	if err != nil {
		h.stop()
		return nil, err
	}
	defer log.Close()
	// Beside its socket, the API on TCP port 2375 of the namespace, reached from this machine
	// once a link joins it (TCP).
	h.cmd = exec.Command("nsenter", "--net=/var/run/netns/"+ns, "dockerd", "--config-file", filepath.Join(dir, "daemon.json"),
		"--data-root", filepath.Join(dir, "data"), "--exec-root", filepath.Join(dir, "exec"), "-H", h.Host,
		"-H", fmt.Sprintf("tcp://0.0.0.0:%d", tcpPort), "--tls=false",
		"--pidfile", filepath.Join(dir, "docker.pid"), "--containerd-namespace", ns, "--containerd-plugins-namespace", ns+"p")
	h.cmd.Stdout, h.cmd.Stderr = log, log
	if err := h.cmd.Start(); err != nil {
		h.stop()
		return nil, fmt.Errorf("start dockerd in %s: %v", ns, err)
	}
	if h.Engine, err = docker.New(h.Host); err != nil {
		h.stop()
		return nil, err
	}
	for start := time.Now(); ; time.Sleep(200 * time.Millisecond) {
		if h.Engine.Ping(context.Background()) == nil {
			return h, nil
		}
		if time.Since(start) > 60*time.Second {
			text, _ := os.ReadFile(filepath.Join(dir, "dockerd.log"))
			h.stop()
			return nil, fmt.Errorf("dockerd in %s does not answer on %s within 60s: %s", ns, h.Host, lastLines(string(text), 10))
		}
	}
}

// Run runs a command inside the engine's network namespace.
func (h *HostEngine) Run(name string, args ...string) ([]byte, error) {
	return exec.Command("nsenter", append([]string{"--net=/var/run/netns/" + h.NS, name}, args...)...).CombinedOutput()
}

// stop stops the daemon (its containers with it), removes its files and its namespace.
func (h *HostEngine) stop() {
	if h.Engine != nil {
		h.Engine.Close()
	}
	if h.cmd != nil && h.cmd.Process != nil {
		h.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { h.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			h.cmd.Process.Kill()
			<-done
		}
	}
	// What the daemon left mounted (after a kill) goes before its files.
	if raw, err := os.ReadFile("/proc/self/mounts"); err == nil {
		lines := strings.Split(string(raw), "\n")
		for i := len(lines) - 1; i >= 0; i-- {
			if f := strings.Fields(lines[i]); len(f) > 1 && strings.HasPrefix(f[1], h.Dir+"/") {
				unix.Unmount(f[1], unix.MNT_DETACH)
			}
		}
	}
	os.RemoveAll(h.Dir)
	exec.Command("ip", "netns", "del", h.NS).Run()
}

// Client is an HTTP client whose connections are made inside the engine's network namespace:
// its 127.0.0.1 is the engine's.
func (h *HostEngine) Client(timeout time.Duration) *http.Client {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		type res struct {
			c   net.Conn
			err error
		}
		ch := make(chan res, 1)
		go func() {
			// A thread of its own, moved into the namespace; it ends with this goroutine (it
			// stays locked), so no other goroutine ever runs in the namespace.
			runtime.LockOSThread()
			f, err := os.Open("/var/run/netns/" + h.NS)
			if err != nil {
				ch <- res{nil, err}
				return
			}
			defer f.Close()
			if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
				ch <- res{nil, fmt.Errorf("setns %s: %w", h.NS, err)}
				return
			}
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			ch <- res{c, err}
		}()
		r := <-ch
		return r.c, r.err
	}
	return &http.Client{Timeout: timeout, Transport: &http.Transport{DialContext: dial, MaxIdleConnsPerHost: 64}}
}

// Get returns the body of GET url from inside the namespace, or the error.
func (h *HostEngine) Get(url string) string {
	resp, err := h.Client(5 * time.Second).Get(url)
	if err != nil {
		return "error: " + err.Error()
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return strings.TrimSpace(b.String())
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// SSH makes the engine reachable as ssh://USER@ADDR:PORT, as a host on a network is: a veth
// pair joins this machine to the namespace (a /30 of its own), and an sshd started inside the
// namespace, listening on its side, gives its sessions this engine as DOCKER_HOST. It returns
// the engine address and the ssh command (for DEPLOYER_SSH_COMMAND) with the test's key.
func (h *HostEngine) SSH(t testing.TB) (host, sshCommand string) {
	t.Helper()
	host, sshCommand, _ = h.FreezableSSH(t)
	return host, sshCommand
}

// FreezableSSH is SSH, and freeze stops the namespace's sshd and everything under it (as
// FreezableSSHD does): the host hangs for whoever reaches the engine through it.
func (h *HostEngine) FreezableSSH(t testing.TB) (host, sshCommand string, freeze func() (thaw func())) {
	t.Helper()
	host, sshCommand, pid := startSSHD(t, h.link(t), []string{"nsenter", "--net=/var/run/netns/" + h.NS}, h.Host)
	return host, sshCommand, freezer(t, pid)
}

// tcpPort is where each engine of HostEngines serves its API over TCP, in its namespace.
const tcpPort = 2375

// TCP makes the engine reachable as tcp://ADDR:2375, as a host on a network is (its daemon
// listens there; a link joins this machine to the namespace). freeze stops (SIGSTOP) the
// daemon and everything under it: the host's kernel still answers, its daemon never does.
// drop makes the namespace drop every packet to the port: the host is gone from the network.
// What they return, also run at the test's end, undoes them.
func (h *HostEngine) TCP(t testing.TB) (host string, freeze, drop func() (undo func())) {
	t.Helper()
	host = fmt.Sprintf("tcp://%s:%d", h.link(t), tcpPort)
	drop = func() func() {
		rule := []string{"INPUT", "-p", "tcp", "--dport", fmt.Sprint(tcpPort), "-j", "DROP"}
		if out, err := h.Run("iptables", append([]string{"-I"}, rule...)...); err != nil {
			t.Fatalf("iptables in %s: %v: %s", h.NS, err, out)
		}
		done := false
		undo := func() {
			if !done {
				done = true
				h.Run("iptables", append([]string{"-D"}, rule...)...)
			}
		}
		t.Cleanup(undo)
		return undo
	}
	return host, freezer(t, h.cmd.Process.Pid), drop
}

// link joins this machine to the namespace with a veth pair, a /30 of its own, and returns
// the namespace's address on it. The pair goes when the test ends.
func (h *HostEngine) link(t testing.TB) string {
	t.Helper()
	if h.addr != "" {
		return h.addr
	}
	var b [2]byte
	rand.Read(b[:])
	subnet := fmt.Sprintf("10.213.%d.%d", b[0], b[1]&0xfc)
	ip := func(last int) string {
		return subnet[:strings.LastIndexByte(subnet, '.')+1] + fmt.Sprint(int(b[1]&0xfc)+last)
	}
	outer, inner := "v"+h.NS, "i"+h.NS // at most 15 characters
	steps := [][]string{
		{"ip", "link", "add", outer, "type", "veth", "peer", "name", inner},
		{"ip", "link", "set", inner, "netns", h.NS},
		{"ip", "addr", "add", ip(1) + "/30", "dev", outer},
		{"ip", "link", "set", outer, "up"},
		{"nsenter", "--net=/var/run/netns/" + h.NS, "ip", "addr", "add", ip(2) + "/30", "dev", inner},
		{"nsenter", "--net=/var/run/netns/" + h.NS, "ip", "link", "set", inner, "up"},
	}
	t.Cleanup(func() { exec.Command("ip", "link", "del", outer).Run() })
	for _, s := range steps {
		if out, err := exec.Command(s[0], s[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(s, " "), err, out)
		}
	}
	h.addr = ip(2)
	return h.addr
}

// LoadFrom copies an image from another engine into this one (docker save into docker load).
func (h *HostEngine) LoadFrom(t testing.TB, from *docker.Engine, ref string) {
	t.Helper()
	rc, err := from.SaveImage(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if err := h.Engine.LoadImage(context.Background(), rc); err != nil {
		t.Fatalf("load %s into %s: %v", ref, h.Name, err)
	}
}
