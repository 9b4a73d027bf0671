package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/deployer-dev/deployer/executor/probe"
)

// SocketPath is where the proxy listens for control inside its container.
const SocketPath = "/run/deployer-proxy.sock"

// Request is one control command.
type Request struct {
	Op      string        `json:"op"` // set, drain, hold, release, remove, status, probe, smoke, ping, stop
	Route   *Route        `json:"route,omitempty"`
	Name    string        `json:"name,omitempty"`
	Backend string        `json:"backend,omitempty"`
	Timeout time.Duration `json:"timeout,omitempty"`
	URL     string        `json:"url,omitempty"`
	Load    *probe.Load   `json:"load,omitempty"` // smoke
	// Wait is how long a hold waits for what is in flight on the route to finish.
	Wait time.Duration `json:"wait,omitempty"`
	// Until is a whole health check (op until): the proxy makes its attempts itself and
	// answers once, instead of one exec per attempt.
	Until *Until `json:"until,omitempty"`
}

// Until is a health check the proxy runs to its end: Check until Healthy passes in a row,
// every Interval, within Deadline.
type Until struct {
	Check    probe.Check   `json:"check"`
	Interval time.Duration `json:"interval"`
	Healthy  int           `json:"healthy"`
	Deadline time.Duration `json:"deadline"`
}

// Response answers a Request.
type Response struct {
	OK       bool              `json:"ok"`
	Error    string            `json:"error,omitempty"`
	Previous string            `json:"previous,omitempty"`
	Cut      int               `json:"cut,omitempty"`
	Routes   []RouteStatus     `json:"routes,omitempty"`
	Status   int               `json:"status,omitempty"` // probe
	Body     string            `json:"body,omitempty"`   // probe
	Load     *probe.LoadResult `json:"load,omitempty"`   // smoke
}

// A control request must arrive whole within ctlRequestTimeout, in at most maxCtlRequest bytes.
var ctlRequestTimeout = 10 * time.Second // a variable for the tests

// ctlQuickTimeout bounds the wait for the answer to a request a proxy answers at once.
var ctlQuickTimeout = 30 * time.Second

const maxCtlRequest = 1 << 20

// Serve runs the proxy until ctx ends or a stop command arrives, then stops accepting and lets
// what is in flight finish for up to grace.
func (s *Server) Serve(ctx context.Context, socket string, grace time.Duration) error {
	if s.Handover != "" {
		s.ownHandover = fmt.Sprintf("%s.%d-%d", s.Handover, os.Getpid(), time.Now().UnixNano())
		if err := s.inherit(s.Handover); err != nil {
			fmt.Fprintf(os.Stderr, "deployer proxy: %v; opening new sockets\n", err)
		} else if addrs := s.inheritedAddrs(); len(addrs) > 0 {
			fmt.Fprintf(os.Stderr, "deployer proxy: took over the listening sockets of the proxy before this one: %s\n", strings.Join(addrs, " "))
		}
	}
	s.load()
	s.dropInherited()
	if s.Handover != "" {
		hln, err := s.serveHandover(s.ownHandover)
		if err != nil {
			return err
		}
		defer os.Remove(s.ownHandover)
		defer hln.Close()
	}
	if err := os.MkdirAll(filepath.Dir(socket), 0o700); err != nil { // FROM scratch has no /run
		return fmt.Errorf("control socket %s: %w", socket, err)
	}
	os.Remove(socket)
	ln, err := net.Listen("unix", socket)
	if err != nil {
		return fmt.Errorf("control socket %s: %w", socket, err)
	}
	defer ln.Close()
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	// A descriptor kept for the deployer: a proxy out of them still answers `status`.
	sp := newSpare()
	defer sp.give()
	for {
		// Only closing the socket ends the loop: an error of the moment (out of descriptors
		// under a flood on the routes) must not stop the proxy.
		c, err := acceptLoop(ln, nil, sp)
		if err != nil {
			break
		}
		go func() {
			defer sp.takeBack(c) // closed: its descriptor is the spare again if it was
			var req Request
			// A request is one line of JSON, sent at once: bounded in size and time.
			c.SetReadDeadline(time.Now().Add(ctlRequestTimeout))
			if err := json.NewDecoder(bufio.NewReader(io.LimitReader(c, maxCtlRequest))).Decode(&req); err != nil {
				json.NewEncoder(c).Encode(Response{Error: "bad request: " + err.Error()})
				return
			}
			c.SetReadDeadline(time.Time{})
			resp := s.handle(ctx, req)
			json.NewEncoder(c).Encode(resp)
			if req.Op == "stop" {
				stop()
			}
		}()
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	s.Shutdown(sctx)
	return nil
}

func (s *Server) handle(ctx context.Context, req Request) Response {
	switch req.Op {
	case "ping", "stop":
		return Response{OK: true}
	case "status":
		return Response{OK: true, Routes: s.Status()}
	case "set":
		if req.Route == nil {
			return Response{Error: "set needs a route"}
		}
		prev, err := s.Set(*req.Route)
		if err != nil {
			return Response{Error: err.Error()}
		}
		s.save()
		return Response{OK: true, Previous: prev}
	case "drain":
		n, err := s.Drain(ctx, req.Name, req.Backend, req.Timeout)
		if err != nil {
			return Response{Error: err.Error()}
		}
		return Response{OK: true, Cut: n}
	case "hold":
		if err := s.Hold(req.Name, req.Timeout); err != nil {
			return Response{Error: err.Error()}
		}
		left, err := s.Quiesce(ctx, req.Name, req.Wait)
		if err != nil {
			return Response{Error: err.Error()}
		}
		return Response{OK: true, Cut: int(left)}
	case "release":
		s.Release(req.Name)
		return Response{OK: true}
	case "remove":
		s.Remove(req.Name)
		s.save()
		return Response{OK: true}
	case "probe":
		return probeOnce(ctx, req.URL, req.Timeout)
	case "until":
		u := req.Until
		if u == nil || u.Healthy < 1 || u.Deadline <= 0 || u.Deadline > time.Hour {
			return Response{Error: "until needs a check with healthy >= 1 and a deadline up to 1h"}
		}
		get := func(ctx context.Context, c probe.Check) probe.Result {
			r := probeOnce(ctx, c.URL, c.Timeout)
			if r.Error != "" {
				return probe.Result{Err: errors.New(r.Error)}
			}
			return probe.Result{Status: r.Status, Body: r.Body}
		}
		if err := probe.UntilWith(ctx, get, u.Check, max(u.Interval, 10*time.Millisecond), u.Healthy, u.Deadline, nil); err != nil {
			return Response{Error: err.Error()}
		}
		return Response{OK: true}
	case "smoke":
		// A candidate's smoke load, sent from the proxy's place on the engine's host.
		if req.Load == nil || len(req.Load.Paths) == 0 {
			return Response{Error: "smoke needs a load with paths"}
		}
		return Response{OK: true, Load: req.Load.Run(ctx)}
	}
	return Response{Error: fmt.Sprintf("unknown op %q", req.Op)}
}

var probeClient = &http.Client{
	Transport:     &http.Transport{DisableKeepAlives: true, Proxy: nil, DialContext: dialOwn},
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// dialOwn connects as one of the proxy's own connections: its port is bound and known before
// it connects, so that a route it reaches admits it whatever the caps (a flood of clients must
// not fail the deployer's health checks of the live release).
func dialOwn(ctx context.Context, network, addr string) (net.Conn, error) {
	var mu sync.Mutex
	var ports []int // one for each address tried ("localhost": ::1, then 127.0.0.1)
	d := net.Dialer{Control: func(network, address string, rc syscall.RawConn) error {
		var berr error
		err := rc.Control(func(fd uintptr) {
			var sa syscall.Sockaddr = &syscall.SockaddrInet4{}
			if network == "tcp6" {
				sa = &syscall.SockaddrInet6{}
			}
			if berr = syscall.Bind(int(fd), sa); berr != nil {
				return
			}
			got, err := syscall.Getsockname(int(fd))
			if err != nil {
				berr = err
				return
			}
			port := 0
			switch a := got.(type) {
			case *syscall.SockaddrInet4:
				port = a.Port
			case *syscall.SockaddrInet6:
				port = a.Port
			}
			ownConns.Store(port, struct{}{})
			mu.Lock()
			ports = append(ports, port)
			mu.Unlock()
		})
		if err != nil {
			return err
		}
		return berr
	}}
	c, err := d.DialContext(ctx, network, addr)
	kept := 0
	if err == nil {
		if a, ok := c.LocalAddr().(*net.TCPAddr); ok {
			kept = a.Port
		}
	}
	mu.Lock()
	for _, p := range ports {
		if p != kept {
			ownConns.Delete(p) // an address tried and given up
		}
	}
	mu.Unlock()
	if err != nil {
		return nil, err
	}
	return &ownConn{Conn: c, port: kept}, nil
}

// ownConn is one of the proxy's own connections; closing it forgets its port.
type ownConn struct {
	net.Conn
	port int
	once sync.Once
}

func (c *ownConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { ownConns.Delete(c.port) })
	return err
}

// probeOnce runs one HTTP GET from inside the proxy's network, for health checks.
func probeOnce(ctx context.Context, url string, timeout time.Duration) Response {
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return Response{Error: err.Error()}
	}
	req.Header.Set("User-Agent", "deployer-probe")
	resp, err := probeClient.Do(req)
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return Response{OK: true, Error: fmt.Sprintf("no answer within %s", timeout)}
		}
		var ue interface{ Unwrap() error }
		if errors.As(err, &ue) && ue.Unwrap() != nil {
			err = ue.Unwrap()
		}
		return Response{OK: true, Error: err.Error()}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	return Response{OK: true, Status: resp.StatusCode, Body: string(b)}
}

// Ctl sends one request to the proxy's control socket and returns its answer.
func Ctl(socket string, req Request) (*Response, error) {
	c, err := net.DialTimeout("unix", socket, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("the proxy does not answer on %s: %w", socket, err)
	}
	defer c.Close()
	switch req.Op {
	case "ping", "status", "set", "remove", "release", "stop":
		// Answered at once by a proxy that works: one that does not is not waited for
		// (`deployer status` then says the proxy does not answer, instead of hanging).
		c.SetDeadline(time.Now().Add(ctlQuickTimeout))
	}
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return nil, err
	}
	var resp Response
	if err := json.NewDecoder(c).Decode(&resp); err != nil {
		return nil, fmt.Errorf("the proxy's answer: %w", err)
	}
	return &resp, nil
}

// SessionArg, given to `deployer proxy ctl` in place of a request, makes it a session: one
// docker exec for a whole run instead of one per request.
const SessionArg = "-"

// CtlSession answers requests, one JSON object per line read from in, each with one line of
// JSON written to out, until in ends. Before the first it writes a ready line ({"ok":true}):
// a deployer too old for sessions fails on "-" without writing one, and the caller then sends
// one exec per request instead. A request the proxy cannot answer gets an answer with its error.
func CtlSession(socket string, in io.Reader, out io.Writer) error {
	enc := json.NewEncoder(out)
	if err := enc.Encode(Response{OK: true}); err != nil {
		return err
	}
	r := bufio.NewReader(in)
	for {
		line, err := r.ReadBytes('\n')
		if len(strings.TrimSpace(string(line))) > 0 {
			var resp *Response
			req, perr := ParseRequest(string(line))
			if perr != nil {
				resp = &Response{Error: "control request: " + perr.Error()}
			} else if resp, perr = Ctl(socket, req); perr != nil {
				resp = &Response{Error: perr.Error()}
			}
			if werr := enc.Encode(resp); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// ParseRequest reads a request given on the command line as JSON.
func ParseRequest(s string) (Request, error) {
	var req Request
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	err := dec.Decode(&req)
	return req, err
}

// save writes the routes to the state file, so that a restarted proxy (a reboot) serves again
// at once.
func (s *Server) save() {
	if s.StateFile == "" {
		return
	}
	var routes []Route
	for _, r := range s.Status() {
		routes = append(routes, r.Route)
	}
	b, _ := json.Marshal(routes)
	tmp := s.StateFile + ".tmp"
	if os.WriteFile(tmp, b, 0o600) == nil {
		os.Rename(tmp, s.StateFile)
	}
}

// load restores the routes of the state file.
func (s *Server) load() {
	if s.StateFile == "" {
		return
	}
	b, err := os.ReadFile(s.StateFile)
	if err != nil {
		return
	}
	var routes []Route
	if json.Unmarshal(b, &routes) != nil {
		return
	}
	for _, r := range routes {
		if _, err := s.Set(r); err != nil {
			fmt.Fprintf(os.Stderr, "deployer proxy: route %s: %v\n", r.Name, err)
		}
	}
}
