package docker

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A tcp:// engine that accepts connections and never answers (what a daemon stopped with
// SIGSTOP looks like: its kernel accepts and acknowledges): a call fails within about the
// bound, naming the engine, instead of waiting for ever.
func TestWatchdogHungEngine(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var mu sync.Mutex
	var held []net.Conn
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	}()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c) // read nothing, answer nothing
			mu.Unlock()
		}
	}()
	const bound = 1500 * time.Millisecond
	t.Setenv(EnvEngineTimeout, bound.String())
	host := "tcp://" + ln.Addr().String()
	eng, err := New(host)
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		_, err := eng.Containers(context.Background(), "p")
		done <- err
	}()
	select {
	case err := <-done:
		d := time.Since(start)
		if err == nil || !strings.Contains(err.Error(), "docker engine at "+host+" does not answer") {
			t.Errorf("a call to an engine that never answers: %v", err)
		}
		if d < bound || d > 2*bound {
			t.Errorf("it failed after %s, want about %s", d.Round(10*time.Millisecond), bound)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a call to an engine that never answers still waits after 30s")
	}
}

// Silence is bounded, not a call's length: a call the engine answers after twice the
// bound (a container waited for, a stop) goes on, since the engine answers its pings.
func TestWatchdogSlowCall(t *testing.T) {
	// 3s: the pings, every second, have seconds to be answered on a machine loaded by other
	// tests (with 1s, a loaded machine once took longer over one).
	const bound = 3 * time.Second
	mux := http.NewServeMux()
	mux.HandleFunc("/_ping", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Api-Version", "1.41")
		fmt.Fprint(w, "OK")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(2 * bound)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, "[]")
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	defer srv.Close()
	t.Setenv(EnvEngineTimeout, bound.String())
	eng, err := New("tcp://" + ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	start := time.Now()
	if _, err := eng.Containers(context.Background(), "p"); err != nil || time.Since(start) < 2*bound {
		t.Errorf("a call answered after %s: %v", time.Since(start).Round(10*time.Millisecond), err)
	}
}

// The bound: 30s by default, DEPLOYER_ENGINE_TIMEOUT otherwise, also for ssh's timeouts
// (half of it to connect, a third of it three times for a connection that goes silent); a
// value that is not a duration of at least a second is refused, naming the variable.
func TestEngineTimeout(t *testing.T) {
	if d, err := EngineTimeout(); err != nil || d != 30*time.Second {
		t.Errorf("default: %s %v", d, err)
	}
	t.Setenv(EnvEngineTimeout, "9s")
	args, err := (&sshTarget{host: "203.0.113.10"}).command()
	want := []string{"ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=4", "-o", "ServerAliveInterval=3", "-o", "ServerAliveCountMax=3", "--", "203.0.113.10", "docker", "system", "dial-stdio"}
	if err != nil || !reflect.DeepEqual(args, want) {
		t.Errorf("ssh with a 9s bound: %q %v", args, err)
	}
	for _, bad := range []string{"30", "soon", "500ms", "-1m"} {
		t.Setenv(EnvEngineTimeout, bad)
		if _, err := New("tcp://203.0.113.10:2375"); err == nil || !strings.Contains(err.Error(), EnvEngineTimeout) {
			t.Errorf("%s=%q: %v, want it refused", EnvEngineTimeout, bad, err)
		}
		if _, err := (&sshTarget{host: "h"}).command(); err == nil {
			t.Errorf("%s=%q: the ssh command was made", EnvEngineTimeout, bad)
		}
	}
}

// An engine reached over TLS (an engine block's tls, DOCKER_CERT_PATH) is watched the same
// way, and so are the connections the SDK dials itself for attach and exec sessions: the TLS is
// done over the watched connection, not by the SDK's own unwatched dial.
func TestWatchdogTLS(t *testing.T) {
	release := make(chan struct{})
	var hung atomic.Bool
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/_ping" && !hung.Load() {
			w.Header().Set("Api-Version", "1.41")
			fmt.Fprint(w, "OK")
			return
		}
		<-release // a daemon that hangs, once hung
	}))
	srv.StartTLS()
	defer srv.Close()
	defer close(release)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644)
	const bound = 1500 * time.Millisecond
	t.Setenv(EnvEngineTimeout, bound.String())
	host := "tcp://" + srv.Listener.Addr().String()
	eng, err := NewWithTLS(host, &TLSFiles{CA: ca})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	if err := eng.Ping(context.Background()); err != nil {
		t.Fatalf("ping over TLS: %v", err)
	}
	conn, err := eng.cli.Dialer()(context.Background())
	if err != nil {
		t.Fatalf("the SDK's dial for a session: %v", err)
	}
	tc, ok := conn.(*tls.Conn)
	if !ok || tc.NetConn() == nil {
		t.Fatalf("the SDK's dial for a session made a %T", conn)
	}
	if _, watched := tc.NetConn().(*watchedConn); !watched {
		t.Errorf("the SDK's dial for a session is not watched: %T", tc.NetConn())
	}
	conn.Close()
	hung.Store(true)
	start := time.Now()
	_, err = eng.Containers(context.Background(), "p")
	if d := time.Since(start); err == nil || !strings.Contains(err.Error(), "docker engine at "+host+" does not answer") || d > 2*bound {
		t.Errorf("a call to a TLS engine that hangs: after %s: %v", d.Round(10*time.Millisecond), err)
	}
}
