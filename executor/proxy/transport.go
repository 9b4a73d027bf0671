package proxy

import (
	"io"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// appTransport is how a backend's client speaks to the app over its pooled connections. It
// differs from fasthttp's own in three ways:
//   - a request's streamed body is sent while the answer is read, so that an app that answers
//     before it has read the whole body (a 413, a 401) is heard: its answer is relayed, the rest
//     of the body is not sent, and neither connection is reused (fasthttp's sent the whole body
//     first, failed on the broken pipe and made it the release's 502);
//   - a connection is put back in the pool only when its answer was read to its end, the request
//     was sent whole, and the app did not switch protocols (101) or ask to close;
//   - a request's body the client breaks stops the wait for the answer at once.
type appTransport struct{}

// earlyAnswerGrace is how long an answer that came once the client's body was all read waits
// for its last bytes to reach the app, before the connection is given up.
const earlyAnswerGrace = time.Second

func (appTransport) RoundTrip(hc *fasthttp.HostClient, req *fasthttp.Request, resp *fasthttp.Response) (bool, error) {
	cc, err := hc.AcquireConn(0, false)
	if err != nil {
		return false, err
	}
	conn := cc.Conn()
	resp.ParseNetConn(conn)
	body, _ := req.BodyStream().(*clientBody)

	wrote := make(chan error, 1)
	write := func() error {
		bw := hc.AcquireWriter(conn)
		err := req.Write(bw)
		if err == nil {
			err = bw.Flush()
		}
		hc.ReleaseWriter(bw)
		return err
	}
	if body == nil {
		// Sent whole before the answer is read, as fasthttp does: a small body is in memory.
		if err := write(); err != nil {
			hc.CloseConn(cc)
			return true, err // nothing was answered: sent again once, when RetryIfErr allows
		}
		wrote <- nil
	} else {
		go func() {
			err := write()
			if err != nil && body.failed() {
				// The client broke its body: the app waits for the rest, no answer comes.
				conn.SetReadDeadline(time.Now())
			}
			wrote <- err
		}()
	}

	// The writer, while it runs, reads the client's body: it must be over before this returns.
	written, interrupted := false, false
	var werr error
	finishWrite := func(wait time.Duration) {
		if written {
			return
		}
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case werr = <-wrote:
				t.Stop()
				written = true
				return
			case <-t.C:
			}
		}
		body.stop()
		conn.SetWriteDeadline(time.Now())
		werr = <-wrote
		written, interrupted = true, true
	}
	takeWrite := func() {
		select {
		case werr = <-wrote:
			written = true
		default:
		}
	}

	br := hc.AcquireReader(conn)
	if req.Header.IsHead() {
		resp.SkipBody = true
	}
	resp.Header.DisableNormalizing()
	if err := resp.ReadLimitBody(br, hc.MaxResponseBodySize); err != nil {
		finishWrite(0)
		hc.ReleaseReader(br)
		hc.CloseConn(cc)
		// As fasthttp's: a kept-alive connection the app closed while idle is found out here
		// (the request was written into it); RetryIfErr says whether to send it again.
		return true, err
	}
	takeWrite()
	if !written {
		// The app answered before the request was all sent.
		var grace time.Duration
		if body.ended() {
			grace = earlyAnswerGrace // its last bytes are on their way
		}
		finishWrite(grace)
	}
	reuse := !interrupted && werr == nil && !req.ConnectionClose() && !resp.ConnectionClose() &&
		resp.StatusCode() != fasthttp.StatusSwitchingProtocols && resp.Header.ContentLength() != -2
	done := func(fullyRead bool) {
		hc.ReleaseReader(br)
		if reuse && fullyRead {
			hc.ReleaseConn(cc)
		} else {
			hc.CloseConn(cc)
		}
	}
	stream := resp.BodyStream()
	if stream == nil {
		done(true)
		return false, nil
	}
	appBodies.Store(resp, &appBody{r: stream, size: int64(resp.Header.ContentLength()), done: done})
	return false, nil
}

// appBodies are the bodies of the answers being relayed, by the response they came in: fasthttp
// has no hook for a response's body stream being closed, and replacing it would release it.
var appBodies sync.Map // *fasthttp.Response -> *appBody

// appStream is the body of up to read: its app body when it has one.
func appStream(up *fasthttp.Response) io.Reader {
	if v, ok := appBodies.Load(up); ok {
		return v.(*appBody)
	}
	return up.BodyStream()
}

// closeApp closes up's body stream, and frees the connection it came on: back in the pool when
// its answer was read whole.
func closeApp(up *fasthttp.Response) error {
	if v, ok := appBodies.LoadAndDelete(up); ok {
		v.(*appBody).Close()
	}
	return up.CloseBodyStream()
}

// releaseApp releases up, with its body stream (closeApp).
func releaseApp(up *fasthttp.Response) {
	closeApp(up)
	fasthttp.ReleaseResponse(up)
}

// appBody is an answer's body as read from the app's connection: closing it puts the
// connection back in the pool if it was read to its end, and closes it otherwise.
type appBody struct {
	r    io.Reader
	size int64 // -1: chunked
	n    int64
	eof  bool
	once sync.Once
	done func(fullyRead bool)
}

func (b *appBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.n += int64(n)
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

func (b *appBody) Close() error {
	b.once.Do(func() {
		full := b.eof || b.size >= 0 && b.n >= b.size
		b.done(full)
	})
	return nil
}
