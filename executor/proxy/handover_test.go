package proxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// startServe runs a proxy's Serve in the background and waits until its control socket answers.
func startServe(t *testing.T, s *Server, sock string) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, sock, 5*time.Second) }()
	for i := 0; ; i++ {
		if resp, err := Ctl(sock, Request{Op: "ping"}); err == nil {
			if !resp.OK {
				t.Fatalf("ping: %+v", resp)
			}
			break
		}
		if i == 100 {
			t.Fatalf("the proxy on %s does not answer", sock)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

// A proxy replaced by a new one under a stream of requests, on new and on kept-alive
// connections: not one fails. The new proxy serves the old one's listening socket rather than
// a second socket of its own, whose closing would reset what waits in its queue; the old one
// answers every request it has read before it closes a connection.
func TestUpgradeHandsOverSockets(t *testing.T) {
	blue := release(t, "blue")
	dir := t.TempDir()
	newServer := func() *Server {
		s := NewServer()
		s.StateFile = filepath.Join(dir, "routes.json")
		s.Handover = filepath.Join(dir, "handover.sock")
		return s
	}
	listen := freeAddr(t)
	stopOld := startServe(t, newServer(), filepath.Join(dir, "old.sock"))
	if resp, err := Ctl(filepath.Join(dir, "old.sock"), Request{Op: "set", Route: &Route{Name: "web", Listen: listen, Backend: addr(blue)}}); err != nil || !resp.OK {
		t.Fatalf("set: %v %+v", err, resp)
	}

	// As fast as 32 clients can send, for the whole upgrade: half of them open a new
	// connection for each request, half keep theirs alive.
	var sent, failed atomic.Int64
	var firstErr atomic.Value
	stopLoad := make(chan struct{})
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	kept := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	for i := 0; i < 32; i++ {
		client := client
		if i%2 == 1 {
			client = kept
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < 20000; n++ {
				select {
				case <-stopLoad:
					return
				default:
				}
				resp, err := client.Get("http://" + listen + "/")
				sent.Add(1)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				if err != nil || resp.StatusCode != 200 {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprint(err, resp))
				}
			}
		}()
	}
	time.Sleep(100 * time.Millisecond)
	stopNew := startServe(t, newServer(), filepath.Join(dir, "new.sock"))
	time.Sleep(100 * time.Millisecond)
	stopOld()
	time.Sleep(200 * time.Millisecond)
	close(stopLoad)
	wg.Wait()
	defer stopNew()
	t.Logf("%d connections, %d failed (first: %v)", sent.Load(), failed.Load(), firstErr.Load())
	if sent.Load() < 100 {
		t.Fatalf("only %d requests were sent", sent.Load())
	}
	if failed.Load() != 0 {
		t.Errorf("%d of %d connections failed during the upgrade; first: %v", failed.Load(), sent.Load(), firstErr.Load())
	}
	// The new proxy serves on alone.
	if who, _ := get(t, client, "http://"+listen+"/"); who != "blue" {
		t.Errorf("after the upgrade: %q", who)
	}
}

// A port belongs to one proxy: a second proxy (another project's) cannot listen on it, and only
// a proxy told to replace an old one that shares its sockets may bind beside that one.
func TestPortsAreExclusive(t *testing.T) {
	blue := release(t, "blue")
	listen := freeAddr(t)
	first := NewServer()
	if _, err := first.Set(Route{Name: "web", Listen: listen, Backend: addr(blue)}); err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	stranger := NewServer()
	if _, err := stranger.Set(Route{Name: "web", Listen: listen, Backend: addr(blue)}); err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("a second proxy listens on the same port: %v", err)
	}
	// Even one that would share: the port was not opened for sharing.
	stranger.ReusePort = true
	if _, err := stranger.Set(Route{Name: "web", Listen: listen, Backend: addr(blue)}); err == nil {
		t.Error("a proxy with ReusePort joined a port that was not opened for sharing")
	}

	// An old proxy (before exclusive ports) opened its sockets with SO_REUSEPORT: its successor
	// may bind beside it when told to, and only then.
	old := freeAddr(t)
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, 0xf, 1) })
	}}
	ln, err := lc.Listen(context.Background(), "tcp", old)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	successor := NewServer()
	defer successor.Close()
	if _, err := successor.Set(Route{Name: "web", Listen: old, Backend: addr(blue)}); err == nil {
		t.Error("bound beside an old proxy without being told to")
	}
	successor.ReusePort = true
	if _, err := successor.Set(Route{Name: "web", Listen: old, Backend: addr(blue)}); err != nil {
		t.Errorf("the upgrade from an old proxy: %v", err)
	}
}

// An upgrade cut short (the new proxy started, took the sockets over, and was stopped while the
// old one still served) leaves the old one reachable for the next upgrade: each proxy serves a
// handover socket of its own.
func TestUpgradeAfterAnUpgradeCutShort(t *testing.T) {
	blue := release(t, "blue")
	dir := t.TempDir()
	newServer := func() *Server {
		s := NewServer()
		s.StateFile = filepath.Join(dir, "routes.json")
		s.Handover = filepath.Join(dir, "handover.sock")
		return s
	}
	listen := freeAddr(t)
	stopOld := startServe(t, newServer(), filepath.Join(dir, "old.sock"))
	defer stopOld()
	if resp, err := Ctl(filepath.Join(dir, "old.sock"), Request{Op: "set", Route: &Route{Name: "web", Listen: listen, Backend: addr(blue)}}); err != nil || !resp.OK {
		t.Fatalf("set: %v %+v", err, resp)
	}
	cut := newServer()
	stopCut := startServe(t, cut, filepath.Join(dir, "cut.sock"))
	if got := cut.inheritedAddrs(); len(got) != 0 || len(cut.Status()) != 1 {
		t.Fatalf("the first new proxy: routes %+v", cut.Status())
	}
	stopCut()
	next := newServer()
	stopNext := startServe(t, next, filepath.Join(dir, "next.sock"))
	defer stopNext()
	if st := next.Status(); len(st) != 1 || st[0].Listen != listen {
		t.Fatalf("the second new proxy did not take the port over: %+v", st)
	}
	client := &http.Client{Timeout: 5 * time.Second}
	if who, _ := get(t, client, "http://"+listen+"/"); who != "blue" {
		t.Errorf("served %q", who)
	}
}
