package proxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// The proxy faces the internet: whatever a client sends, or does not send, it holds a bounded
// share of the proxy for a bounded time, and the proxy goes on accepting others. Each bound
// below has a default; README "The proxy under hostile clients" states them.

// Limits bound what clients may hold of the proxy. A zero field takes its default.
type Limits struct {
	// MaxConns is how many client connections the proxy keeps open at once, all routes
	// together; more are answered 503 and closed. Default 4096, and never more than half of
	// the descriptors the process may open (each connection may need one to the app too).
	MaxConns int
	// MaxConnsPerAddr is how many of them one client address may hold (an IPv6 client is
	// counted by its /64, which one host usually has whole); more are answered 429 and
	// closed. Default 256.
	MaxConnsPerAddr int
	// HeaderTimeout is how long a request's head may take to arrive: from the connection's
	// opening to its first byte, and again from its first byte to its end (slowloris).
	// Default 10s.
	HeaderTimeout time.Duration
	// IdleTimeout is how long a kept-alive connection may wait for its next request.
	// Default 120s.
	IdleTimeout time.Duration
	// BodyIdle is how long a read of a request body may wait for the next bytes. Default 60s.
	BodyIdle time.Duration
	// BodyMinRate is how many bytes a second a request body must average once BodyGrace has
	// passed, counting only the time spent waiting for the client (not for the app): a body
	// that trickles in is cut, a large upload at any usable speed is not. Default 1024.
	BodyMinRate int
	// BodyGrace is the time a body is given before BodyMinRate applies. Default 10s.
	BodyGrace time.Duration
	// WriteIdle is how long a write to the client may wait for it to read: a client that
	// stops reading a response (or a WebSocket's messages) is cut after that. Default 60s.
	WriteIdle time.Duration
}

// DefaultLimits are the bounds of a proxy whose Limits are not set.
var DefaultLimits = Limits{
	MaxConns:        4096,
	MaxConnsPerAddr: 256,
	HeaderTimeout:   10 * time.Second,
	IdleTimeout:     120 * time.Second,
	BodyIdle:        60 * time.Second,
	BodyMinRate:     1024,
	BodyGrace:       10 * time.Second,
	WriteIdle:       60 * time.Second,
}

// descriptorReserve is what the proxy keeps of its descriptors for itself: its listening
// sockets, the control socket, the state file, a handover, the connections being refused.
const descriptorReserve = 128

// resolve fills the zero fields of l with the defaults, and bounds MaxConns by the descriptors
// the process may open (nofile, 0 when unknown).
func (l Limits) resolve(nofile uint64) Limits {
	d := DefaultLimits
	set := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	setD := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	explicit := l.MaxConns > 0
	set(&l.MaxConns, d.MaxConns)
	set(&l.MaxConnsPerAddr, d.MaxConnsPerAddr)
	set(&l.BodyMinRate, d.BodyMinRate)
	setD(&l.HeaderTimeout, d.HeaderTimeout)
	setD(&l.IdleTimeout, d.IdleTimeout)
	setD(&l.BodyIdle, d.BodyIdle)
	setD(&l.BodyGrace, d.BodyGrace)
	setD(&l.WriteIdle, d.WriteIdle)
	if !explicit && nofile > 0 {
		avail := max(int(min(nofile, 1<<30))-descriptorReserve, int(min(nofile, 1<<30))/2)
		l.MaxConns = max(min(l.MaxConns, avail/2), 1)
	}
	return l
}

// openFilesLimit is how many descriptors the process may open (Go raises the soft limit to
// the hard one at start), 0 when unknown.
func openFilesLimit() uint64 {
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) != nil {
		return 0
	}
	return rl.Cur
}

// admission counts the proxy's client connections, in all and by address, and admits a new
// one only within the caps. At the cap in all, a new connection takes the place of the one that
// has been idle longest between requests (kept-alive, nothing in flight): idle connections,
// from one client or many, never lock others out. A TCP route's connections (whose idleness
// the proxy cannot see) hold at most half the cap, so that they cannot starve HTTP routes; and
// the proxy's own probes (the deployer's health checks of the live release) are admitted
// whatever the caps.
type admission struct {
	max, perAddr int
	mu           sync.Mutex
	total        int
	tunnels      int // a TCP route's connections
	byAddr       map[netip.Addr]int
	idle         idleList // HTTP connections between requests, the longest idle first
	evicted      atomic.Int64
}

func newAdmission(l Limits) *admission {
	return &admission{max: l.MaxConns, perAddr: l.MaxConnsPerAddr, byAddr: map[netip.Addr]int{}}
}

// idleList is a list of connections, in the order they went idle (O(1) to add, remove, evict).
type idleList struct{ head, tail *clientConn }

func (l *idleList) push(c *clientConn) {
	c.prev, c.next = l.tail, nil
	if l.tail != nil {
		l.tail.next = c
	} else {
		l.head = c
	}
	l.tail = c
	c.listed = true
}

func (l *idleList) remove(c *clientConn) {
	if !c.listed {
		return
	}
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		l.head = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	} else {
		l.tail = c.prev
	}
	c.prev, c.next, c.listed = nil, nil, false
}

// setIdle records that an HTTP connection waits for its next request (idle) or not.
func (a *admission) setIdle(c *clientConn, idle bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if c.gone {
		return
	}
	a.idle.remove(c)
	if idle {
		a.idle.push(c)
	}
}

// evictIdle closes the connection idle longest, and says whether there was one. Its client
// meets what a server's idle timeout does to a kept-alive connection, which HTTP clients
// expect (they retry a request that found its connection closed).
func (a *admission) evictIdle() bool {
	a.mu.Lock()
	c := a.idle.head
	if c != nil {
		a.idle.remove(c)
		c.gone = true
	}
	a.mu.Unlock()
	if c == nil {
		return false
	}
	a.evicted.Add(1)
	c.Close()
	return true
}

// ownConns are the ports of the proxy's own connections to its routes (its probes, bound to
// every address): admitted whatever the caps.
var ownConns sync.Map // int -> struct{}

// isOwn says whether c is one of the proxy's own connections: from a port of those, and from
// this host (its source is the address it came to, which no other host can claim).
func isOwn(c net.Conn) bool {
	from, err1 := netip.ParseAddrPort(c.RemoteAddr().String())
	to, err2 := netip.ParseAddrPort(c.LocalAddr().String())
	if err1 != nil || err2 != nil || from.Addr().Unmap() != to.Addr().Unmap() {
		return false
	}
	_, ok := ownConns.Load(int(from.Port()))
	return ok
}

// addrKey is what a client is counted by: its address, an IPv6 one by its /64.
func addrKey(a net.Addr) netip.Addr {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	ip := ap.Addr().Unmap()
	if ip.Is6() {
		if p, err := ip.Prefix(64); err == nil {
			return p.Addr()
		}
	}
	return ip
}

// refusal says why a connection was not admitted.
type refusal int

const (
	admitted refusal = iota
	tooManyConns
	tooManyFromAddr
)

// admit counts c in (and in open, its route's count), or says why not; tunnel says c is a TCP
// route's.
func (a *admission) admit(c net.Conn, open *atomic.Int64, tunnel bool) (net.Conn, refusal) {
	key := addrKey(c.RemoteAddr())
	own := isOwn(c)
	for try := 0; ; try++ {
		a.mu.Lock()
		switch {
		case own:
		case a.byAddr[key] >= a.perAddr:
			a.mu.Unlock()
			return nil, tooManyFromAddr
		case tunnel && a.tunnels >= max(a.max/2, 1):
			a.mu.Unlock()
			return nil, tooManyConns
		case a.total >= a.max:
			a.mu.Unlock()
			// An idle connection makes room; a few tries, as another new one may take it.
			if try < 4 && a.evictIdle() {
				continue
			}
			return nil, tooManyConns
		}
		a.total++
		a.byAddr[key]++
		if tunnel {
			a.tunnels++
		}
		a.mu.Unlock()
		open.Add(1)
		return &clientConn{Conn: c, a: a, key: key, open: open, tunnel: tunnel}, admitted
	}
}

func (a *admission) release(c *clientConn) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.idle.remove(c)
	c.gone = true
	key := c.key
	a.total--
	if c.tunnel {
		a.tunnels--
	}
	if n := a.byAddr[key] - 1; n > 0 {
		a.byAddr[key] = n
	} else {
		delete(a.byAddr, key)
	}
}

// open is how many client connections are open.
func (a *admission) open() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.total
}

// clientConn is an admitted client connection: closing it (once, by whoever does first) frees
// its place.
type clientConn struct {
	net.Conn
	a      *admission
	key    netip.Addr
	open   *atomic.Int64
	once   sync.Once
	tunnel bool
	// Under a.mu: its place in the idle list, and whether it is closed.
	prev, next   *clientConn
	listed, gone bool
}

func (c *clientConn) Close() error {
	c.once.Do(func() {
		c.a.release(c)
		c.open.Add(-1)
	})
	return c.Conn.Close()
}

// CloseWrite half-closes a TCP connection (a TCP route passes the client's end of its stream on).
func (c *clientConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// acceptHealth is what a route's accept loop has met: a route whose last accept failed, a
// moment ago, cannot take new connections, and its status says so.
type acceptHealth struct {
	stuck   atomic.Bool // the accept loop ended: nothing accepts any more
	errors  atomic.Int64
	lastOK  atomic.Int64 // unix nanoseconds
	lastErr atomic.Pointer[acceptError]
}

type acceptError struct {
	msg string
	at  time.Time
}

// acceptFailingFor is how long after a failed accept, without a good one since, a route is
// reported as unable to accept: the accept loop retries at least every second while
// connections wait, so a failure that lasts keeps it fresh.
const acceptFailingFor = 5 * time.Second

func (h *acceptHealth) failed(err error) {
	h.errors.Add(1)
	h.lastErr.Store(&acceptError{msg: err.Error(), at: time.Now()})
}

func (h *acceptHealth) accepted() { h.lastOK.Store(time.Now().UnixNano()) }

// failing is the error that keeps the route from accepting now, "" when there is none.
func (h *acceptHealth) failing() string {
	e := h.lastErr.Load()
	if e != nil && h.stuck.Load() {
		return e.msg
	}
	if e == nil || time.Since(e.at) > acceptFailingFor || h.lastOK.Load() > e.at.UnixNano() {
		return ""
	}
	return e.msg
}

// acceptLoop accepts from ln until it is closed: any other error (out of descriptors,
// ECONNABORTED, a kernel short of memory) is recorded in h (if not nil) and retried after a
// pause that grows to a second, so that the proxy never stops accepting while a flood lasts
// and serves again once it ends. fasthttp's Server.Serve and a plain accept loop both return on
// such an error. With a spare, a connection that finds the proxy out of descriptors takes the
// spare's place and is accepted at once: the control socket answers the deployer so.
func acceptLoop(ln net.Listener, h *acceptHealth, sp *spare) (net.Conn, error) {
	pause := 5 * time.Millisecond
	sp.take()
	for {
		if sp == nil {
			yieldToControl()
		}
		c, err := ln.Accept()
		if err == nil {
			if h != nil {
				h.accepted()
			}
			return c, nil
		}
		if errors.Is(err, net.ErrClosed) {
			return nil, err
		}
		if h != nil {
			h.failed(err)
		}
		if outOfDescriptors(err) && sp != nil {
			// Into the spare's place: the routes' accept loops and the dials to the apps
			// wait meanwhile, or the descriptor freed would be theirs.
			controlWants.Store(true)
			if sp.give() {
				// Bounded: with no connection waiting after all, it must not sit here.
				dl, _ := ln.(interface{ SetDeadline(time.Time) error })
				if dl != nil {
					dl.SetDeadline(time.Now().Add(100 * time.Millisecond))
				}
				c, err := ln.Accept()
				if dl != nil {
					dl.SetDeadline(time.Time{})
				}
				controlWants.Store(false)
				if err == nil {
					return c, nil // the spare is taken again once c is closed
				}
			}
			controlWants.Store(false)
		}
		time.Sleep(pause)
		pause = min(2*pause, time.Second)
		sp.take()
	}
}

// controlWants is set while the control socket takes its spare's place, or gets it back.
var controlWants atomic.Bool

// yieldToControl waits while the control socket takes a descriptor (microseconds; never over
// 200 ms).
func yieldToControl() {
	for i := 0; i < 200 && controlWants.Load(); i++ {
		time.Sleep(time.Millisecond)
	}
}

// spare is a descriptor held in reserve (a socket never used), given up when the process is
// out of descriptors so that one connection can still be accepted, and taken again once one
// is free. A nil spare holds nothing.
type spare struct {
	mu sync.Mutex
	fd int // -1 when not held
}

func newSpare() *spare {
	sp := &spare{fd: -1}
	sp.take()
	return sp
}

func (sp *spare) take() {
	if sp == nil {
		return
	}
	if sp.held() {
		return
	}
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if sp.fd < 0 {
		if fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0); err == nil {
			sp.fd = fd
		}
	}
}

func (sp *spare) held() bool {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	return sp.fd >= 0
}

// takeBack closes c, a connection accepted in the spare's place, and takes its descriptor
// back as the spare before the routes can.
func (sp *spare) takeBack(c net.Conn) {
	if sp.held() {
		c.Close()
		return
	}
	controlWants.Store(true)
	c.Close()
	sp.take()
	controlWants.Store(false)
}

// give closes the spare and says whether there was one.
func (sp *spare) give() bool {
	if sp == nil {
		return false
	}
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if sp.fd < 0 {
		return false
	}
	syscall.Close(sp.fd)
	sp.fd = -1
	return true
}

// listener is a route's listening socket as its server sees it: it fails only once closed, and
// hands on only the connections the caps admit. The others are told why (an HTTP route's
// clients get a status they can read) and closed at once.
type listener struct {
	net.Listener
	health  *acceptHealth
	adm     *admission
	open    *atomic.Int64
	refused *atomic.Int64
	http    bool
}

var (
	refuseTooMany  = refusalResponse("503 Service Unavailable", "deployer proxy: too many connections.\n")
	refuseFromAddr = refusalResponse("429 Too Many Requests", "deployer proxy: too many connections from one address.\n")
)

func refusalResponse(status, text string) []byte {
	return fmt.Appendf(nil, "HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\nRetry-After: 1\r\n\r\n%s", status, len(text), text)
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := acceptLoop(l.Listener, l.health, nil)
		if err != nil {
			return nil, err
		}
		cc, why := l.adm.admit(c, l.open, !l.http)
		if why == admitted {
			return cc, nil
		}
		l.refused.Add(1)
		if !l.http || !refusing.TryAcquire() {
			c.Close()
			continue
		}
		msg := refuseTooMany
		if why == tooManyFromAddr {
			msg = refuseFromAddr
		}
		go refuse(c, msg)
	}
}

// refusing bounds the connections being told they are refused, so that a flood of them costs
// a bounded number of goroutines and descriptors: beyond, they are closed without a word.
var refusing = newSemaphore(32)

// refuse answers a refused HTTP connection once its request has begun to arrive (an answer
// before it confuses clients that reuse connections: Go's takes it for a stray), within a
// second, and closes it.
func refuse(c net.Conn, msg []byte) {
	defer refusing.Release()
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	var buf [4096]byte
	if n, _ := c.Read(buf[:]); n > 0 {
		c.Write(msg)
	}
}

type semaphore chan struct{}

func newSemaphore(n int) semaphore { return make(semaphore, n) }

func (s semaphore) TryAcquire() bool {
	select {
	case s <- struct{}{}:
		return true
	default:
		return false
	}
}

func (s semaphore) Release() { <-s }

// errStopped ends a request body the app answered before it had it all.
var errStopped = errors.New("the app answered before the request's body was all sent")

// errBodyTooSlow cuts a request body that came slower than the limits allow.
var errBodyTooSlow = timeoutError("the request's body came slower than the proxy's minimum rate")

type timeoutError string

func (e timeoutError) Error() string   { return string(e) }
func (e timeoutError) Timeout() bool   { return true }
func (e timeoutError) Temporary() bool { return false }

// clientBody is a request's body as the proxy reads it from the client, for the app. Each read
// waits at most BodyIdle, and the body must average BodyMinRate once BodyGrace has passed,
// counting only the time spent waiting on the client, not on the app. err is what the client
// did wrong (a malformed chunk, a body cut short, too slow), nil when it did nothing wrong.
type clientBody struct {
	r      io.Reader
	size   int64 // its Content-Length, -1 when chunked
	ctx    *fasthttp.RequestCtx
	lim    *Limits
	n      int64
	waited time.Duration
	err    error
	// Set once the body was read to its end; stopped, once the app answered before it
	// had it all (no more is read, and what the read then meets is no fault of the client's).
	eof, stopped atomic.Bool
}

// stop makes the body's reads end at once (a read under way, by its deadline moved to now).
func (b *clientBody) stop() {
	if b == nil {
		return
	}
	b.stopped.Store(true)
	b.ctx.SetReadDeadline(time.Now())
}

// ended says whether the body was read to its end.
func (b *clientBody) ended() bool { return b != nil && b.eof.Load() }

// failed says whether the client broke its body (read by the one reading it).
func (b *clientBody) failed() bool { return b != nil && b.err != nil }

func (b *clientBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	earned := time.Duration(min(float64(b.n)/float64(b.lim.BodyMinRate)*float64(time.Second), float64(365*24*time.Hour)))
	wait := min(b.lim.BodyIdle, b.lim.BodyGrace+earned-b.waited)
	if wait <= 0 {
		b.err = errBodyTooSlow
		return 0, b.err
	}
	start := time.Now()
	b.ctx.SetReadDeadline(start.Add(wait)) // a timer moved: little beside a read
	if b.stopped.Load() {                  // after the deadline is set: a stop meanwhile has set its own
		return 0, errStopped
	}
	n, err := b.r.Read(p)
	if b.stopped.Load() {
		return 0, errStopped
	}
	b.waited += time.Since(start)
	b.n += int64(n)
	if err == io.EOF && b.size >= 0 && b.n < b.size {
		// The client went away before the end of its body: its fault, not the app's.
		err = io.ErrUnexpectedEOF
	}
	if err == io.EOF {
		b.eof.Store(true)
	}
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}

// clientWriter writes to a client's connection taken over from the server (a tunnel, a stream
// to an HTTP/1.0 client): each write must be taken within idle.
type clientWriter struct {
	c    net.Conn
	idle writeIdle
}

func (w *clientWriter) Write(p []byte) (int, error) {
	w.idle.push(w.c.SetWriteDeadline)
	return w.c.Write(p)
}

// writeIdle gives each write to a client idle to complete. A stream is many writes: the
// deadline is pushed on only once a quarter of idle has passed since it was last, so that a
// write has at least three quarters of idle.
type writeIdle struct {
	idle  time.Duration
	armed time.Time
}

func (w *writeIdle) push(set func(time.Time) error) {
	if now := time.Now(); now.Sub(w.armed) > w.idle/4 {
		w.armed = now
		set(now.Add(w.idle))
	}
}
