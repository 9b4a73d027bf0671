package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/valyala/fasthttp"
)

// serveUpgrade asks the app to switch protocols (a WebSocket) on a connection of its own. Only
// if it answers 101 Switching Protocols does the client's connection become a tunnel to it,
// bytes copied both ways until either side closes, on the release it opened on and in flight
// there until the drain cuts it. Any other answer is relayed as HTTP, and the client's
// connection goes on with its next request like any other. The request has no body (one with
// a body goes as a plain request).
func (r *route) serveUpgrade(ctx *fasthttp.RequestCtx, b *backend, upgrade []byte, clientClose, http10 bool) {
	u, b, err := r.dial(b)
	if err != nil {
		r.fail(ctx, err, nil)
		return
	}
	client := ctx.Conn()
	end := b.begin(func() { client.Close(); u.Close() })
	h := &ctx.Request.Header
	h.Set("Connection", "Upgrade")
	h.SetBytesV("Upgrade", upgrade)
	if _, err := u.Write(h.Header()); err != nil {
		u.Close()
		end()
		r.fail(ctx, err, nil)
		return
	}
	br := bufio.NewReaderSize(u, bufferSize)
	head, status, err := readHead(br)
	if err != nil {
		u.Close()
		end()
		r.fail(ctx, err, nil)
		return
	}
	if status == fasthttp.StatusSwitchingProtocols {
		ctx.HijackSetNoResponse(true)
		ctx.Hijack(func(c net.Conn) {
			defer end()
			defer u.Close()
			w := &clientWriter{c: c, idle: writeIdle{idle: r.lim.WriteIdle}}
			if _, err := w.Write(head); err != nil {
				return
			}
			tunnel(c, w, u, br)
		})
		return
	}
	// Not switched: an answer like any other, read from what was read of it and the rest.
	up := fasthttp.AcquireResponse()
	up.StreamBody = true
	up.Header.DisableNormalizing()
	up.SkipBody = h.IsHead()
	if err := up.Read(bufio.NewReaderSize(io.MultiReader(bytes.NewReader(head), br), bufferSize)); err != nil {
		fasthttp.ReleaseResponse(up)
		u.Close()
		end()
		r.fail(ctx, err, nil)
		return
	}
	r.relay(ctx, up, b, end, u, clientClose, http10)
}

// maxInterim bounds the interim answers (100 Continue, 103 Early Hints) skipped before one that
// counts.
const maxInterim = 8

// readHead reads the head of the app's answer (its status line and headers, up to bufferSize)
// and its status, skipping interim answers other than 101.
func readHead(br *bufio.Reader) ([]byte, int, error) {
	for range maxInterim {
		var head []byte
		for {
			line, err := br.ReadSlice('\n')
			if errors.Is(err, bufio.ErrBufferFull) {
				return nil, 0, errors.New("the app's answer has a header line over 64 KiB")
			}
			if err != nil {
				return nil, 0, fmt.Errorf("the app's answer to an upgrade: %w", err)
			}
			head = append(head, line...)
			if len(head) > bufferSize {
				return nil, 0, errors.New("the app's answer has a head over 64 KiB")
			}
			if string(line) == "\r\n" || string(line) == "\n" {
				break
			}
		}
		status, ok := parseStatus(head)
		if !ok {
			return nil, 0, fmt.Errorf("the app's answer to an upgrade is not HTTP: %.40q", head)
		}
		if status >= 100 && status < 200 && status != fasthttp.StatusSwitchingProtocols {
			continue
		}
		return head, status, nil
	}
	return nil, 0, fmt.Errorf("the app sent more than %d interim answers", maxInterim)
}

// parseStatus reads the status of a status line: "HTTP/1.1 101 Switching Protocols".
func parseStatus(head []byte) (int, bool) {
	if len(head) < 12 || !bytes.HasPrefix(head, []byte("HTTP/1.")) || head[8] != ' ' {
		return 0, false
	}
	n := 0
	for _, c := range head[9:12] {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, len(head) == 12 || head[12] == ' ' || head[12] == '\r' || head[12] == '\n'
}

// tunnel copies bytes both ways between a client's connection (written through toClient) and
// the app's (read through fromApp, which holds what was read of it already) until either side
// closes, then closes both.
func tunnel(c net.Conn, toClient io.Writer, u net.Conn, fromApp io.Reader) {
	done := make(chan struct{}, 2)
	go func() { io.Copy(u, c); done <- struct{}{} }()
	go func() { io.Copy(toClient, fromApp); done <- struct{}{} }()
	<-done // either side closed: so does the other
	c.Close()
	u.Close()
	<-done
}
