package docker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/client"
)

// An engine that stops answering (its daemon hung or stopped, its host gone, the network cut)
// would hold a call until TCP gives up: many minutes, or never for a stopped daemon whose kernel
// still acknowledges every byte. ssh:// engines end such a call by ssh's keepalive
// (ServerAliveInterval); tcp:// ones get the same bound from a watchdog. A connection that has
// waited a third of the bound without a byte from the engine makes the engine be pinged
// (GET /_ping, on a connection of its own); when neither the waiting call nor any ping has
// heard from the engine for the whole bound, the connection is closed and the call fails,
// naming the engine. What is bounded is silence, not a call's length: a call that waits long by
// design (a container waited for, logs followed, a long exec session, a build step without
// output) goes on as long as the engine answers its pings.

// EnvEngineTimeout is how long an engine may stop answering before a call to it fails: the
// watchdog's bound for tcp:// engines, and ssh's ConnectTimeout (half of it) and
// ServerAliveInterval (a third of it, three times) for ssh:// ones.
const EnvEngineTimeout = "DEPLOYER_ENGINE_TIMEOUT"

// DefaultEngineTimeout is the bound without DEPLOYER_ENGINE_TIMEOUT.
const DefaultEngineTimeout = 30 * time.Second

// EngineTimeout is the bound DEPLOYER_ENGINE_TIMEOUT sets, or the default.
func EngineTimeout() (time.Duration, error) {
	v := strings.TrimSpace(os.Getenv(EnvEngineTimeout))
	if v == "" {
		return DefaultEngineTimeout, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < time.Second {
		return 0, fmt.Errorf("%s=%q: write a duration of at least 1s, such as 30s or 2m", EnvEngineTimeout, v)
	}
	return d, nil
}

// watchdog watches the connections to one engine.
type watchdog struct {
	host   string
	bound  time.Duration
	dialer net.Dialer
	ping   func(ctx context.Context) error // set once the client exists
	// tls, for an engine reached over TLS, is done on the watched connection (opt).
	tls *tls.Config

	mu      sync.Mutex
	conns   map[*watchedConn]bool
	heard   time.Time // when a byte or a ping's answer last came from the engine
	down    bool      // a connection was failed, and nothing was heard since
	probing bool
	ticking bool
	closed  bool
}

func newWatchdog(host string, bound time.Duration) *watchdog {
	return &watchdog{host: host, bound: bound, dialer: net.Dialer{Timeout: bound / 2, KeepAlive: bound / 3},
		conns: map[*watchedConn]bool{}, heard: time.Now()}
}

// opt has the client dial through the watchdog. An engine's TLS (DOCKER_CERT_PATH, an engine
// block's tls) moves from the client's transport to the dial, TLS over the watched connection:
// with TLS in its transport, the SDK dials the attach and exec sessions itself, unwatched, and
// without a deadline. (Not through an HTTP proxy, which the transport's TLS goes through.)
func (w *watchdog) opt() client.Opt {
	return func(c *client.Client) error {
		tr, ok := c.HTTPClient().Transport.(*http.Transport)
		if !ok {
			return fmt.Errorf("cannot watch the connections of transport %T", c.HTTPClient().Transport)
		}
		tr.DialContext = w.dial
		if tr.TLSClientConfig == nil {
			return nil
		}
		if tr.Proxy != nil {
			if u, _ := tr.Proxy(&http.Request{URL: &url.URL{Scheme: "https", Host: c.DaemonHost()[len("tcp://"):]}}); u != nil {
				return nil
			}
		}
		w.tls, tr.TLSClientConfig = tr.TLSClientConfig.Clone(), nil
		return client.WithScheme("http")(c) // the transport sees plain HTTP over the dial's TLS
	}
}

// interval is how long a connection waits without a byte before the engine is pinged.
func (w *watchdog) interval() time.Duration { return w.bound / 3 }

// dial opens a connection to the engine, watched.
func (w *watchdog) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	w.mu.Lock()
	d := w.dialer
	if w.down {
		d.Timeout = w.interval() / 2 // found not answering already: as for the connection's grace
	}
	w.mu.Unlock()
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() && ctx.Err() == nil {
			return nil, fmt.Errorf("docker engine at %s does not answer: no connection within %s (%s=%s): %w", w.host, d.Timeout, EnvEngineTimeout, w.bound, err)
		}
		return nil, err
	}
	wc := &watchedConn{Conn: c, w: w, tls: w.tls != nil}
	if err := w.add(wc); err != nil {
		c.Close()
		return nil, err
	}
	if w.tls == nil {
		return wc, nil
	}
	cfg := w.tls.Clone()
	if cfg.ServerName == "" {
		cfg.ServerName, _, _ = net.SplitHostPort(addr)
	}
	tc := tls.Client(wc, cfg)
	if err := tc.HandshakeContext(ctx); err != nil { // watched like any wait
		wc.Close()
		return nil, fmt.Errorf("docker engine at %s: TLS: %w", w.host, err)
	}
	return tc, nil
}

// add watches a new connection.
func (w *watchdog) add(c *watchedConn) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return fmt.Errorf("docker engine at %s: the client is closed", w.host)
	}
	c.suspect = w.down
	w.conns[c] = true
	if !w.ticking {
		w.ticking = true
		go w.watch()
	}
	return nil
}

// watch checks the connections until there are none.
func (w *watchdog) watch() {
	t := time.NewTicker(max(w.interval()/4, 50*time.Millisecond))
	defer t.Stop()
	for range t.C {
		if !w.check(time.Now()) {
			return
		}
	}
}

// check pings the engine when a connection has waited on it for an interval, and fails the
// connections that waited the whole bound on an engine silent as long. It reports whether to
// go on watching.
func (w *watchdog) check(now time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || len(w.conns) == 0 {
		w.ticking = false
		return false
	}
	silent := now.Sub(w.heard)
	probe := false
	for c := range w.conns {
		since, waiting := c.waiting()
		if !waiting {
			continue
		}
		wait := now.Sub(since)
		if wait >= w.interval() && silent >= w.interval() {
			probe = true
		}
		// A connection made while the engine was found not answering (net/http sends a GET
		// again on a new connection when a reused one fails) gets a shorter grace: the
		// engine has been silent the whole bound already.
		grace := w.bound
		if c.suspect {
			grace = w.interval() / 2
		}
		if wait >= grace && silent >= w.bound {
			w.down = true
			delete(w.conns, c)
			c.fail(fmt.Errorf("docker engine at %s does not answer: nothing from it for %s, its ping unanswered (%s=%s)", w.host, silent.Round(time.Second), EnvEngineTimeout, w.bound))
		}
	}
	if probe && !w.probing && w.ping != nil {
		w.probing = true
		go w.probe()
	}
	return true
}

// probe pings the engine; an answer is news from it.
func (w *watchdog) probe() {
	ctx, cancel := context.WithTimeout(context.Background(), w.interval())
	err := w.ping(ctx)
	cancel()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.probing = false
	if err == nil {
		w.heard, w.down = time.Now(), false
	}
}

func (w *watchdog) heardNow() {
	w.mu.Lock()
	w.heard, w.down = time.Now(), false
	w.mu.Unlock()
}

func (w *watchdog) forget(c *watchedConn) {
	w.mu.Lock()
	delete(w.conns, c)
	w.mu.Unlock()
}

// close stops watching; the connections are the client's to close.
func (w *watchdog) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
}

// watchedConn is a connection to the engine that knows how long its reads and writes wait.
type watchedConn struct {
	net.Conn
	w       *watchdog
	suspect bool // made while the engine was found not answering
	// tls: the bytes read are TLS records, which a daemon's TLS layer sends (a handshake, a
	// session ticket) while its API hangs: they are not news from the engine, its pings are.
	tls bool

	mu      sync.Mutex
	pending int       // reads and writes under way
	since   time.Time // since when they have waited: the first began, or the last moved bytes
	err     error     // why the watchdog closed it
}

func (c *watchedConn) begin() {
	c.mu.Lock()
	if c.pending == 0 {
		c.since = time.Now()
	}
	c.pending++
	c.mu.Unlock()
}

func (c *watchedConn) end(moved bool, err error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pending--
	if moved {
		c.since = time.Now()
	}
	if err != nil && c.err != nil {
		return c.err
	}
	return err
}

func (c *watchedConn) waiting() (since time.Time, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.since, c.pending > 0
}

// fail closes the connection: its reads and writes end with err.
func (c *watchedConn) fail(err error) {
	c.mu.Lock()
	c.err = err
	c.mu.Unlock()
	c.Conn.Close()
}

func (c *watchedConn) Read(p []byte) (int, error) {
	c.begin()
	n, err := c.Conn.Read(p)
	if n > 0 && !c.tls {
		c.w.heardNow()
	}
	return n, c.end(n > 0, err)
}

func (c *watchedConn) Write(p []byte) (int, error) {
	c.begin()
	n, err := c.Conn.Write(p)
	return n, c.end(n > 0, err)
}

func (c *watchedConn) Close() error {
	c.w.forget(c)
	return c.Conn.Close()
}

// CloseWrite ends the request stream of a hijacked connection (an attach or exec that is done
// sending), as the TCP connection beneath does.
func (c *watchedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
