package proxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// HTTP routes are served with fasthttp's server and forwarded with one fasthttp HostClient per
// backend (kept-alive connections, streamed bodies both ways): net/http's server and reverse
// proxy cost about three times nginx's time per request on a small machine; see BENCHMARKS.md.

// bufferSize bounds a request's or response's header (cookies included) on both sides.
const bufferSize = 64 << 10

// bigHeadBytes is the size of a request's head beyond which it is a large one, and bigHeads
// bounds how many such requests are in flight at once: a head is held about four times over
// while its request is (4000 requests with 60 KiB heads whose clients did not read the answers
// held 1.28 GiB; 844 MiB with this bound, what reading and parsing the heads costs).
const bigHeadBytes = 8 << 10

var (
	bigHeads           = newSemaphore(256)
	errTooManyBigHeads = errors.New("too many requests with heads over 8 KiB in flight at once")
)

// writeBufferSize is what a connection's writes are gathered in, to the client or the app: a
// head larger goes in pieces. Small, as a client that does not read holds it full (with the
// app's 64 KiB read buffer) until WriteIdle cuts it: 4000 such clients held 474 MiB with
// 64 KiB, 300-325 MiB with 16 KiB (BENCHMARKS.md).
const writeBufferSize = 16 << 10

// dialError marks a backend that could not be reached at all: nothing was sent, so the request
// can go to the previous release instead.
type dialError struct{ err error }

func (e dialError) Error() string { return e.err.Error() }
func (e dialError) Unwrap() error { return e.err }

// shortage marks a connection to the app that failed for want of the proxy's own resources
// (descriptors, ephemeral ports, kernel memory): nothing of the release's. No fail-back (the
// deployer would take it for the new release failing), and not counted as the release's error.
type shortage struct{ err error }

func (e shortage) Error() string { return e.err.Error() }
func (e shortage) Unwrap() error { return e.err }

// dialTCP connects to an app; a variable for the tests.
var dialTCP = net.DialTimeout

func dialBackend(addr string) (net.Conn, error) {
	yieldToControl()
	c, err := dialTCP("tcp", addr, 5*time.Second)
	if err != nil {
		if shortOfResources(err) {
			return nil, shortage{err}
		}
		return nil, dialError{err}
	}
	return c, nil
}

func outOfDescriptors(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)
}

// shortOfResources says whether a dial failed for want of the proxy's own resources: out of
// descriptors, out of ephemeral ports (EADDRNOTAVAIL, or EADDRINUSE from an implicit bind), out
// of kernel buffers or memory.
func shortOfResources(err error) bool {
	return outOfDescriptors(err) || errors.Is(err, syscall.EADDRNOTAVAIL) || errors.Is(err, syscall.EADDRINUSE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM)
}

func isShortage(err error) bool {
	var sh shortage
	return errors.As(err, &sh)
}

// failBack moves the route off b, which could not be dialled, to the previous release while it
// drains, and returns that release (nil when there is none): new requests go there until the
// deployer decides.
func (r *route) failBack(b *backend) *backend {
	prev := r.previous.Load()
	if prev == nil || prev == b {
		return nil
	}
	r.current.CompareAndSwap(b, prev)
	r.failed.Store(true)
	return prev
}

// dial connects to b for a connection of its own (an upgrade, a TCP route), failing back when b
// cannot be dialled; it returns the backend it reached.
func (r *route) dial(b *backend) (net.Conn, *backend, error) {
	u, err := dialBackend(b.addr)
	if isDialError(err) {
		if prev := r.failBack(b); prev != nil {
			b = prev
			u, err = dialBackend(b.addr)
		}
	}
	return u, b, err
}

func isDialError(err error) bool {
	var de dialError
	return errors.As(err, &de)
}

func newClient(addr string) *fasthttp.HostClient {
	return &fasthttp.HostClient{
		Addr:                          addr,
		Dial:                          dialBackend,
		MaxConns:                      4096,
		MaxIdleConnDuration:           90 * time.Second,
		ReadBufferSize:                bufferSize,
		WriteBufferSize:               writeBufferSize,
		StreamResponseBody:            true, // a stream or a large file is never held in memory
		DisableHeaderNamesNormalizing: true, // the app sees the headers as the client wrote them
		DisablePathNormalizing:        true,
		NoDefaultUserAgentHeader:      true,
		Transport:                     appTransport{},
		// A kept-alive connection the app closed while idle fails the next request on it before
		// anything was answered: a request without a streamed body is sent again once, as
		// net/http does. A backend that cannot be dialled is the fail-back's business.
		RetryIfErr: func(req *fasthttp.Request, attempts int, err error) (bool, bool) {
			return false, attempts < 2 && !isDialError(err) && !req.IsBodyStream()
		},
	}
}

// responseHop are the headers of the app's answer that belong to its connection to the proxy:
// not passed on. Its Connection: close closes the client's connection too.
var responseHop = []string{"Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Upgrade"}

// serveHTTP forwards one request to the route's backend, failing back to the previous release
// when the backend cannot be reached at all.
func (r *route) serveHTTP(ctx *fasthttp.RequestCtx) {
	r.requests.Add(1)
	b := r.pick()
	req := &ctx.Request
	clientClose := req.Header.ConnectionClose()
	if r.draining.Load() {
		// Shutting down: the client's next request goes to a new connection, which the proxy
		// that took over the listening socket accepts.
		clientClose = true
		ctx.SetConnectionClose()
	}
	http10 := !req.Header.IsHTTP11()
	upgrade, err := forwardHeaders(ctx)
	if err != nil {
		r.clientErrors.Add(1)
		ctx.SetConnectionClose()
		ctx.Error("deployer proxy: malformed request.\n", fasthttp.StatusBadRequest)
		return
	}
	cl := req.Header.ContentLength()
	hasBody := cl > 0 || cl == -1
	if upgrade != nil && !hasBody {
		r.serveUpgrade(ctx, b, upgrade, clientClose, http10)
		return
	}
	var bigDone func()
	if len(req.Header.RawHeaders()) > bigHeadBytes {
		// A large head is held several times over while its request is in flight (as read,
		// parsed, written to the app): only so many at once.
		if !bigHeads.TryAcquire() {
			r.proxyShortage(errTooManyBigHeads)
			ctx.SetConnectionClose()
			ctx.Response.Header.Set("Retry-After", "1")
			ctx.Error("deployer proxy: too many requests with large heads at once.\n", fasthttp.StatusServiceUnavailable)
			return
		}
		var once sync.Once
		bigDone = func() { once.Do(bigHeads.Release) }
	}
	// A request with a body that asks to switch protocols goes to the app as a plain request
	// (a server may ignore an upgrade), its body streamed like any other.
	req.Header.ResetConnectionClose()
	// The app is spoken to in HTTP/1.1 over kept-alive connections whatever the client speaks
	// (as nginx's proxy_http_version 1.1): an HTTP/1.0 request without its Connection header
	// would make the app close, and with it the client's keep-alive. fasthttp's server answers
	// an HTTP/1.0 client in its own terms (keep-alive or close, no chunking).
	req.Header.SetProtocol("HTTP/1.1")
	var body *clientBody
	if hasBody && req.IsBodyStream() {
		// Read from the client under its deadlines, and so that its faults are told apart
		// from the release's.
		body = &clientBody{r: req.BodyStream(), size: int64(cl), ctx: ctx, lim: &r.lim}
		req.SetBodyStream(body, cl)
	}
	// In flight on b until answered: the drain waits for it, and at its deadline closes the
	// client's connection, so that the client sees the request fail.
	cs := r.connOf(ctx.Conn())
	end := inFlight(b, cs)
	// The app's response is read into its own object: its body stream then passes to the
	// client's response whole, and is closed (the connection to the app freed) once written.
	up := fasthttp.AcquireResponse()
	err = b.client.Do(req, up)
	if err != nil && isDialError(err) {
		if prev := r.failBack(b); prev != nil {
			end()
			b = prev
			end = inFlight(b, cs)
			err = b.client.Do(req, up)
		}
	}
	if bigDone != nil {
		e := end
		end = func() { e(); bigDone() }
	}
	if err != nil {
		fasthttp.ReleaseResponse(up)
		end()
		r.fail(ctx, err, body)
		return
	}
	if up.StatusCode() == fasthttp.StatusSwitchingProtocols {
		// Switched without being asked (the proxy asks only on a connection of its own): the
		// connection was not put back in the pool, and the client is told the release failed.
		releaseApp(up)
		end()
		r.fail(ctx, errors.New("the app switched protocols on a request that did not ask to"), nil)
		return
	}
	if body != nil && body.stopped.Load() {
		// The app answered before the body was all read: the client's connection cannot
		// carry another request (where its next one starts is not known).
		clientClose = true
	}
	r.relay(ctx, up, b, end, nil, clientClose, http10)
}

// fail answers a request that could not be forwarded. When the client broke it (its body was
// malformed, cut short or too slow) it is told so with a 4xx, and the release is not blamed;
// otherwise it gets a 502 that names nothing behind the proxy, and the release's error is
// counted and kept for the route's status.
func (r *route) fail(ctx *fasthttp.RequestCtx, err error, body *clientBody) {
	ctx.Response.Reset()
	if body != nil && body.err != nil {
		r.clientErrors.Add(1)
		ctx.SetConnectionClose() // the body's end is not known: the next request's start neither
		if isTimeout(body.err) {
			ctx.Error("deployer proxy: the request's body came too slowly.\n", fasthttp.StatusRequestTimeout)
		} else {
			ctx.Error("deployer proxy: the request's body is malformed or was cut short.\n", fasthttp.StatusBadRequest)
		}
		return
	}
	if isShortage(err) {
		r.proxyShortage(err)
		ctx.Response.Header.Set("Retry-After", "1")
		ctx.Error("deployer proxy: too busy to reach the release.\n", fasthttp.StatusServiceUnavailable)
		return
	}
	r.releaseError(err)
	ctx.Error("deployer proxy: the release did not answer.\n", fasthttp.StatusBadGateway)
}

// proxyShortage counts a request the proxy could not forward for want of its own resources,
// and keeps why for the operator: not the release's error.
func (r *route) proxyShortage(err error) {
	r.proxyErrors.Add(1)
	msg := err.Error()
	r.lastProxyError.Store(&msg)
}

// releaseError counts an error of the release's, and keeps it for the operator.
func (r *route) releaseError(err error) {
	r.errors.Add(1)
	msg := err.Error()
	r.lastError.Store(&msg)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// relay answers the client with the app's response up, streamed when large or of unknown
// length; once it is written (or given up), app (the connection up came on when it is one of
// its own, nil for the backend's client) is closed and end is called.
func (r *route) relay(ctx *fasthttp.RequestCtx, up *fasthttp.Response, b *backend, end func(), app io.Closer, clientClose, http10 bool) {
	release := func() {
		releaseApp(up)
		if app != nil {
			app.Close()
		}
	}
	req, resp := &ctx.Request, &ctx.Response
	up.Header.CopyTo(&resp.Header)
	for _, h := range responseHop {
		resp.Header.Del(h)
	}
	if clientClose {
		resp.SetConnectionClose()
	}
	stream := appStream(up)
	if stream != nil && http10 && up.Header.ContentLength() < 0 && !req.Header.IsHead() {
		r.streamToHTTP10(ctx, up, stream, b, end, release)
		return
	}
	if stream != nil && !smallBody(up) {
		// The response is in flight until its last byte is written.
		resp.SetBodyStream(&trackedBody{r: stream, up: up, release: release, end: end, ctx: ctx, idle: writeIdle{idle: r.lim.WriteIdle}}, up.Header.ContentLength())
		return
	}
	if stream != nil {
		// A small body of known length is read whole: written with the header in one go.
		_, err := io.CopyN(resp.BodyWriter(), stream, int64(up.Header.ContentLength()))
		if err != nil {
			release()
			end()
			r.releaseError(err)
			resp.Reset()
			ctx.Error("deployer proxy: the release's answer broke off.\n", fasthttp.StatusBadGateway)
			return
		}
	} else {
		resp.SetBody(up.Body())
	}
	release()
	end()
}

// connOf is the state of one of the route's client connections.
func (r *route) connOf(c net.Conn) *connState {
	if v, ok := r.conns.Load(c); ok {
		return v.(*connState)
	}
	cs := &connState{since: time.Now()}
	cs.state.Store(int32(fasthttp.StateActive))
	v, _ := r.conns.LoadOrStore(c, cs)
	return v.(*connState)
}

// inFlight counts a request on b, on its client connection; end must be called once.
func inFlight(b *backend, cs *connState) (end func()) {
	b.inflight.Add(1)
	cs.backend.Store(b)
	return func() {
		cs.backend.CompareAndSwap(b, nil)
		b.inflight.Add(-1)
	}
}

// smallBodyBytes is the largest response body read whole rather than streamed.
const smallBodyBytes = 64 << 10

func smallBody(up *fasthttp.Response) bool {
	n := up.Header.ContentLength()
	return n >= 0 && n <= smallBodyBytes
}

// trackedBody is the app's response body on its way to the client; once the server has written
// it (or given up), the app's connection is freed and the request is no longer in flight.
type trackedBody struct {
	r       io.Reader
	up      *fasthttp.Response
	release func() // frees up (and the app's connection when up has one of its own)
	end     func()
	once    sync.Once
	// Each write of what was read must be taken by the client within idle: one that stops
	// reading is cut (fasthttp's WriteTimeout, which bounds the whole response, is pushed on).
	ctx  *fasthttp.RequestCtx
	idle writeIdle
}

func (t *trackedBody) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	t.idle.push(t.ctx.SetWriteDeadline)
	return n, err
}

func (t *trackedBody) Close() error {
	var err error
	t.once.Do(func() {
		err = closeApp(t.up)
		t.release()
		t.end()
	})
	return err
}

// streamToHTTP10 answers an HTTP/1.0 client a body of unknown length the only way it can read
// one: unchunked, ended by closing the connection (fasthttp's server would chunk it). The
// connection is taken over from the server for that, and cut by the drain like an upgrade.
func (r *route) streamToHTTP10(ctx *fasthttp.RequestCtx, up *fasthttp.Response, stream io.Reader, b *backend, end, release func()) {
	resp := &ctx.Response
	resp.Header.SetContentLength(-2) // neither a length nor chunks
	resp.Header.Del("Transfer-Encoding")
	resp.Header.SetConnectionClose()
	head := resp.Header.AppendBytes(nil)
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(c net.Conn) {
		// Taken over, the connection is no longer the server's to find and cut: it is counted
		// in flight as an upgrade is, by the drain's cancel, in place of the request's count.
		done := b.begin(func() { c.Close() })
		end()
		defer func() {
			done()
			c.Close()
			closeApp(up)
			release()
		}()
		w := &clientWriter{c: c, idle: writeIdle{idle: r.lim.WriteIdle}}
		if _, err := w.Write(head); err != nil {
			return
		}
		io.Copy(w, stream)
	})
}
