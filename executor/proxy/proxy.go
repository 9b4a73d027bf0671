// Package proxy is the zero-downtime proxy: it owns each service's host port and forwards to the
// live release. A cutover switches a route to the new release atomically for new requests,
// lets requests in flight on the old release finish for up to the drain time and then cuts
// them. It runs inside a container built from the deployer's own binary (`deployer proxy
// serve`), with the host's network, and is told what to do through a unix socket inside that
// container (`deployer proxy ctl`, run with docker exec): no port is opened for control.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Route is the proxy's configuration for one service.
type Route struct {
	Name     string `json:"name"`
	Listen   string `json:"listen"`   // ":8080"
	Protocol string `json:"protocol"` // http or tcp
	Backend  string `json:"backend"`  // "172.18.0.5:5000"
}

// RouteStatus is a route with its counters.
type RouteStatus struct {
	Route
	Previous   string `json:"previous,omitempty"` // kept for fail-back while it drains
	FailedOver bool   `json:"failed_over,omitempty"`
	Requests   int64  `json:"requests"`
	Errors     int64  `json:"errors"`
	InFlight   int64  `json:"in_flight"`
}

// Server is a running proxy.
type Server struct {
	// StateFile keeps the routes across restarts; empty keeps them in memory only.
	StateFile string
	// Handover is where the unix sockets are through which an upgraded proxy takes over this
	// one's listening sockets (each proxy serves one, at Handover plus a suffix of its own);
	// empty: no handover.
	Handover    string
	ownHandover string
	// ReusePort lets a route share a port with a proxy of the same project that is too old to
	// hand its sockets over (the deployer sets it for that upgrade only).
	ReusePort bool
	// BindHost, when set, is where a route's listen address without a host (":8080") binds;
	// empty: every interface, as on an engine's host. The in-memory engine binds 127.0.0.1.
	BindHost  string
	mu        sync.Mutex
	routes    map[string]*route
	inherited map[string]*os.File // listening sockets taken over, by address, until a route takes them
}

// NewServer returns a proxy with no routes.
func NewServer() *Server { return &Server{routes: map[string]*route{}} }

type route struct {
	Route
	ln       net.Listener
	srv      *http.Server
	current  atomic.Pointer[backend]
	previous atomic.Pointer[backend]
	failed   atomic.Bool
	requests atomic.Int64
	errors   atomic.Int64
	backends sync.Map // addr -> *backend
	conns    sync.Map // net.Conn -> connState, for HTTP routes
}

// backend is one release behind a route, with what is in flight on it.
type backend struct {
	addr      string
	transport *http.Transport
	inflight  atomic.Int64
	mu        sync.Mutex
	cancels   map[int64]func() // requests and connections, cut at the drain deadline
	next      int64
}

func newBackend(addr string) *backend {
	return &backend{addr: addr, cancels: map[int64]func(){},
		transport: &http.Transport{
			Proxy:                 nil,
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:          256,
			MaxIdleConnsPerHost:   256,
			IdleConnTimeout:       90 * time.Second,
			ResponseHeaderTimeout: 0, // slow endpoints are the app's business; drains bound them
			ForceAttemptHTTP2:     false,
		}}
}

// begin registers something in flight; end must be called once it is over.
func (b *backend) begin(cancel func()) (end func()) {
	b.inflight.Add(1)
	b.mu.Lock()
	id := b.next
	b.next++
	b.cancels[id] = cancel
	b.mu.Unlock()
	return func() {
		b.mu.Lock()
		delete(b.cancels, id)
		b.mu.Unlock()
		b.inflight.Add(-1)
	}
}

// cut cancels everything still in flight and returns how many there were.
func (b *backend) cut() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.cancels {
		c()
	}
	return len(b.cancels)
}

func (r *route) backendFor(addr string) *backend {
	if b, ok := r.backends.Load(addr); ok {
		return b.(*backend)
	}
	b, _ := r.backends.LoadOrStore(addr, newBackend(addr))
	return b.(*backend)
}

// Set adds a route or switches an existing one to another backend, atomically for new requests
// and connections. The backend it replaces is kept as the fail-back target until Drain.
func (s *Server) Set(rt Route) (previous string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rt.Protocol == "" {
		rt.Protocol = "http"
	}
	r := s.routes[rt.Name]
	if r != nil && (r.Listen != rt.Listen || r.Protocol != rt.Protocol) {
		r.close()
		delete(s.routes, rt.Name)
		r = nil
	}
	if r == nil {
		r = &route{Route: rt}
		b := r.backendFor(rt.Backend)
		r.current.Store(b)
		ln, err := s.listen(rt.Listen)
		if err != nil {
			return "", fmt.Errorf("listen on %s: %w", rt.Listen, err)
		}
		r.ln = ln
		s.routes[rt.Name] = r
		r.start()
		return "", nil
	}
	old := r.current.Load()
	if old.addr == rt.Backend {
		return "", nil
	}
	r.Backend = rt.Backend
	r.previous.Store(old)
	r.failed.Store(false)
	r.current.Store(r.backendFor(rt.Backend))
	return old.addr, nil
}

// Drain waits until nothing is in flight on a backend of a route, for up to timeout, then cuts
// what is left and forgets the backend. It returns how many requests or connections were cut.
func (s *Server) Drain(ctx context.Context, name, addr string, timeout time.Duration) (int, error) {
	s.mu.Lock()
	r := s.routes[name]
	s.mu.Unlock()
	if r == nil {
		return 0, fmt.Errorf("no route %q", name)
	}
	v, ok := r.backends.Load(addr)
	if !ok {
		return 0, nil
	}
	b := v.(*backend)
	if cur := r.current.Load(); cur == b {
		return 0, fmt.Errorf("route %q sends new requests to %s: switch it before draining", name, addr)
	}
	deadline := time.Now().Add(timeout)
	for b.inflight.Load() > 0 && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	n := b.cut()
	if prev := r.previous.Load(); prev == b {
		r.previous.Store(nil)
	}
	r.backends.Delete(addr)
	b.transport.CloseIdleConnections()
	return n, nil
}

// Remove closes a route's listener.
func (s *Server) Remove(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r := s.routes[name]; r != nil {
		r.close()
		delete(s.routes, name)
	}
}

// Status reports every route with its counters.
func (s *Server) Status() []RouteStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []RouteStatus
	for _, r := range s.routes {
		st := RouteStatus{Route: r.Route, FailedOver: r.failed.Load(), Requests: r.requests.Load(), Errors: r.errors.Load()}
		st.Backend = r.current.Load().addr
		if p := r.previous.Load(); p != nil {
			st.Previous = p.addr
		}
		r.backends.Range(func(_, v any) bool { st.InFlight += v.(*backend).inflight.Load(); return true })
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Shutdown stops accepting on every route and lets the connections it has finish: each is
// closed once its response is written, idle keep-alive connections at once; a request that
// arrived on a connection is always answered. It returns when nothing is in flight any more, or
// when ctx ends.
func (s *Server) Shutdown(ctx context.Context) {
	s.mu.Lock()
	routes := make([]*route, 0, len(s.routes))
	for _, r := range s.routes {
		routes = append(routes, r)
	}
	s.mu.Unlock()
	for _, r := range routes {
		r.ln.Close()
		if r.srv != nil {
			// Not http.Server.Shutdown: it drops a request read after it began, unanswered.
			r.srv.SetKeepAlivesEnabled(false)
		}
	}
	for {
		busy := int64(0)
		for _, r := range routes {
			busy += r.busyConns()
			r.backends.Range(func(_, v any) bool { busy += v.(*backend).inflight.Load(); return true })
		}
		if busy == 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// connState is where one client connection of an HTTP route is.
type connState struct {
	state http.ConnState
	since time.Time
}

func (r *route) trackConn(c net.Conn, st http.ConnState) {
	switch st {
	case http.StateClosed, http.StateHijacked:
		r.conns.Delete(c) // a hijacked connection (WebSocket) is counted as in flight on its backend
	default:
		r.conns.Store(c, connState{st, time.Now()})
	}
}

// busyConns counts the connections with a request under way, or opened in the last 2 s and
// still to send their first: a client that just connected is about to.
func (r *route) busyConns() int64 {
	var n int64
	r.conns.Range(func(_, v any) bool {
		cs := v.(connState)
		if cs.state == http.StateActive || cs.state == http.StateNew && time.Since(cs.since) < 2*time.Second {
			n++
		}
		return true
	})
	return n
}

// Close stops accepting on every route; what is in flight finishes on its own.
func (s *Server) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.routes {
		r.ln.Close()
	}
}

func (r *route) close() {
	if r.srv != nil {
		r.srv.Close()
	}
	r.ln.Close()
}

func (r *route) start() {
	if r.Protocol == "tcp" {
		go r.serveTCP()
		return
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			b := pr.In.Context().Value(backendKey{}).(*backend)
			pr.SetURL(&url.URL{Scheme: "http", Host: b.addr})
			pr.Out.Host = pr.In.Host // the app sees the name the client used
			pr.SetXForwarded()
		},
		Transport: &failover{r: r},
		// No FlushInterval: ReverseProxy flushes responses of unknown length (streams, server-sent
		// events) as they come by itself; flushing every write would cost a system call per chunk.
		ErrorHandler: func(w http.ResponseWriter, req *http.Request, err error) {
			r.errors.Add(1)
			if errors.Is(err, context.Canceled) {
				if client, ok := req.Context().Value(clientKey{}).(context.Context); ok && client.Err() != nil {
					return // the client went away
				}
				// Cut at the drain deadline: abort the client's connection, so that it sees the
				// request fail rather than an empty answer.
				panic(http.ErrAbortHandler)
			}
			http.Error(w, "deployer proxy: the release did not answer: "+err.Error(), http.StatusBadGateway)
		},
	}
	r.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			r.requests.Add(1)
			b := r.current.Load()
			ctx, cancel := context.WithCancel(req.Context())
			defer cancel()
			holder := &backendHolder{b: b, end: b.begin(cancel)}
			defer func() { holder.end() }()
			ctx = context.WithValue(ctx, backendKey{}, b)
			ctx = context.WithValue(ctx, clientKey{}, req.Context())
			ctx = context.WithValue(ctx, holderKey{}, holder)
			rp.ServeHTTP(w, req.WithContext(ctx))
		}),
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       120 * time.Second,
		ConnState:         r.trackConn,
	}
	go r.srv.Serve(r.ln)
}

type backendKey struct{}
type clientKey struct{}
type holderKey struct{}

// backendHolder tracks which backend a request is counted on, which changes when it fails back.
type backendHolder struct {
	b   *backend
	end func()
}

// failover sends a request to the route's backend; when that backend cannot be reached at all
// (nothing was sent) and a previous one is still draining, the route fails back to it at once
// and the request goes there instead: a release that died right after a cutover costs no request.
type failover struct{ r *route }

func (f *failover) RoundTrip(req *http.Request) (*http.Response, error) {
	b := req.Context().Value(backendKey{}).(*backend)
	body := &guardedBody{rc: req.Body}
	if req.Body != nil && req.Body != http.NoBody {
		req.Body = body
	}
	resp, err := b.transport.RoundTrip(req)
	if err == nil || !isDialError(err) || body.read {
		return resp, err
	}
	prev := f.r.previous.Load()
	if prev == nil || prev == b {
		return resp, err
	}
	// Fail back: new requests go to the previous release until the deployer decides.
	f.r.current.CompareAndSwap(b, prev)
	f.r.failed.Store(true)
	if h, ok := req.Context().Value(holderKey{}).(*backendHolder); ok {
		h.end()
		h.b, h.end = prev, prev.begin(func() {})
	}
	out := req.Clone(req.Context())
	out.URL.Host = prev.addr
	out.Body = body.rc
	if body.rc == nil {
		out.Body = nil
	}
	return prev.transport.RoundTrip(out)
}

// guardedBody lets a request be sent again after a failed dial: it records whether anything was
// read and ignores the Close that a failed round trip does.
type guardedBody struct {
	rc   io.ReadCloser
	read bool
}

func (g *guardedBody) Read(p []byte) (int, error) {
	n, err := g.rc.Read(p)
	if n > 0 {
		g.read = true
	}
	return n, err
}

func (g *guardedBody) Close() error { return nil }

func isDialError(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "dial"
}

// serveTCP forwards connections to the route's backend at the time they arrive.
func (r *route) serveTCP() {
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.requests.Add(1)
		b := r.current.Load()
		go func() {
			defer c.Close()
			u, err := net.DialTimeout("tcp", b.addr, 5*time.Second)
			if err != nil {
				if prev := r.previous.Load(); prev != nil && prev != b {
					r.current.CompareAndSwap(b, prev)
					r.failed.Store(true)
					b = prev
					u, err = net.DialTimeout("tcp", b.addr, 5*time.Second)
				}
				if err != nil {
					r.errors.Add(1)
					return
				}
			}
			defer u.Close()
			end := b.begin(func() { c.Close(); u.Close() })
			defer end()
			done := make(chan struct{}, 2)
			go func() { io.Copy(u, c); closeWrite(u); done <- struct{}{} }()
			go func() { io.Copy(c, u); closeWrite(c); done <- struct{}{} }()
			<-done
			<-done
		}()
	}
}

func closeWrite(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
}
