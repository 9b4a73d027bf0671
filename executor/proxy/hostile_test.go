package proxy

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// The proxy under hostile clients: raw-socket clients that send what a browser never would.

// hostileApp is a backend that says what it got.
func hostileApp(t testing.TB, name string) (*httptest.Server, *atomic.Int64) {
	var served atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("/count", func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%s counted %d bytes (err %v, upgrade %q)", name, n, err, r.Header.Get("Upgrade"))
	})
	mux.HandleFunc("/who", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(who{Release: name, Host: r.Host, Header: r.Header})
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		w.Header().Set("Content-Length", strconv.Itoa(n))
		buf := make([]byte, 64<<10)
		for n > 0 {
			k, err := w.Write(buf[:min(n, len(buf))])
			if err != nil {
				return
			}
			n -= k
		}
	})
	mux.HandleFunc("/ws", wsEcho(name))
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(s.Close)
	return s, &served
}

// who is what /who says of a request.
type who struct {
	Release string
	Host    string
	Header  http.Header
}

func hostileProxy(t testing.TB, lim Limits, backend string) (*Server, string) {
	t.Helper()
	s := NewServer()
	s.Limits = lim
	listen := freeAddr(t)
	if _, err := s.Set(Route{Name: "web", Listen: listen, Backend: backend}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s, listen
}

// rawClient is a client that writes whatever it is told to.
type rawClient struct {
	net.Conn
	br *bufio.Reader
}

func dialRaw(t testing.TB, addr string) *rawClient {
	t.Helper()
	return dialRawFrom(t, "", addr)
}

// dialRawFrom connects from a source address of the loopback network (127.0.0.0/8 is all
// local): each is a client address of its own to the proxy.
func dialRawFrom(t testing.TB, from, addr string) *rawClient {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawClient{Conn: c, br: bufio.NewReader(c)}
}

func (c *rawClient) send(t testing.TB, s string) {
	t.Helper()
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, s); err != nil {
		t.Fatalf("send %.40q: %v", s, err)
	}
}

// response reads one response whole (within 10 s).
func (c *rawClient) response(t testing.TB) (*http.Response, string) {
	t.Helper()
	resp, body, err := c.tryResponse(10 * time.Second)
	if err != nil {
		t.Fatalf("reading a response: %v", err)
	}
	return resp, body
}

func (c *rawClient) tryResponse(d time.Duration) (*http.Response, string, error) {
	c.SetReadDeadline(time.Now().Add(d))
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return nil, "", err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b), err
}

// closedWithin waits for the proxy to close c (reading and dropping what it sends), and says
// after how long; it fails the test when c is still open after d.
func (c *rawClient) closedWithin(t testing.TB, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	c.SetReadDeadline(start.Add(d))
	_, err := io.Copy(io.Discard, c.br)
	if isTimeout(err) {
		t.Fatalf("the connection is still open after %s", d)
	}
	return time.Since(start)
}

// who reads the answer of /who: what the app got.
func (c *rawClient) who(t testing.TB) who {
	t.Helper()
	resp, body := c.response(t)
	var w who
	if err := json.Unmarshal([]byte(body), &w); err != nil || resp.StatusCode != 200 {
		t.Fatalf("/who: %d %q", resp.StatusCode, body)
	}
	return w
}

// waitFor polls cond every 10 ms until it holds, failing the test after d.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", d, what)
		}
	}
}

// waitForStatus waits until a route's status meets cond, failing with the status it has.
func waitForStatus(t testing.TB, d time.Duration, what string, status func() RouteStatus, cond func(RouteStatus) bool) {
	t.Helper()
	var st RouteStatus
	for deadline := time.Now().Add(d); ; time.Sleep(10 * time.Millisecond) {
		if st = status(); cond(st) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s; status %+v", d, what, st)
		}
	}
}

func routeStatus(s *Server) RouteStatus { return s.Status()[0] }

// An upgrade request with a body, of any length, chunked or not, is never held in memory: it
// goes to the app as a plain request, its body streamed. (The proxy read such a body whole.)
func TestUpgradeWithABody(t *testing.T) {
	app, _ := hostileApp(t, "blue")
	s, listen := hostileProxy(t, Limits{}, addr(app))
	const size = 128 << 20
	chunk := []byte(strings.Repeat("x", 64<<10))
	for _, chunked := range []bool{false, true} {
		c := dialRaw(t, listen)
		head := "POST /count HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
		if chunked {
			head += "Transfer-Encoding: chunked\r\n\r\n"
		} else {
			head += fmt.Sprintf("Content-Length: %d\r\n\r\n", size)
		}
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		c.send(t, head)
		sent := make(chan error, 1)
		go func() {
			c.SetWriteDeadline(time.Now().Add(60 * time.Second))
			for n := 0; n < size; n += len(chunk) {
				if chunked {
					fmt.Fprintf(c, "%x\r\n", len(chunk))
				}
				if _, err := c.Write(chunk); err != nil {
					sent <- err
					return
				}
				if chunked {
					io.WriteString(c, "\r\n")
				}
			}
			if chunked {
				io.WriteString(c, "0\r\n\r\n")
			}
			sent <- nil
		}()
		c.SetReadDeadline(time.Now().Add(60 * time.Second))
		resp, err := http.ReadResponse(c.br, nil)
		if err != nil {
			t.Fatalf("chunked %v: %v", chunked, err)
		}
		b, _ := io.ReadAll(resp.Body)
		runtime.ReadMemStats(&after)
		if err := <-sent; err != nil {
			t.Fatalf("chunked %v: sending the body: %v", chunked, err)
		}
		if want := fmt.Sprintf("blue counted %d bytes (err <nil>, upgrade \"\")", size); resp.StatusCode != 200 || string(b) != want {
			t.Errorf("chunked %v: %d %q, want %q", chunked, resp.StatusCode, b, want)
		}
		// The whole process (client, proxy, app) allocated a fraction of the body.
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 32<<20 {
			t.Errorf("chunked %v: %d MiB allocated for a %d MiB body", chunked, alloc>>20, size>>20)
		}
	}
	if st := routeStatus(s); st.Errors != 0 || st.Requests != 2 {
		t.Errorf("status: %+v", st)
	}
}

// A connection becomes a tunnel only once the app answered 101. Any other answer to an
// upgrade request is relayed as HTTP, and the next request on the connection is a request like
// any other: its headers set by the proxy, counted, switched by a cutover. (The proxy made the
// connection a tunnel to the old release at once, through which the client could then send the
// app anything, unseen.)
func TestUpgradeWithout101(t *testing.T) {
	blue, _ := hostileApp(t, "blue")
	green, _ := hostileApp(t, "green")
	s, listen := hostileProxy(t, Limits{}, addr(blue))
	ask := func(c *rawClient, release string, more string) {
		t.Helper()
		if w := c.who(t); w.Release != release || strings.Join(w.Header["X-Forwarded-For"], ",") != "127.0.0.1" {
			t.Errorf("%s: answered by %s with X-Forwarded-For %q, want %s and 127.0.0.1", more, w.Release, w.Header["X-Forwarded-For"], release)
		}
	}
	upgrade := "GET /who HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n"
	plain := "GET /who HTTP/1.1\r\nHost: app\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n"
	c := dialRaw(t, listen)
	c.send(t, upgrade)
	ask(c, "blue", "the upgrade request the app declined")
	if _, err := s.Set(Route{Name: "web", Listen: listen, Backend: addr(green)}); err != nil {
		t.Fatal(err)
	}
	c.send(t, plain)
	ask(c, "green", "the next request on the connection, after a cutover")
	// Sent at once, the second request behind the first.
	c2 := dialRaw(t, listen)
	c2.send(t, upgrade+plain)
	ask(c2, "green", "an upgrade request the app declined")
	ask(c2, "green", "the request sent right behind it")
	// An app that answers an upgrade with a body and Connection: close.
	c3 := dialRaw(t, listen)
	c3.send(t, "GET /ws HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"+plain)
	if resp, body := c3.response(t); resp.StatusCode != http.StatusUpgradeRequired || !strings.Contains(body, "upgrade required") {
		t.Errorf("the app's 426: %d %q", resp.StatusCode, body)
	}
	ask(c3, "green", "the request behind a 426")
	if st := routeStatus(s); st.Requests != 6 || st.Errors != 0 {
		t.Errorf("status: %+v, want 6 requests counted and no error", st)
	}
	// A real upgrade, asked in lower case, still becomes a tunnel.
	c4 := dialRaw(t, listen)
	c4.send(t, "GET /ws HTTP/1.1\r\nhost: app\r\nconnection: keep-alive, upgrade\r\nupgrade: websocket\r\n\r\n")
	c4.SetReadDeadline(time.Now().Add(5 * time.Second))
	if line, _ := c4.br.ReadString('\n'); !strings.Contains(line, "101") {
		t.Fatalf("upgrade: %q", line)
	}
	for line, _ := c4.br.ReadString('\n'); line != "\r\n"; line, _ = c4.br.ReadString('\n') {
	}
	c4.send(t, "hello\n")
	if line, _ := c4.br.ReadString('\n'); line != "green: hello\n" {
		t.Errorf("through the tunnel: %q", line)
	}
}

// Headers that claim the client's address, or the host or scheme it came by, are the proxy's
// alone, whatever a client sends under their names (any case, '_' for '-', repeated, or named
// in Connection to have the proxy drop its own).
func TestSpoofedClientHeaders(t *testing.T) {
	app, _ := hostileApp(t, "blue")
	_, listen := hostileProxy(t, Limits{}, addr(app))
	spoofs := []string{
		"X-Forwarded-For: 6.6.6.6", "x-forwarded-for: 6.6.6.6", "X-FORWARDED-FOR: 6.6.6.6", "X_Forwarded_For: 6.6.6.6",
		"X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 7.7.7.7", "X-Forwarded-For: 6.6.6.6\r\nx-forwarded-for: 7.7.7.7",
		"X-Real-IP: 6.6.6.6", "x-real-ip: 6.6.6.6", "X-Real-Ip: 6.6.6.6", "X_Real_IP: 6.6.6.6",
		"Forwarded: for=6.6.6.6", "forwarded: for=6.6.6.6;proto=https", "Forwarded: for=6.6.6.6\r\nForwarded: for=7.7.7.7",
		"X-Forwarded-Host: evil.example", "x-forwarded-host: evil.example", "X-Forwarded-Proto: https", "x_forwarded_proto: https",
		"X-Forwarded-Port: 443", "X-Forwarded-Ssl: on", "X-Forwarded-Scheme: https", "X-Forwarded-Prefix: /admin",
		"X-Forwarded-Server: evil", "X-Url-Scheme: https", "Front-End-Https: on", "True-Client-IP: 6.6.6.6",
		"CF-Connecting-IP: 6.6.6.6", "X-Client-IP: 6.6.6.6", "X-Cluster-Client-IP: 6.6.6.6", "Fastly-Client-IP: 6.6.6.6",
		"X-Original-Forwarded-For: 6.6.6.6",
		"Connection: X-Forwarded-For", "Connection: X-Real-IP, keep-alive", "Connection: Forwarded, X-Forwarded-Proto",
		"Connection: Host", "Connection: Content-Length",
	}
	claims := map[string]string{
		"x-forwarded-for":   "127.0.0.1",
		"x-real-ip":         "127.0.0.1",
		"x-forwarded-host":  listen,
		"x-forwarded-proto": "http",
		"forwarded":         fmt.Sprintf("for=127.0.0.1;host=%q;proto=http", listen),
	}
	for _, spoof := range spoofs {
		c := dialRaw(t, listen)
		c.send(t, "GET /who HTTP/1.1\r\nHost: "+listen+"\r\n"+spoof+"\r\n\r\n")
		w := c.who(t)
		for k, v := range w.Header {
			name := strings.ReplaceAll(strings.ToLower(k), "_", "-")
			if want, ours := claims[name]; ours {
				if strings.Join(v, "|") != want {
					t.Errorf("%q: the app got %s: %q, want %q", spoof, k, v, want)
				}
			} else if isDropped([]byte(name)) {
				t.Errorf("%q: the app got %s: %q", spoof, k, v)
			}
		}
		for name := range claims {
			if w.Header.Get(name) == "" {
				t.Errorf("%q: the app got no %s", spoof, name)
			}
		}
		if w.Host != listen {
			t.Errorf("%q: Host %q", spoof, w.Host)
		}
	}
	t.Logf("%d spoofing requests", len(spoofs))
}

// HTTP/1.0 needs no Host: the app gets the address the client connected to, not its own. An
// HTTP/1.1 request without one is the client's fault: 400, not the release's error.
func TestHTTP10WithoutHost(t *testing.T) {
	app, _ := hostileApp(t, "blue")
	s, listen := hostileProxy(t, Limits{}, addr(app))
	c := dialRaw(t, listen)
	c.send(t, "GET /who HTTP/1.0\r\n\r\n")
	w := c.who(t)
	if w.Host != listen || w.Header.Get("X-Forwarded-Host") != listen {
		t.Errorf("an HTTP/1.0 request without Host reached the app as Host %q, X-Forwarded-Host %q; want %s (not the app's own %s)", w.Host, w.Header.Get("X-Forwarded-Host"), listen, addr(app))
	}
	c = dialRaw(t, listen)
	c.send(t, "GET /who HTTP/1.1\r\n\r\n")
	if resp, _ := c.response(t); resp.StatusCode != 400 {
		t.Errorf("HTTP/1.1 without Host: %d", resp.StatusCode)
	}
	if st := routeStatus(s); st.Errors != 0 || st.ClientErrors != 1 {
		t.Errorf("status: %+v, want no error and 1 client error", st)
	}
}

// A malformed chunked body is the client's fault: a 4xx, the connection closed (where the next
// request starts is not known), and not counted as the release's error.
func TestMalformedChunks(t *testing.T) {
	app, served := hostileApp(t, "blue")
	s, listen := hostileProxy(t, Limits{}, addr(app))
	bodies := []string{
		"zz\r\nabc\r\n0\r\n\r\n",                   // not a size
		"3\r\nabcdef\r\n0\r\n\r\n",                 // longer than its size
		"3\r\nabc0\r\n\r\n",                        // no CRLF after the data
		"ffffffffffffffffffff\r\nabc\r\n0\r\n\r\n", // a size past any integer
		"-1\r\nabc\r\n0\r\n\r\n",                   // a negative size
		"3\r\nabc\r\n",                             // cut short: the client half-closes
		"3 3\r\nabc\r\n0\r\n\r\n",                  // two sizes
		"\r\n",                                     // no size at all
	}
	for i, body := range bodies {
		c := dialRaw(t, listen)
		c.send(t, "POST /count HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n"+body)
		c.Conn.(*net.TCPConn).CloseWrite()
		resp, _, err := c.tryResponse(10 * time.Second)
		if err != nil {
			t.Errorf("%q: no answer: %v", body, err)
			continue
		}
		if resp.StatusCode < 400 || resp.StatusCode > 499 {
			t.Errorf("%q: %d, want a 4xx", body, resp.StatusCode)
		}
		if d := c.closedWithin(t, 5*time.Second); d < 0 {
			t.Errorf("%d", i)
		}
	}
	st := routeStatus(s)
	if st.Errors != 0 || st.ClientErrors != int64(len(bodies)) {
		t.Errorf("status: %+v, want no error and %d client errors", st, len(bodies))
	}
	// Framing the proxy refuses before the app sees anything (on an app of its own: the
	// malformed bodies above may reach the first one late).
	app, served = hostileApp(t, "blue")
	s, listen = hostileProxy(t, Limits{}, addr(app))
	for _, head := range []string{
		"Content-Length: 5\r\nContent-Length: 6\r\n\r\nabcdef",
		"Content-Length: -5\r\n\r\n",
		"Content-Length: 5x\r\n\r\nabcde",
	} {
		c := dialRaw(t, listen)
		c.send(t, "POST /count HTTP/1.1\r\nHost: app\r\n"+head)
		if resp, _ := c.response(t); resp.StatusCode != 400 {
			t.Errorf("%q: %d, want 400", head, resp.StatusCode)
		}
	}
	// A chunked body with a Content-Length as well: read as chunked, and the connection closed
	// after it, so that what follows is never taken for a request.
	c := dialRaw(t, listen)
	c.send(t, "POST /count HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\nGET /who HTTP/1.1\r\nHost: app\r\n\r\n")
	if resp, body := c.response(t); resp.StatusCode != 200 || !strings.HasPrefix(body, "blue counted 0 bytes") {
		t.Errorf("chunked with a length: %d %q", resp.StatusCode, body)
	}
	c.closedWithin(t, 5*time.Second)
	if n := served.Load(); n != 1 {
		t.Errorf("the app served %d requests, want 1", n)
	}
	if st := routeStatus(s); st.Errors != 0 {
		t.Errorf("status: %+v", st)
	}
}

// Slow clients hold a connection for a bounded time: a head that trickles in (on a new
// connection and on a kept-alive one), a connection that sends nothing, a body that trickles
// or stops, a client that stops reading an answer. A steady slow upload passes. Meanwhile the
// proxy serves others.
func TestSlowClients(t *testing.T) {
	app, _ := hostileApp(t, "blue")
	lim := Limits{HeaderTimeout: 500 * time.Millisecond, BodyGrace: 500 * time.Millisecond, BodyMinRate: 1024, BodyIdle: time.Second, WriteIdle: 500 * time.Millisecond}
	s, listen := hostileProxy(t, lim, addr(app))
	trickle := func(c *rawClient, stop chan struct{}) {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			c.SetWriteDeadline(time.Now().Add(time.Second))
			if _, err := fmt.Fprintf(c, "X-%d: y\r\n", i); err != nil {
				return
			}
		}
	}
	serves := func(what string) {
		t.Helper()
		c := dialRaw(t, listen)
		c.send(t, "GET /who HTTP/1.1\r\nHost: app\r\n\r\n")
		if resp, _, err := c.tryResponse(5 * time.Second); err != nil || resp.StatusCode != 200 {
			t.Errorf("while %s, a request: %v", what, err)
		}
	}
	// A head that never ends, on a new connection: the first byte within HeaderTimeout, the
	// rest within HeaderTimeout of it.
	for _, first := range []bool{true, false} {
		c := dialRaw(t, listen)
		if !first {
			c.send(t, "GET /who HTTP/1.1\r\nHost: app\r\n\r\n")
			c.response(t)
		}
		start := time.Now()
		c.send(t, "GET /who HTTP/1.1\r\nHost: app\r\n")
		stop := make(chan struct{})
		go trickle(c, stop)
		serves("a head trickles in")
		c.closedWithin(t, 5*time.Second)
		close(stop)
		lived := time.Since(start)
		if lived < 400*time.Millisecond || lived > 2*time.Second {
			t.Errorf("a trickling head (first request %v) lived %s, want about 0.5 s", first, lived)
		}
		t.Logf("a trickling head (first request %v) lived %s", first, lived.Round(time.Millisecond))
	}
	// Nothing at all.
	c := dialRaw(t, listen)
	if d := c.closedWithin(t, 5*time.Second); d > 2*time.Second {
		t.Errorf("a silent connection lived %s", d)
	}
	// A client that stops reading a large answer is cut once its buffers are full.
	c = dialRaw(t, listen)
	c.send(t, "GET /big?n=268435456 HTTP/1.1\r\nHost: app\r\n\r\n")
	waitFor(t, 5*time.Second, "the download starts", func() bool { return routeStatus(s).InFlight == 1 })
	serves("a client does not read")
	start := time.Now()
	waitFor(t, 10*time.Second, "the proxy gives up on a client that does not read", func() bool { return routeStatus(s).InFlight == 0 })
	t.Logf("a client that does not read was cut after %s", time.Since(start).Round(time.Millisecond))
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := io.Copy(io.Discard, c.br); err != nil || n >= 256<<20 {
		t.Errorf("the client that did not read, reading now: %d bytes, %v; want what its buffers held, then the end", n, err)
	}

	// Bodies, past what the server reads with the head (8 KiB, within HeaderTimeout): one that
	// trickles in at 100 bytes/s, one that stops, both cut with a 408; a steady one passes.
	s, listen = hostileProxy(t, Limits{BodyGrace: 500 * time.Millisecond, BodyMinRate: 64 << 10, BodyIdle: time.Second}, addr(app))
	for _, stall := range []bool{false, true} {
		c := dialRaw(t, listen)
		c.send(t, "POST /count HTTP/1.1\r\nHost: app\r\nContent-Length: 1000000\r\n\r\n"+strings.Repeat("x", 8192))
		start := time.Now()
		stop := make(chan struct{})
		if stall {
			c.send(t, strings.Repeat("x", 200<<10)) // credit for 3 s, but none may wait over BodyIdle
		} else {
			go func() {
				for {
					select {
					case <-stop:
						return
					case <-time.After(100 * time.Millisecond):
					}
					c.SetWriteDeadline(time.Now().Add(time.Second))
					if _, err := io.WriteString(c, "0123456789"); err != nil {
						return
					}
				}
			}()
		}
		serves("a body trickles in")
		resp, _, err := c.tryResponse(5 * time.Second)
		close(stop)
		if err != nil || resp.StatusCode != http.StatusRequestTimeout {
			t.Errorf("a slow body (stalled %v): %v %v", stall, resp, err)
		}
		c.closedWithin(t, 5*time.Second)
		lived := time.Since(start)
		if lived < 500*time.Millisecond || lived > 3*time.Second {
			t.Errorf("a slow body (stalled %v) lived %s", stall, lived)
		}
		t.Logf("a slow body (stalled %v) lived %s past its first 8 KiB", stall, lived.Round(time.Millisecond))
	}
	if st := routeStatus(s); st.ClientErrors != 2 || st.Errors != 0 {
		t.Errorf("status: %+v, want 2 client errors and no error", st)
	}
	// At 120 KiB/s for 1.5 s.
	c = dialRaw(t, listen)
	c.send(t, "POST /count HTTP/1.1\r\nHost: app\r\nContent-Length: 184320\r\n\r\n")
	for range 15 {
		time.Sleep(100 * time.Millisecond)
		c.send(t, strings.Repeat("x", 12288))
	}
	if resp, body := c.response(t); resp.StatusCode != 200 || !strings.HasPrefix(body, "blue counted 184320 bytes") {
		t.Errorf("a slow, steady upload: %d %q", resp.StatusCode, body)
	}
}

// The proxy caps connections per client address and in all: beyond, a client is told why and
// closed at once, and others are served. A TCP route is capped alike.
func TestConnectionCaps(t *testing.T) {
	app, _ := hostileApp(t, "blue")
	s, listen := hostileProxy(t, Limits{MaxConns: 40, MaxConnsPerAddr: 10}, addr(app))
	var held []*rawClient
	hold := func(from string, n int) {
		for range n {
			held = append(held, dialRawFrom(t, from, listen))
		}
	}
	hold("127.0.0.1", 10)
	waitFor(t, 5*time.Second, "10 connections open", func() bool { return routeStatus(s).Conns == 10 })
	c := dialRawFrom(t, "127.0.0.1", listen)
	c.send(t, "GET /who HTTP/1.1\r\nHost: app\r\n\r\n")
	if resp, body := c.response(t); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("an 11th connection from one address: %d %q", resp.StatusCode, body)
	}
	c = dialRawFrom(t, "127.0.0.2", listen)
	c.send(t, "GET /who HTTP/1.1\r\nHost: app\r\n\r\n")
	if resp, _ := c.response(t); resp.StatusCode != 200 {
		t.Errorf("another address: %d", resp.StatusCode)
	}
	c.Close()
	waitFor(t, 5*time.Second, "the connection closed", func() bool { return routeStatus(s).Conns == 10 })
	hold("127.0.0.3", 10)
	hold("127.0.0.4", 10)
	hold("127.0.0.5", 10)
	waitFor(t, 5*time.Second, "40 connections open", func() bool { return routeStatus(s).Conns == 40 })
	c = dialRawFrom(t, "127.0.0.6", listen)
	c.send(t, "GET /who HTTP/1.1\r\nHost: app\r\n\r\n")
	if resp, body := c.response(t); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("a 41st connection: %d %q", resp.StatusCode, body)
	}
	for _, h := range held {
		h.Close()
	}
	waitFor(t, 5*time.Second, "the connections closed", func() bool { return routeStatus(s).Conns == 0 })
	c = dialRawFrom(t, "127.0.0.1", listen)
	c.send(t, "GET /who HTTP/1.1\r\nHost: app\r\n\r\n")
	if resp, _ := c.response(t); resp.StatusCode != 200 {
		t.Errorf("after the connections closed: %d", resp.StatusCode)
	}
	if st := routeStatus(s); st.Refused != 2 {
		t.Errorf("status: %+v, want 2 refused", st)
	}

	// A TCP route: the connection beyond the cap is closed at once.
	echo := tcpEcho(t)
	ts := NewServer()
	ts.Limits = Limits{MaxConnsPerAddr: 3}
	tl := freeAddr(t)
	if _, err := ts.Set(Route{Name: "db", Listen: tl, Protocol: "tcp", Backend: echo}); err != nil {
		t.Fatal(err)
	}
	defer ts.Close()
	for i := range 3 {
		c := dialRaw(t, tl)
		c.send(t, "ping\n")
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if line, err := c.br.ReadString('\n'); line != "ping\n" {
			t.Fatalf("TCP connection %d: %q %v", i, line, err)
		}
	}
	c = dialRaw(t, tl)
	if d := c.closedWithin(t, 5*time.Second); d > time.Second {
		t.Errorf("a 4th TCP connection from one address was closed after %s", d)
	}
	if st := ts.Status()[0]; st.Refused != 1 || st.Conns != 3 {
		t.Errorf("TCP route status: %+v", st)
	}
}

// Thousands of connections that send nothing, or half a head, hold nothing for long: the proxy
// serves others meanwhile and closes them at the head's deadline.
func TestThousandsOfIdleConnections(t *testing.T) {
	app, _ := hostileApp(t, "blue")
	const deadline = 5 * time.Second
	s, listen := hostileProxy(t, Limits{HeaderTimeout: deadline}, addr(app))
	n := 3000
	if lim := openFilesLimit(); lim > 0 && int(lim) < 2*n+200 {
		n = (int(lim) - 200) / 2 // both ends are in this process
	}
	t0 := time.Now()
	conns := make([]*rawClient, 0, n)
	for i := range n {
		c := dialRawFrom(t, fmt.Sprintf("127.0.1.%d", 1+i/200), listen)
		if i%2 == 1 {
			c.send(t, "GET / HTTP/1.1\r\nHost: ") // half a head
		}
		conns = append(conns, c)
	}
	// all are open until the first one's deadline, deadline after it opened.
	left := deadline - time.Since(t0) - 500*time.Millisecond
	if left <= 0 {
		t.Fatalf("opening %d connections took %s: too long beside the proxy's %s deadline (a machine too loaded for this test)", n, time.Since(t0), deadline)
	}
	waitFor(t, left, fmt.Sprintf("%d connections open", n), func() bool { return routeStatus(s).Conns >= int64(n) })
	c := dialRaw(t, listen)
	c.send(t, "GET /who HTTP/1.1\r\nHost: app\r\n\r\n")
	if resp, _ := c.response(t); resp.StatusCode != 200 {
		t.Errorf("beside %d idle connections: %d", n, resp.StatusCode)
	}
	c.Close()
	waitFor(t, deadline+5*time.Second, "the idle connections closed", func() bool { return routeStatus(s).Conns == 0 })
	for _, c := range conns {
		c.closedWithin(t, time.Second)
	}
	t.Logf("%d idle connections", n)
}

// An error page names nothing behind the proxy: the release's address stays in the route's
// status, for the operator. A TCP route whose backend is gone goes on accepting.
func TestErrorPagesNameNoAddress(t *testing.T) {
	dead := freeAddr(t)
	s, listen := hostileProxy(t, Limits{}, dead)
	_, port, _ := net.SplitHostPort(dead)
	for _, req := range []string{
		"GET / HTTP/1.1\r\nHost: app\r\n\r\n",
		"GET /ws HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 3\r\n\r\nabc",
	} {
		c := dialRaw(t, listen)
		c.send(t, req)
		resp, body := c.response(t)
		if resp.StatusCode != http.StatusBadGateway || strings.Contains(body, port) || strings.Contains(body, "127.0.0.1") || strings.Contains(body, "dial") {
			t.Errorf("%.30q: %d %q", req, resp.StatusCode, body)
		}
	}
	if st := routeStatus(s); st.Errors != 3 || !strings.Contains(st.LastError, dead) {
		t.Errorf("status: %+v, want 3 errors and the last naming %s", st, dead)
	}
	ts := NewServer()
	tl := freeAddr(t)
	ts.Set(Route{Name: "db", Listen: tl, Protocol: "tcp", Backend: dead})
	defer ts.Close()
	for range 3 {
		dialRaw(t, tl).closedWithin(t, 10*time.Second)
	}
	if st := ts.Status()[0]; st.Errors != 3 || !strings.Contains(st.LastError, dead) || st.AcceptError != "" {
		t.Errorf("TCP route status: %+v", st)
	}
}

// The control socket bounds what a request may take: its size and the time it takes to come.
func TestControlSocketBounds(t *testing.T) {
	defer func(d time.Duration) { ctlRequestTimeout = d }(ctlRequestTimeout)
	ctlRequestTimeout = 300 * time.Millisecond
	sock := t.TempDir() + "/ctl.sock"
	stop := startServe(t, NewServer(), sock)
	defer stop()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	c.SetReadDeadline(start.Add(5 * time.Second))
	b, _ := io.ReadAll(c)
	if time.Since(start) > 3*time.Second || !strings.Contains(string(b), "bad request") {
		t.Errorf("a silent control client: %q after %s", b, time.Since(start))
	}
	c2, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	go func() {
		io.WriteString(c2, `{"op":"ping","name":"`)
		io.WriteString(c2, strings.Repeat("x", 2<<20))
	}()
	c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	var resp Response
	if err := json.NewDecoder(c2).Decode(&resp); err != nil || resp.OK || !strings.Contains(resp.Error, "bad request") {
		t.Errorf("a 2 MiB control request: %+v %v", resp, err)
	}
	if resp, err := Ctl(sock, Request{Op: "ping"}); err != nil || !resp.OK {
		t.Errorf("ping after: %+v %v", resp, err)
	}
	// A proxy that takes a status request and never answers is not waited for.
	defer func(d time.Duration) { ctlQuickTimeout = d }(ctlQuickTimeout)
	ctlQuickTimeout = 300 * time.Millisecond
	mute := t.TempDir() + "/mute.sock"
	ln, err := net.Listen("unix", mute)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			defer c.Close()
			io.Copy(io.Discard, c)
		}
	}()
	start = time.Now()
	if resp, err := Ctl(mute, Request{Op: "status"}); err == nil || time.Since(start) > 3*time.Second {
		t.Errorf("status from a proxy that does not answer: %+v %v after %s", resp, err, time.Since(start))
	}
}

// isEMFILE says whether an error's text says the process is out of descriptors.
func isEMFILE(msg string) bool { return strings.Contains(msg, syscall.EMFILE.Error()) }

// A client is counted by its address; an IPv6 client by its /64, which one host usually has
// whole (else a single host could open the per-address cap once per address it picks).
func TestAddrKey(t *testing.T) {
	key := func(ip string) string { return addrKey(&net.TCPAddr{IP: net.ParseIP(ip), Port: 1}).String() }
	for _, c := range []struct{ a, b string }{
		{"2001:db8::1", "2001:db8::ffff:1"},
		{"2001:db8:0:7::1", "2001:db8:0:7:abcd::9"},
		{"::ffff:10.0.0.1", "10.0.0.1"},
	} {
		if key(c.a) != key(c.b) {
			t.Errorf("%s and %s are counted apart: %s, %s", c.a, c.b, key(c.a), key(c.b))
		}
	}
	for _, c := range []struct{ a, b string }{
		{"2001:db8::1", "2001:db8:0:1::1"},
		{"10.0.0.1", "10.0.0.2"},
	} {
		if key(c.a) == key(c.b) {
			t.Errorf("%s and %s are counted as one", c.a, c.b)
		}
	}
}

// Over IPv6 the proxy's headers give the client's address as such: Forwarded quotes it.
func TestForwardedOverIPv6(t *testing.T) {
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	}
	listen := ln.Addr().String()
	ln.Close()
	app, _ := hostileApp(t, "blue")
	s := NewServer()
	if _, err := s.Set(Route{Name: "web", Listen: listen, Backend: addr(app)}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := dialRaw(t, listen)
	c.send(t, "GET /who HTTP/1.0\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n")
	w := c.who(t)
	if got := strings.Join(w.Header["X-Forwarded-For"], "|"); got != "::1" {
		t.Errorf("X-Forwarded-For %q", got)
	}
	if got, want := w.Header.Get("Forwarded"), fmt.Sprintf(`for="[::1]";host=%q;proto=http`, listen); got != want {
		t.Errorf("Forwarded %q, want %q", got, want)
	}
	if w.Host != listen {
		t.Errorf("an HTTP/1.0 request without Host over IPv6 reached the app as Host %q, want %s", w.Host, listen)
	}
}

// A head over 64 KiB is refused with a 431, as the client's fault.
func TestHeadTooLarge(t *testing.T) {
	app, _ := hostileApp(t, "blue")
	s, listen := hostileProxy(t, Limits{}, addr(app))
	c := dialRaw(t, listen)
	c.send(t, "GET /who HTTP/1.1\r\nHost: app\r\nCookie: "+strings.Repeat("x", 70<<10)+"\r\n\r\n")
	if resp, _ := c.response(t); resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("a 70 KiB head: %d", resp.StatusCode)
	}
	c = dialRaw(t, listen)
	c.send(t, "GET /who HTTP/1.1\r\nHost: app\r\nCookie: "+strings.Repeat("x", 60<<10)+"\r\n\r\n")
	if resp, _ := c.response(t); resp.StatusCode != 200 {
		t.Errorf("a 60 KiB head: %d", resp.StatusCode)
	}
	if st := routeStatus(s); st.Errors != 0 || st.ClientErrors != 1 {
		t.Errorf("status: %+v", st)
	}
}

// The proxy finds the headers it drops in the raw head: whatever a client writes, every header
// fasthttp parsed from it (and would pass on) under a name the proxy drops is one the proxy
// sees, or a claim could pass unseen.
func FuzzRawHeaders(f *testing.F) {
	for _, seed := range []string{
		"Host: a\r\nX-Real-IP: 1\r\n",
		"Host: a\r\nX-Real-IP : 1\r\nx_forwarded_for:2\r\n",
		"Host: a\r\nX Real IP: 1\r\n",
		"Host: a\r\nX-A: 1\r\n  folded: x\r\nForwarded: for=1\r\n",
		"Host: a\nX-Real-IP: 1\n",
		"Host: a\r\nConnection: x-real-ip, upgrade\r\nUpgrade: websocket\r\n",
		"Host: a\r\nX-Real-IP:\r\n",
		"Host: a\r\n\tX-Real-IP: 1\r\n",
		"Host:000000000\n 000000000\n",
		"Host: a\r\nX-Real-IP: 1\r\n X-Forwarded-For: 2\r\n",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, head string) {
		var h fasthttp.RequestHeader
		h.DisableNormalizing()
		if h.Read(bufio.NewReader(strings.NewReader("GET / HTTP/1.1\r\n"+head+"\r\n\r\n"))) != nil {
			return
		}
		var fb [32]byte
		seen := map[string]bool{}
		for k := range rawHeaders(h.RawHeaders()) {
			seen[string(fold(fb[:], k))] = true
		}
		for k, v := range h.All() {
			name := string(fold(fb[:], k))
			if name == "connection" && string(v) == "close" {
				continue // fasthttp's own, from its connection-close flag
			}
			if isDropped([]byte(name)) && !seen[name] {
				t.Errorf("head %q: fasthttp passes on %s: %q, which the proxy does not see", head, k, v)
			}
		}
	})
}

// tcpEcho is a TCP server that sends back what it gets, for TCP routes; its address.
func tcpEcho(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	return ln.Addr().String()
}
