package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deployer-dev/deployer/executor/probe"
)

// streamGate holds the streaming handler after its first chunk until the test has read it.
var stream struct {
	sync.Mutex
	gate chan struct{}
	done bool
}

func streamState() (chan struct{}, bool) {
	stream.Lock()
	defer stream.Unlock()
	return stream.gate, stream.done
}

// release is a backend that names itself in every answer.
func release(t testing.TB, name string) *httptest.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if d, err := time.ParseDuration(r.URL.Query().Get("sleep")); err == nil {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("X-Release", name)
		fmt.Fprintf(w, "%s xff=%s proto=%s host=%s fhost=%s", name, r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Forwarded-Proto"), r.Host, r.Header.Get("X-Forwarded-Host"))
	})
	mux.HandleFunc("/conn", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s from %s", name, r.RemoteAddr) // which connection of the proxy's
	})
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s got %d bytes", name, len(b))
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(8<<20))
		if r.Method != http.MethodHead {
			w.Write([]byte(strings.Repeat("z", 8<<20)))
		}
	})
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		// The first chunk, then the rest only once the client has read it (or after 5 s): a
		// proxy that buffers the response delivers nothing until the last chunk is written.
		fmt.Fprint(w, "chunk 0\n")
		w.(http.Flusher).Flush()
		gate, _ := streamState()
		select {
		case <-gate:
		case <-time.After(5 * time.Second):
		}
		stream.Lock()
		stream.done = true
		stream.Unlock()
		fmt.Fprint(w, "chunk 1\n")
	})
	mux.HandleFunc("/ws", wsEcho(name))
	s := httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s
}

// wsEcho switches to a line protocol (as a WebSocket would) and echoes each line prefixed with
// the release's name; a request that does not ask for a WebSocket gets a 426.
func wsEcho(name string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			http.Error(w, "upgrade required", http.StatusUpgradeRequired)
			return
		}
		c, rw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		rw.Flush()
		for {
			line, err := rw.ReadString('\n')
			if err != nil {
				return
			}
			rw.WriteString(name + ": " + line)
			rw.Flush()
		}
	}
}

func addr(s *httptest.Server) string { return strings.TrimPrefix(s.URL, "http://") }

func freeAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func get(t *testing.T, c *http.Client, url string) (string, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.Header.Get("X-Release"), string(b)
}

func TestSwitchAndHTTPSemantics(t *testing.T) {
	blue, green := release(t, "blue"), release(t, "green")
	s := NewServer()
	listen := freeAddr(t)
	if _, err := s.Set(Route{Name: "web", Listen: listen, Backend: addr(blue)}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := &http.Client{Timeout: 5 * time.Second}
	url := "http://" + listen
	who, body := get(t, c, url+"/")
	if who != "blue" || !strings.Contains(body, "xff=127.0.0.1") || !strings.Contains(body, "proto=http") || !strings.Contains(body, "host="+listen) || !strings.Contains(body, "fhost="+listen) {
		t.Errorf("through the proxy: %s %q", who, body)
	}
	// A request body arrives whole.
	resp, err := c.Post(url+"/echo", "application/octet-stream", strings.NewReader(strings.Repeat("x", 1<<20)))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "blue got 1048576 bytes" {
		t.Errorf("body: %q", b)
	}
	// A large upload streams through whole; so does a large download, and HEAD answers without
	// a body.
	resp, err = c.Post(url+"/echo", "application/octet-stream", strings.NewReader(strings.Repeat("y", 16<<20)))
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "blue got 16777216 bytes" {
		t.Errorf("16 MiB upload: %q", b)
	}
	resp, err = c.Get(url + "/big")
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if len(b) != 8<<20 || resp.ContentLength != 8<<20 {
		t.Errorf("8 MiB download: %d bytes (Content-Length %d)", len(b), resp.ContentLength)
	}
	resp, err = c.Head(url + "/big")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ContentLength != 8<<20 {
		t.Errorf("HEAD: %d, Content-Length %d", resp.StatusCode, resp.ContentLength)
	}
	// Streaming: the first chunk arrives before the last is written.
	stream.Lock()
	stream.gate, stream.done = make(chan struct{}), false
	stream.Unlock()
	resp, err = c.Get(url + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(resp.Body).ReadString('\n')
	gate, done := streamState()
	if line != "chunk 0\n" || done {
		t.Errorf("streaming: %q arrived only after the whole response was written", line)
	}
	close(gate)
	resp.Body.Close()
	// Keep-alive: the same client connection serves both releases across a switch.
	prev, err := s.Set(Route{Name: "web", Listen: listen, Backend: addr(green)})
	if err != nil || prev != addr(blue) {
		t.Fatalf("switch: %q %v", prev, err)
	}
	if who, _ := get(t, c, url+"/"); who != "green" {
		t.Errorf("after the switch: %s", who)
	}
	st := s.Status()
	if len(st) != 1 || st[0].Backend != addr(green) || st[0].Previous != addr(blue) || st[0].Requests < 4 {
		t.Errorf("status: %+v", st)
	}
}

// In-flight requests on the old release finish during the drain; those longer than the drain
// are cut at its deadline and counted.
func TestDrain(t *testing.T) {
	blue, green := release(t, "blue"), release(t, "green")
	s := NewServer()
	listen := freeAddr(t)
	s.Set(Route{Name: "web", Listen: listen, Backend: addr(blue)})
	defer s.Close()
	url := "http://" + listen
	var wg sync.WaitGroup
	results := make([]string, 2)
	for i, d := range []string{"300ms", "5s"} {
		wg.Add(1)
		go func(i int, d string) {
			defer wg.Done()
			resp, err := http.Get(url + "/?sleep=" + d)
			if err != nil {
				results[i] = "error"
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			results[i] = fmt.Sprintf("%d %s", resp.StatusCode, strings.Fields(string(b) + " x")[0])
		}(i, d)
	}
	time.Sleep(100 * time.Millisecond)
	s.Set(Route{Name: "web", Listen: listen, Backend: addr(green)})
	if who, _ := get(t, http.DefaultClient, url+"/"); who != "green" {
		t.Errorf("a new request during the drain went to %s", who)
	}
	start := time.Now()
	cut, err := s.Drain(context.Background(), "web", addr(blue), 1*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if cut != 1 {
		t.Errorf("cut %d, want 1 (the 5 s request)", cut)
	}
	if d := time.Since(start); d < 900*time.Millisecond || d > 2*time.Second {
		t.Errorf("drain took %s, want about 1 s", d)
	}
	if results[0] != "200 blue" {
		t.Errorf("the 300 ms request on the old release: %q", results[0])
	}
	if results[1] != "error" {
		t.Errorf("the 5 s request was not cut: %q", results[1])
	}
}

// A WebSocket connection stays on the release it opened on and is closed at the drain deadline.
func TestWebSocket(t *testing.T) {
	blue, green := release(t, "blue"), release(t, "green")
	s := NewServer()
	listen := freeAddr(t)
	s.Set(Route{Name: "web", Listen: listen, Backend: addr(blue)})
	defer s.Close()
	c, err := net.Dial("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: app\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	br := bufio.NewReader(c)
	status, _ := br.ReadString('\n')
	if !strings.Contains(status, "101") {
		t.Fatalf("upgrade: %q", status)
	}
	for line, _ := br.ReadString('\n'); line != "\r\n"; line, _ = br.ReadString('\n') {
	}
	fmt.Fprintf(c, "hello\n")
	if line, _ := br.ReadString('\n'); line != "blue: hello\n" {
		t.Errorf("echo: %q", line)
	}
	s.Set(Route{Name: "web", Listen: listen, Backend: addr(green)})
	fmt.Fprintf(c, "still there\n")
	if line, _ := br.ReadString('\n'); line != "blue: still there\n" {
		t.Errorf("after the switch, the open connection: %q", line)
	}
	cut, _ := s.Drain(context.Background(), "web", addr(blue), 300*time.Millisecond)
	if cut != 1 {
		t.Errorf("cut %d, want the WebSocket connection", cut)
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := br.ReadString('\n'); err == nil {
		t.Error("the connection is still open after the drain deadline")
	}
}

// A release that cannot be reached right after a switch: requests fail back to the previous
// release at once, and the route says so.
func TestFailBack(t *testing.T) {
	blue := release(t, "blue")
	dead := freeAddr(t) // nothing listens there
	s := NewServer()
	listen := freeAddr(t)
	s.Set(Route{Name: "web", Listen: listen, Backend: addr(blue)})
	defer s.Close()
	s.Set(Route{Name: "web", Listen: listen, Backend: dead})
	for i := 0; i < 5; i++ {
		resp, err := http.Post("http://"+listen+"/echo", "text/plain", strings.NewReader("payload"))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "blue got 7 bytes" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, b)
		}
	}
	st := s.Status()[0]
	if !st.FailedOver || st.Backend != addr(blue) {
		t.Errorf("status: %+v", st)
	}
}

func TestTCPRoute(t *testing.T) {
	echo := func(name string) string {
		l, _ := net.Listen("tcp", "127.0.0.1:0")
		t.Cleanup(func() { l.Close() })
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					line, _ := bufio.NewReader(c).ReadString('\n')
					fmt.Fprintf(c, "%s %s", name, line)
				}()
			}
		}()
		return l.Addr().String()
	}
	a, b := echo("a"), echo("b")
	s := NewServer()
	listen := freeAddr(t)
	if _, err := s.Set(Route{Name: "db", Listen: listen, Protocol: "tcp", Backend: a}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ask := func() string {
		c, err := net.Dial("tcp", listen)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "ping\n")
		line, _ := bufio.NewReader(c).ReadString('\n')
		return line
	}
	if got := ask(); got != "a ping\n" {
		t.Errorf("%q", got)
	}
	s.Set(Route{Name: "db", Listen: listen, Protocol: "tcp", Backend: b})
	if got := ask(); got != "b ping\n" {
		t.Errorf("after the switch: %q", got)
	}
	// A held TCP route holds new connections: they reach the backend set when the hold ends.
	if err := s.Hold("db", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	go func() {
		c, err := net.Dial("tcp", listen)
		if err != nil {
			got <- err.Error()
			return
		}
		defer c.Close()
		fmt.Fprintf(c, "ping\n")
		line, _ := bufio.NewReader(c).ReadString('\n')
		got <- line
	}()
	select {
	case g := <-got:
		t.Fatalf("a held connection was answered: %q", g)
	case <-time.After(200 * time.Millisecond):
	}
	s.Set(Route{Name: "db", Listen: listen, Protocol: "tcp", Backend: a})
	if g := <-got; g != "a ping\n" {
		t.Errorf("the held connection got %q, want a's answer", g)
	}
}

// The control socket carries the same operations.
func TestControlSocket(t *testing.T) {
	blue := release(t, "blue")
	sock := t.TempDir() + "/ctl.sock"
	stop := startServe(t, NewServer(), sock)
	var resp *Response
	listen := freeAddr(t)
	if resp, _ = Ctl(sock, Request{Op: "set", Route: &Route{Name: "web", Listen: listen, Backend: addr(blue)}}); !resp.OK {
		t.Fatalf("set: %+v", resp)
	}
	resp, _ = Ctl(sock, Request{Op: "probe", URL: "http://" + listen + "/", Timeout: time.Second})
	if resp.Status != 200 || !strings.HasPrefix(resp.Body, "blue") {
		t.Errorf("probe: %+v", resp)
	}
	resp, _ = Ctl(sock, Request{Op: "probe", URL: "http://" + freeAddr(t) + "/", Timeout: time.Second})
	if resp.Error == "" {
		t.Errorf("probe of nothing: %+v", resp)
	}
	if resp, _ = Ctl(sock, Request{Op: "status"}); len(resp.Routes) != 1 || resp.Routes[0].Requests != 1 {
		t.Errorf("status: %+v", resp)
	}
	// A whole health check in one request: passes, or says why not within its deadline.
	until := func(url string) *Response {
		r, _ := Ctl(sock, Request{Op: "until", Until: &Until{Check: probe.Check{URL: url, Timeout: time.Second}, Interval: 20 * time.Millisecond, Healthy: 3, Deadline: 500 * time.Millisecond}})
		return r
	}
	if resp = until("http://" + listen + "/"); !resp.OK {
		t.Errorf("until on blue: %+v", resp)
	}
	start := time.Now()
	if resp = until("http://" + freeAddr(t) + "/"); resp.OK || !strings.Contains(resp.Error, "not healthy within 500ms") || time.Since(start) > 3*time.Second {
		t.Errorf("until on nothing: %+v after %s", resp, time.Since(start))
	}
	if resp, _ = Ctl(sock, Request{Op: "until", Until: &Until{Healthy: 0}}); resp.OK {
		t.Errorf("until without a check: %+v", resp)
	}
	stop()
}

// A session answers each line with one line, in order, beginning with its ready line: a bad
// request gets an error and the session goes on; the end of its input ends it.
func TestControlSession(t *testing.T) {
	blue := release(t, "blue")
	sock := t.TempDir() + "/ctl.sock"
	stop := startServe(t, NewServer(), sock)
	defer stop()
	listen := freeAddr(t)
	set, _ := json.Marshal(Request{Op: "set", Route: &Route{Name: "web", Listen: listen, Backend: addr(blue)}})
	in := strings.NewReader(string(set) + "\n" + `{"op":` + "\n\n" + `{"op":"status"}` + "\n" + `{"op":"nope"}`)
	var out strings.Builder
	if err := CtlSession(sock, in, &out); err != nil {
		t.Fatal(err)
	}
	var got []Response
	for _, line := range strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n") {
		var r Response
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("answer %q: %v", line, err)
		}
		got = append(got, r)
	}
	if len(got) != 5 {
		t.Fatalf("%d answers, want the ready line and 4:\n%s", len(got), out.String())
	}
	if !got[0].OK || !got[1].OK {
		t.Errorf("ready, set: %+v %+v", got[0], got[1])
	}
	if got[2].OK || !strings.Contains(got[2].Error, "control request") {
		t.Errorf("a bad line: %+v", got[2])
	}
	if len(got[3].Routes) != 1 || got[3].Routes[0].Name != "web" {
		t.Errorf("status: %+v", got[3])
	}
	if got[4].OK || !strings.Contains(got[4].Error, `unknown op "nope"`) {
		t.Errorf("an unknown op, the last line without its newline: %+v", got[4])
	}
	if rel, _ := get(t, http.DefaultClient, "http://"+listen+"/"); rel != "blue" {
		t.Errorf("the route set on the session serves release %q", rel)
	}
}

// An HTTP/1.0 client that asks for keep-alive (ab, many health checkers) keeps its connection,
// and the proxy speaks HTTP/1.1 to the app over kept-alive connections: without that, every
// such request closed the client's connection and dialled the app anew.
func TestHTTP10KeepAlive(t *testing.T) {
	backend := release(t, "blue")
	froms := map[string]bool{}
	s := NewServer()
	listen := freeAddr(t)
	if _, err := s.Set(Route{Name: "web", Listen: listen, Backend: addr(backend)}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c, err := net.Dial("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	for i := 0; i < 5; i++ {
		fmt.Fprintf(c, "GET /conn HTTP/1.0\r\nHost: %s\r\nConnection: Keep-Alive\r\n\r\n", listen)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d on one connection: %v", i+1, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(string(body), "blue") {
			t.Fatalf("request %d: %d %q", i+1, resp.StatusCode, body)
		}
		froms[strings.TrimPrefix(string(body), "blue from ")] = true
		if resp.Close || !strings.EqualFold(resp.Header.Get("Connection"), "keep-alive") {
			t.Fatalf("request %d: the proxy closes an HTTP/1.0 keep-alive connection (Connection: %q)", i+1, resp.Header.Get("Connection"))
		}
	}
	if len(froms) != 1 {
		t.Errorf("the proxy opened %d connections to the app for 5 requests, want 1: %v", len(froms), froms)
	}
	// A streamed answer of unknown length reaches an HTTP/1.0 client unchunked, ended by the
	// connection's close.
	stream.Lock()
	stream.gate, stream.done = make(chan struct{}), false
	stream.Unlock()
	gate, _ := streamState()
	close(gate)
	if all, err := readToClose(t, listen, "GET /stream HTTP/1.0\r\nConnection: Keep-Alive\r\n", 10*time.Second); err != nil || !strings.HasSuffix(all, "\r\n\r\nchunk 0\nchunk 1\n") {
		t.Errorf("a stream to an HTTP/1.0 client: %v %q", err, all)
	}
	// Without keep-alive, HTTP/1.0 closes after the answer, as it should.
	if all, err := readToClose(t, listen, "GET / HTTP/1.0\r\n", 5*time.Second); err != nil || !strings.Contains(all, "blue") {
		t.Errorf("HTTP/1.0 without keep-alive: %v %q", err, all)
	}
}

// readToClose sends a request (its first lines: a Host header and the end of the head follow)
// on a connection of its own and reads until the proxy closes it, for up to d.
func readToClose(t *testing.T, listen, head string, d time.Duration) (string, error) {
	t.Helper()
	c, err := net.Dial("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "%sHost: %s\r\n\r\n", head, listen)
	c.SetReadDeadline(time.Now().Add(d))
	all, err := io.ReadAll(c)
	return string(all), err
}

// A held route answers nothing new until it is set: then the held requests go to the backend
// set (the new release, or the old one put back); a hold that outlasts its timeout lets them
// go to the backend of that moment.
func TestHold(t *testing.T) {
	blue, green := release(t, "blue"), release(t, "green")
	s := NewServer()
	listen := freeAddr(t)
	if _, err := s.Set(Route{Name: "web", Listen: listen, Backend: addr(blue)}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := &http.Client{Timeout: 10 * time.Second}
	for _, tc := range []struct {
		to, want string
		timeout  time.Duration
	}{{addr(green), "green", 5 * time.Second}, {addr(blue), "blue", 5 * time.Second}, {"", "blue", 300 * time.Millisecond}} {
		if err := s.Hold("web", tc.timeout); err != nil {
			t.Fatal(err)
		}
		got := make(chan string, 8)
		for range 8 {
			go func() {
				resp, err := c.Get("http://" + listen + "/")
				if err != nil {
					got <- err.Error()
					return
				}
				resp.Body.Close()
				got <- resp.Header.Get("X-Release")
			}()
		}
		select {
		case g := <-got:
			if tc.to != "" {
				t.Fatalf("a held request was answered by %q before the route was set", g)
			}
			got <- g
		case <-time.After(200 * time.Millisecond):
		}
		start := time.Now()
		if tc.to != "" {
			if _, err := s.Set(Route{Name: "web", Listen: listen, Backend: tc.to}); err != nil {
				t.Fatal(err)
			}
		}
		for range 8 {
			if g := <-got; g != tc.want {
				t.Errorf("a held request went to %q, want %s", g, tc.want)
			}
		}
		if tc.to == "" && time.Since(start) > 2*time.Second {
			t.Errorf("the hold outlasted its timeout")
		}
	}
	if err := s.Hold("nope", time.Second); err == nil {
		t.Error("a hold of an unknown route")
	}
}
