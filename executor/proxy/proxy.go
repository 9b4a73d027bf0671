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
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
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
	Held       bool   `json:"held,omitempty"` // new requests wait (a held migration)
	Requests   int64  `json:"requests"`
	Errors     int64  `json:"errors"`
	InFlight   int64  `json:"in_flight"`
	// Conns is how many client connections the route has open; Refused, how many it closed
	// at once because of the proxy's connection caps.
	Conns   int64 `json:"conns,omitempty"`
	Refused int64 `json:"refused,omitempty"`
	// ClientErrors counts requests the client broke (a malformed or too slow body, a head
	// that never ended): answered with a 4xx, not the release's errors.
	ClientErrors int64 `json:"client_errors,omitempty"`
	// ProxyErrors counts requests and connections the proxy could not forward for want of
	// its own resources (descriptors, ephemeral ports): answered 503, not the release's
	// errors; LastProxyError says why.
	ProxyErrors    int64  `json:"proxy_errors,omitempty"`
	LastProxyError string `json:"last_proxy_error,omitempty"`
	// LastError is the release's last error, for the operator: clients are told nothing of it.
	LastError string `json:"last_error,omitempty"`
	// AcceptError is set while the route cannot accept connections (out of descriptors): the
	// proxy is then unhealthy, though it runs.
	AcceptError string `json:"accept_error,omitempty"`
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
	BindHost string
	// Limits bound what clients may hold of the proxy; read when the first route is set.
	Limits    Limits
	lim       Limits
	adm       *admission
	mu        sync.Mutex
	routes    map[string]*route
	inherited map[string]*os.File // listening sockets taken over, by address, until a route takes them
}

// NewServer returns a proxy with no routes.
func NewServer() *Server { return &Server{routes: map[string]*route{}} }

type route struct {
	Route
	lim            Limits
	adm            *admission
	ln             net.Listener
	srv            *fasthttp.Server
	accept         acceptHealth
	refused        atomic.Int64
	open           atomic.Int64 // client connections
	closed         atomic.Bool  // by the deployer: its listener's end is no failure
	draining       atomic.Bool  // shutting down: each answer closes its connection
	lastError      atomic.Pointer[string]
	clientErrors   atomic.Int64
	proxyErrors    atomic.Int64
	lastProxyError atomic.Pointer[string]
	current        atomic.Pointer[backend]
	previous       atomic.Pointer[backend]
	failed         atomic.Bool
	requests       atomic.Int64
	errors         atomic.Int64
	backends       sync.Map // addr -> *backend
	conns          sync.Map // net.Conn -> connState, for HTTP routes
	hold           atomic.Pointer[gate]
}

// gate holds a route's new requests and connections until it opens: when the route is set
// (to the new release, or back to the old one) or its timeout passes.
type gate struct {
	open  chan struct{}
	once  sync.Once
	timer *time.Timer
}

func (g *gate) release() { g.once.Do(func() { g.timer.Stop(); close(g.open) }) }

// pick is the backend a new request or connection goes to: the current one, once a hold
// (if any) has ended.
func (r *route) pick() *backend {
	if g := r.hold.Load(); g != nil {
		<-g.open
	}
	return r.current.Load()
}

// Hold makes the route hold new requests and connections (those in flight go on) until the
// route is set again or timeout passes, whichever comes first; then they go to the route's
// backend of that moment. For a migration that must not run while the old release serves.
func (s *Server) Hold(name string, timeout time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.routes[name]
	if r == nil {
		return fmt.Errorf("no route %q", name)
	}
	g := &gate{open: make(chan struct{})}
	g.timer = time.AfterFunc(timeout, func() { r.hold.CompareAndSwap(g, nil); g.release() })
	if old := r.hold.Swap(g); old != nil {
		old.release()
	}
	return nil
}

// Quiesce waits, up to timeout, until nothing is in flight on the route's current backend
// (a held route gets nothing new), and returns how much still is.
func (s *Server) Quiesce(ctx context.Context, name string, timeout time.Duration) (int64, error) {
	s.mu.Lock()
	r := s.routes[name]
	s.mu.Unlock()
	if r == nil {
		return 0, fmt.Errorf("no route %q", name)
	}
	b := r.current.Load()
	deadline := time.Now().Add(timeout)
	for b.inflight.Load() > 0 && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return b.inflight.Load(), ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return b.inflight.Load(), nil
}

// Release opens a route's hold, if any.
func (s *Server) Release(name string) {
	s.mu.Lock()
	r := s.routes[name]
	s.mu.Unlock()
	if r != nil {
		r.unhold()
	}
}

// unhold opens the route's hold, if any.
func (r *route) unhold() {
	if g := r.hold.Swap(nil); g != nil {
		// The backend may have been restarted during the hold (a put-back): its kept-alive
		// connections are dead, and the held requests must not meet them.
		r.current.Load().client.CloseIdleConnections()
		g.release()
	}
}

// backend is one release behind a route, with what is in flight on it.
type backend struct {
	addr     string
	client   *fasthttp.HostClient // slow endpoints are the app's business; drains bound them
	inflight atomic.Int64
	mu       sync.Mutex
	cancels  map[int64]func() // requests and connections, cut at the drain deadline
	next     int64
}

func newBackend(addr string) *backend {
	return &backend{addr: addr, cancels: map[int64]func(){}, client: newClient(addr)}
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
		if s.adm == nil {
			s.lim = s.Limits.resolve(openFilesLimit())
			s.adm = newAdmission(s.lim)
		}
		r = &route{Route: rt, lim: s.lim, adm: s.adm}
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
	defer r.unhold() // what was held goes to the backend set now
	old := r.current.Load()
	if old.addr == rt.Backend {
		// Already there, perhaps by a fail-back: now the deployer's decision, not a failure.
		r.failed.Store(false)
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
	n := b.cut() + r.cutConns(b)
	if prev := r.previous.Load(); prev == b {
		r.previous.Store(nil)
	}
	r.backends.Delete(addr)
	b.client.CloseIdleConnections()
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
		st := RouteStatus{Route: r.Route, FailedOver: r.failed.Load(), Requests: r.requests.Load(), Errors: r.errors.Load(), Held: r.hold.Load() != nil,
			Conns: r.open.Load(), Refused: r.refused.Load(), ClientErrors: r.clientErrors.Load(), AcceptError: r.accept.failing()}
		if e := r.lastError.Load(); e != nil {
			st.LastError = *e
		}
		st.ProxyErrors = r.proxyErrors.Load()
		if e := r.lastProxyError.Load(); e != nil {
			st.LastProxyError = *e
		}
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

// idleGrace is how long, once a proxy shuts down, a kept-alive connection between requests is
// left open for its client's next request (answered, and the connection closed after it): a
// connection closed while idle fails a request its client sent that moment, which a client
// sends again only when it may (not a POST).
var idleGrace = time.Second

// Shutdown stops accepting on every route and lets the connections it has finish: each is
// closed once its response is written; one idle between requests is closed after its next
// one, or once it has been idle for idleGrace (the listening sockets, handed over, go on
// accepting in the proxy that replaces this one). A request that arrived on a connection is
// always answered. It returns when nothing is in flight any more, or when ctx ends.
func (s *Server) Shutdown(ctx context.Context) {
	s.mu.Lock()
	routes := make([]*route, 0, len(s.routes))
	for _, r := range s.routes {
		routes = append(routes, r)
	}
	s.mu.Unlock()
	for _, r := range routes {
		r.closed.Store(true)
		r.draining.Store(true)
		r.ln.Close()
	}
	start := time.Now()
	for {
		busy := int64(0)
		closeIdle := time.Since(start) >= idleGrace
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < 100*time.Millisecond {
			closeIdle = true
		}
		for _, r := range routes {
			busy += r.busyConns()
			r.backends.Range(func(_, v any) bool { busy += v.(*backend).inflight.Load(); return true })
			busy += r.idleConns(closeIdle)
		}
		if busy == 0 {
			for _, r := range routes {
				if r.srv != nil {
					go r.srv.ShutdownWithContext(ctx) // what is left: nothing in flight
				}
			}
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// connState is where one client connection of an HTTP route is. It is stored once, when the
// connection opens; its state then changes in place, so that a request costs no map write.
type connState struct {
	state   atomic.Int32            // a fasthttp.ConnState
	since   time.Time               // when it opened
	backend atomic.Pointer[backend] // where its request in flight went, nil between requests
}

// cutConns closes the client connections whose request is in flight on b, and says how many.
func (r *route) cutConns(b *backend) int {
	n := 0
	r.conns.Range(func(c, v any) bool {
		if v.(*connState).backend.Load() == b {
			c.(net.Conn).Close()
			n++
		}
		return true
	})
	return n
}

func (r *route) trackConn(c net.Conn, st fasthttp.ConnState) {
	if cc, ok := c.(*clientConn); ok && st != fasthttp.StateNew {
		cc.a.setIdle(cc, st == fasthttp.StateIdle)
	}
	switch st {
	case fasthttp.StateNew:
		cs := &connState{since: time.Now()}
		cs.state.Store(int32(st))
		r.conns.Store(c, cs)
	case fasthttp.StateClosed, fasthttp.StateHijacked:
		r.conns.Delete(c) // a hijacked connection (WebSocket) is counted as in flight on its backend
	default:
		if v, ok := r.conns.Load(c); ok {
			v.(*connState).state.Store(int32(st))
		}
	}
}

// idleConns counts the route's connections idle between requests, and closes them when
// closeThem says so.
func (r *route) idleConns(closeThem bool) int64 {
	var n int64
	r.conns.Range(func(c, v any) bool {
		if fasthttp.ConnState(v.(*connState).state.Load()) == fasthttp.StateIdle {
			if closeThem {
				c.(net.Conn).Close()
			} else {
				n++
			}
		}
		return true
	})
	return n
}

// busyConns counts the connections with a request under way, or opened in the last 2 s and
// still to send their first: a client that just connected is about to.
func (r *route) busyConns() int64 {
	var n int64
	r.conns.Range(func(_, v any) bool {
		cs := v.(*connState)
		st := fasthttp.ConnState(cs.state.Load())
		if st == fasthttp.StateActive || st == fasthttp.StateNew && time.Since(cs.since) < 2*time.Second {
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
		r.closed.Store(true)
		r.ln.Close()
	}
}

// close stops the route: its listener and every client connection, at once.
func (r *route) close() {
	r.closed.Store(true)
	r.unhold()
	r.ln.Close()
	if r.srv != nil {
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // close idle connections, wait for none
		r.srv.ShutdownWithContext(ctx)
		r.conns.Range(func(c, _ any) bool { c.(net.Conn).Close(); return true })
	}
}

func (r *route) start() {
	ln := &listener{Listener: r.ln, health: &r.accept, adm: r.adm, open: &r.open, refused: &r.refused, http: r.Protocol != "tcp"}
	if r.Protocol == "tcp" {
		go r.serveTCP(ln)
		return
	}
	r.srv = &fasthttp.Server{
		Handler:                       r.serveHTTP,
		ErrorHandler:                  r.clientError,
		Name:                          "", // no Server header of the proxy's: the app's passes through
		NoDefaultServerHeader:         true,
		NoDefaultContentType:          true,
		NoDefaultDate:                 true,
		DisableHeaderNamesNormalizing: true,
		DisablePreParseMultipartForm:  true,
		StreamRequestBody:             true, // an upload of any size is passed on as it comes
		MaxRequestBodySize:            1 << 62,
		ReadBufferSize:                bufferSize,
		WriteBufferSize:               writeBufferSize,
		// A request's head must come within ReadTimeout (from the connection's opening to its
		// first byte, then from its first byte); its body is read under clientBody's deadlines.
		ReadTimeout:  r.lim.HeaderTimeout,
		IdleTimeout:  r.lim.IdleTimeout,
		WriteTimeout: r.lim.WriteIdle, // pushed on while a large answer is streamed
		// A connection that has sent nothing holds no read buffer (64 KiB) while it waits.
		ReduceMemoryUsage: true,
		Concurrency:       1 << 20, // the admission caps connections
		ConnState:         r.trackConn,
		Logger:            quietLogger{},
	}
	go func() {
		r.srv.Serve(ln)
		r.stopped()
	}()
}

// stopped records that the route's accept loop ended: only closing its listener should end it.
func (r *route) stopped() {
	if !r.closed.Load() {
		r.accept.failed(errors.New("the route's accept loop ended"))
		r.accept.stuck.Store(true)
	}
}

// clientError answers a request the server could not read (a malformed head, one that never
// ended): the client's fault, answered with a 4xx that says nothing of what it sent.
func (r *route) clientError(ctx *fasthttp.RequestCtx, err error) {
	r.clientErrors.Add(1)
	var small *fasthttp.ErrSmallBuffer
	switch {
	case errors.As(err, &small):
		ctx.Error("deployer proxy: the request's head is over 64 KiB.\n", fasthttp.StatusRequestHeaderFieldsTooLarge)
	case isTimeout(err):
		ctx.Error("deployer proxy: the request's head came too slowly.\n", fasthttp.StatusRequestTimeout)
	default:
		ctx.Error("deployer proxy: malformed request.\n", fasthttp.StatusBadRequest)
	}
}

// quietLogger drops fasthttp's own log lines (a client that went away, a malformed request):
// the route's counters say what matters.
type quietLogger struct{}

func (quietLogger) Printf(string, ...any) {}

// serveTCP forwards connections to the route's backend at the time they arrive.
func (r *route) serveTCP(ln net.Listener) {
	defer r.stopped()
	for {
		c, err := ln.Accept()
		if err != nil {
			return // closed: the listener retries every other error
		}
		r.requests.Add(1)
		go func() {
			defer c.Close()
			u, b, err := r.dial(r.pick())
			if isShortage(err) {
				r.proxyShortage(err)
				return
			}
			if err != nil {
				r.releaseError(err)
				return
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
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}
