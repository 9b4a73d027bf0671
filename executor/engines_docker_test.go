package executor_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor"
	"github.com/deployer-dev/deployer/executor/docker"
	"github.com/deployer-dev/deployer/executor/docker/dockertest"
	"github.com/deployer-dev/deployer/executor/plan"
)

// The proxy and the checks where the engine is not a plain local one: after a reboot, on a
// network of an earlier version, on another machine, over ssh.

// A host reboot: the engine starts the proxy and the live release again, in no particular
// order, while something else joins the network. The live release comes back at its address,
// so the proxy's saved route still leads to it, without an apply.
func TestProxyRouteSurvivesRestart(t *testing.T) {
	r := proxyRig(t)
	ctx := context.Background()
	for _, v := range []string{"v1", "v2"} {
		if so := r.apply(r.config(v, proxyMode(nil))); so.Error != "" {
			t.Fatal(so.Error)
		}
	}
	obs, _ := plan.Observe(ctx, r.eng, projectOnly(r.project))
	live, err := r.eng.Inspect(ctx, obs.Services["app"].Live.ID)
	if err != nil {
		t.Fatal(err)
	}
	network := plan.NetworkName(r.project)
	before := live.IPs[network]
	if before == "" || live.Spec.Labels[plan.LabelAddress] != before || live.Spec.IP != before {
		t.Fatalf("the live release has no fixed address: %v, label %q, spec %q", live.IPs, live.Spec.Labels[plan.LabelAddress], live.Spec.IP)
	}
	r.eng.StopContainer(ctx, obs.Proxy.ID, 5*time.Second)
	r.eng.StopContainer(ctx, live.ID, 5*time.Second)

	// Something else starts on the network first, as may happen at boot.
	other, err := r.eng.CreateContainer(ctx, executor.ContainerSpec{Name: r.project + "-other", Image: r.image, Network: network})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.eng.RemoveContainer(context.Background(), other) })
	if err := r.eng.StartContainer(ctx, other); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{live.ID, obs.Proxy.ID} {
		if err := r.eng.StartContainer(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	after, _ := r.eng.Inspect(ctx, live.ID)
	if after.IPs[network] != before {
		t.Errorf("the live release came back at %s, was %s", after.IPs[network], before)
	}
	got := ""
	for i := 0; i < 100 && got != "version=v2"; i++ {
		time.Sleep(100 * time.Millisecond)
		got = r.get("/")
	}
	if got != "version=v2" {
		t.Errorf("through the restarted proxy: %q", got)
	}
}

// A network made by an earlier deployer has no fixed range: releases get the engine's
// addresses, and deploys work as before.
func TestProxyOnNetworkWithoutFixedRange(t *testing.T) {
	r := proxyRig(t)
	ctx := context.Background()
	dockertest.OldNetwork(t, r.eng, r.project)
	for _, v := range []string{"v1", "v2"} {
		if so := r.apply(r.config(v, proxyMode(nil))); so.Error != "" {
			t.Fatal(so.Error)
		}
	}
	if got := r.get("/"); got != "version=v2" {
		t.Errorf("through the proxy: %q", got)
	}
	obs, _ := plan.Observe(ctx, r.eng, projectOnly(r.project))
	if a := obs.Services["app"].Live.Labels[plan.LabelAddress]; a != "" {
		t.Errorf("a fixed address on a network without a fixed range: %s", a)
	}
}

// An engine on another machine: candidates publish their ports on that machine's 127.0.0.1,
// out of the deployer's reach, so the checks run from the proxy on the engine's host. The
// engine is this one, reached over TCP at 127.0.0.2, an address where the candidates' ports
// do not answer, as from another machine.
func TestRemoteEngineChecksFromProxy(t *testing.T) {
	r := newRig(t)
	r.self = staticDeployer(t)
	u, err := url.Parse(r.eng.Host())
	if err != nil || u.Scheme != "unix" {
		t.Skipf("the engine is not on a local socket: %s", r.eng.Host())
	}
	l, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				e, err := net.Dial("unix", u.Path)
				if err != nil {
					return
				}
				defer e.Close()
				go io.Copy(e, c)
				io.Copy(c, e)
			}()
		}
	}()
	remote, err := docker.New("tcp://" + l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer remote.Close()
	// 127.0.0.2 is this machine all the same: the engine is declared remote, as an engine
	// block's engine is.
	r.eng, r.probe, r.remote = remote, docker.ProbeHost(remote.Host()), true
	if r.probe != "127.0.0.2" {
		t.Fatalf("probe host %q", r.probe)
	}

	for _, v := range []string{"v1", "v2"} {
		r.events = nil
		if so := r.apply(r.config(v, nil)); so.Error != "" {
			t.Fatalf("%s: %s", v, so.Error)
		}
	}
	if got := r.get("/"); got != "version=v2" {
		t.Errorf("after two deploys: %q", got)
	}
	ranProxy := false
	for _, e := range r.events {
		ranProxy = ranProxy || e.Type == executor.EventStep && e.Step == string(plan.StepProxy) && e.Phase == "end"
	}
	if !ranProxy {
		t.Error("no proxy step")
	}
	// A failing candidate is reported with what it answered, as on a local engine.
	so := r.apply(r.config("v3", func(s *config.Service) { s.Env["APP_MODE"] = "unhealthy"; s.HealthCheck.Deadline = 5 * time.Second }))
	if !strings.Contains(so.Error, "status 500") || !strings.Contains(so.Error, "db locked") {
		t.Errorf("error: %s", so.Error)
	}
	if got := r.get("/"); got != "version=v2" {
		t.Errorf("after the failed deploy: %q", got)
	}
}

// An engine at ssh://user@host: every API call goes through `ssh host docker system
// dial-stdio`, here to an sshd on 127.0.0.1 in front of this machine's engine. Two deploys and a
// rollback use the whole API: create, start, exec (hooks), logs, copy, rename and remove.
func TestSSHEngine(t *testing.T) {
	r := newRig(t)
	host, sshCmd := dockertest.SSHD(t)
	t.Setenv("DEPLOYER_SSH_COMMAND", sshCmd)
	eng, err := docker.New(host)
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	if err := eng.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	if eng.Host() != host {
		t.Errorf("the engine is named %q, want %q", eng.Host(), host)
	}
	r.eng = eng
	hook := func(s *config.Service) {
		s.Hooks = []*config.Hook{{When: "before_cutover", Command: []string{"exit", "0"}}}
	}
	for _, v := range []string{"v1", "v2"} {
		if so := r.apply(r.config(v, hook)); so.Error != "" {
			t.Fatalf("%s over ssh: %s", v, so.Error)
		}
	}
	if got := r.get("/"); got != "version=v2" {
		t.Errorf("after two deploys over ssh: %q", got)
	}
	// A candidate that exits shows its logs, read over ssh.
	so := r.apply(r.config("v3", func(s *config.Service) { s.Env["APP_MODE"] = "crash" }))
	if !strings.Contains(so.Error, "exited with code 3") || !strings.Contains(so.Error, "database unreachable") {
		t.Errorf("a crashing candidate over ssh: %s", so.Error)
	}
}

// A wrong ssh:// address, or an ssh that cannot log in, says so in one line.
func TestSSHEngineErrors(t *testing.T) {
	for _, c := range []struct{ host, want string }{
		{"ssh://", "names no host"},
		{"ssh://deploy:hunter2@web1", "no password in the address"},
		{"ssh://deploy@web1/var/run/docker.sock", "without a path"},
	} {
		_, err := docker.New(c.host)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: %v, want %q", c.host, err, c.want)
		}
	}
	t.Setenv("DEPLOYER_SSH_COMMAND", "ssh -o ConnectTimeout=2 -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null")
	eng, err := docker.New(fmt.Sprintf("ssh://nobody@127.0.0.1:%d", dockertest.FreePort(t)))
	if err != nil {
		t.Fatal(err)
	}
	err = eng.Ping(context.Background())
	if err == nil || !strings.Contains(err.Error(), "does not answer") || !strings.Contains(err.Error(), "Connection refused") {
		t.Errorf("ping through a refused ssh: %v", err)
	}
}

// quickSSHTimeouts, added to DEPLOYER_SSH_COMMAND, make ssh give up on a host that hangs in
// seconds: 1s x 2 of keepalive, 2s to connect.
const quickSSHTimeouts = " -o ServerAliveInterval=1 -o ServerAliveCountMax=2 -o ConnectTimeout=2"

// A host that hangs mid-apply (its sshd and everything under it stopped: nothing answers and
// nothing closes) fails the call in seconds instead of waiting on TCP for many minutes: ssh's
// keepalive gives up on a connection open before, its connect timeout on a new one, and the
// error says which. Here 1s x 2 and 2s, given in DEPLOYER_SSH_COMMAND, whose options win over
// the deployer's own (10s x 3, 15s).
func TestSSHEngineHangs(t *testing.T) {
	host, sshCmd, freeze := dockertest.FreezableSSHD(t)
	t.Setenv("DEPLOYER_SSH_COMMAND", sshCmd+quickSSHTimeouts)
	eng, err := docker.New(host)
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	hungCall(t, eng, "its sshd stopped", freeze, 0, 15*time.Second, "not responding", "timed out")
}

// hungCall makes a call to the engine (a connection, kept for the next call), then one after
// stop makes its host hang: that one must fail after between min and max, saying one of the
// words. Once what stop returns undoes it, a call succeeds again.
func hungCall(t *testing.T, eng *docker.Engine, what string, stop func() func(), min, max time.Duration, words ...string) {
	t.Helper()
	list := func() error {
		_, err := eng.Containers(context.Background(), "no-such-project")
		return err
	}
	if err := list(); err != nil {
		t.Fatal(err)
	}
	undo := stop()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- list() }()
	select {
	case err := <-done:
		d := time.Since(start)
		t.Logf("%s: the call failed after %s: %v", what, d.Round(100*time.Millisecond), err)
		if err == nil || !slices.ContainsFunc(words, func(w string) bool { return strings.Contains(err.Error(), w) }) {
			t.Errorf("%s: %v, want it to say %q", what, err, words)
		}
		if d < min || d > max {
			t.Errorf("%s: the call failed after %s, want %s to %s", what, d.Round(100*time.Millisecond), min, max)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("%s: a call still waits after 60s", what)
	}
	undo()
	if err := list(); err != nil {
		t.Errorf("%s, then back: %v", what, err)
	}
}

// A tcp:// engine that stops answering fails the call within the engine bound
// (DEPLOYER_ENGINE_TIMEOUT, here 3s: 30s by default, as ssh's), naming the engine, whether its
// daemon is stopped (SIGSTOP: its host's kernel still accepts connections and acknowledges every
// byte, so TCP alone waits forever) or its packets are dropped (a host gone from the network);
// and the engine serves again once it answers. Silence is what is bounded, not a call's
// length: a call that waits longer than the bound on an engine that answers its pings (a
// container waited for) goes on.
func TestTCPEngineHangs(t *testing.T) {
	main := dockertest.Engine(t)
	h := dockertest.HostEngines(t, 1)[0]
	host, freeze, drop := h.TCP(t)
	const bound = 3 * time.Second
	t.Setenv(docker.EnvEngineTimeout, bound.String())
	eng, err := docker.New(host)
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	ctx := context.Background()
	hungCall(t, eng, "its daemon stopped", freeze, bound, 2*bound, "docker engine at "+host+" does not answer")
	hungCall(t, eng, "its packets dropped", drop, bound, 2*bound, "docker engine at "+host+" does not answer")

	h.LoadFrom(t, main, dockertest.AppImage(t, main))
	id, err := eng.CreateContainer(ctx, executor.ContainerSpec{Name: "hang-wait", Image: dockertest.AppImage(t, main)})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.RemoveContainer(ctx, id)
	if err := eng.StartContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waited := make(chan error, 1)
	go func() {
		_, err := eng.Wait(ctx, id)
		waited <- err
	}()
	select {
	case err := <-waited:
		t.Fatalf("the wait ended before the container stopped: %v", err)
	case <-time.After(3 * bound):
	}
	if err := eng.StopContainer(ctx, id, time.Second); err != nil {
		t.Fatal(err)
	}
	if err := <-waited; err != nil {
		t.Errorf("a wait of %s on an engine that answers: %v", time.Since(start).Round(time.Second), err)
	}
}
