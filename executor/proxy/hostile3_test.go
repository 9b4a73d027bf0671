package proxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// Connections kept alive between requests, from one address or many, never lock new clients
// out: at the cap in all, a new connection takes the place of the one idle longest. (The proxy
// answered 503 to every new client while an attacker's idle connections filled the cap.)
func TestIdleConnectionsDoNotLockOut(t *testing.T) {
	app, _ := hostileApp(t, "blue")
	s, listen := hostileProxy(t, Limits{MaxConns: 20, MaxConnsPerAddr: 10}, addr(app))
	var held []*rawClient
	for i := range 20 {
		c := dialRawFrom(t, fmt.Sprintf("127.0.5.%d", 1+i/10), listen)
		c.send(t, "GET /who HTTP/1.1\r\nHost: app\r\n\r\n")
		c.who(t)
		held = append(held, c)
	}
	waitFor(t, 5*time.Second, "20 connections open", func() bool { return routeStatus(s).Conns == 20 })
	for i := range 5 {
		c := dialRawFrom(t, "127.0.5.9", listen)
		c.send(t, "GET /who HTTP/1.1\r\nHost: app\r\n\r\n")
		if resp, body := c.response(t); resp.StatusCode != 200 {
			t.Fatalf("a new client %d beside 20 idle connections at the cap: %d %q", i, resp.StatusCode, body)
		}
	}
	// The oldest idle ones made room; the newest are still served.
	held[0].closedWithin(t, 5*time.Second)
	last := held[len(held)-1]
	last.send(t, "GET /who HTTP/1.1\r\nHost: app\r\n\r\n")
	last.who(t)
	if st := routeStatus(s); st.Refused != 0 || st.Conns > 20 {
		t.Errorf("status: %+v", st)
	}
}

// Connections that are not idle (a request under way, or none sent yet) are not taken: at the
// cap, a new client is refused. The proxy's own probe (the deployer's health check of the live
// release) is admitted all the same.
func TestProbeAdmittedAtTheCap(t *testing.T) {
	app, _ := hostileApp(t, "blue")
	s, listen := hostileProxy(t, Limits{MaxConns: 10, MaxConnsPerAddr: 10}, addr(app))
	for range 10 {
		dialRawFrom(t, "127.0.5.20", listen).send(t, "GET /who HTTP/1.1\r\n") // half a head
	}
	waitFor(t, 5*time.Second, "10 connections open", func() bool { return routeStatus(s).Conns == 10 })
	c := dialRawFrom(t, "127.0.5.21", listen)
	c.send(t, "GET /who HTTP/1.1\r\nHost: app\r\n\r\n")
	if resp, _ := c.response(t); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("at the cap with busy connections: %d", resp.StatusCode)
	}
	for _, host := range []string{"127.0.0.1", "localhost"} {
		_, port, _ := net.SplitHostPort(listen)
		r := probeOnce(context.Background(), "http://"+net.JoinHostPort(host, port)+"/who", 5*time.Second)
		if r.Status != 200 {
			t.Errorf("the proxy's own probe via %s at the cap: %+v", host, r)
		}
	}
	if n := countOwn(); n != 0 {
		t.Errorf("%d of the proxy's own ports still registered", n)
	}
}

func countOwn() int {
	n := 0
	ownConns.Range(func(_, _ any) bool { n++; return true })
	return n
}

// A TCP route's connections (whose idleness the proxy cannot see) hold at most half the cap:
// an HTTP route beside it still takes new clients.
func TestTCPRouteHoldsHalfTheCap(t *testing.T) {
	app, _ := hostileApp(t, "blue")
	echo, _ := net.Listen("tcp", "127.0.0.1:0")
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	s := NewServer()
	s.Limits = Limits{MaxConns: 8, MaxConnsPerAddr: 100}
	tl, hl := freeAddr(t), freeAddr(t)
	if _, err := s.Set(Route{Name: "db", Listen: tl, Protocol: "tcp", Backend: echo.Addr().String()}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Set(Route{Name: "web", Listen: hl, Backend: addr(app)}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range 4 {
		c := dialRaw(t, tl)
		c.send(t, "ping\n")
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if line, err := c.br.ReadString('\n'); line != "ping\n" {
			t.Fatalf("TCP connection %d: %q %v", i, line, err)
		}
	}
	dialRaw(t, tl).closedWithin(t, 5*time.Second)
	for i := range 4 {
		c := dialRaw(t, hl)
		c.send(t, "GET /who HTTP/1.1\r\nHost: app\r\n\r\n")
		if resp, _ := c.response(t); resp.StatusCode != 200 {
			t.Fatalf("HTTP connection %d beside the TCP route's: %d", i, resp.StatusCode)
		}
	}
}
