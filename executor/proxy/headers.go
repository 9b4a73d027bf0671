package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"iter"
	"net"
	"net/netip"

	"github.com/valyala/fasthttp"
)

// The app learns who the client is from headers that only the proxy writes: what a client sends
// under those names is dropped, whatever its case or spelling, and the proxy's own take their
// place. The proxy trusts no client's claim, a load balancer's included (README, "The proxy
// under hostile clients").

// isDropped says whether a request header, by its folded name (lower case, '_' read as '-',
// as CGI-style apps read X_Real_IP as X-Real-IP), is never passed on from a client: those of
// one connection (hop-by-hop), and those that claim where the client is, which host or scheme
// it came by. (A switch: no hashing for each header of each request.)
func isDropped(name []byte) bool {
	switch string(name) {
	case "connection", "proxy-connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
		"te", "trailer", "upgrade",
		"x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-real-ip", "forwarded",
		"x-forwarded-port", "x-forwarded-prefix", "x-forwarded-ssl", "x-forwarded-scheme",
		"x-forwarded-server", "x-url-scheme", "front-end-https", "x-client-ip", "true-client-ip",
		"x-cluster-client-ip", "cf-connecting-ip", "fastly-client-ip", "x-original-forwarded-for",
		"client-ip", "x-forwarded", "forwarded-for", "x-originating-ip", "x-remote-ip", "x-remote-addr",
		"x-host", "proxy-client-ip", "wl-proxy-client-ip", "x-proxyuser-ip", "x-envoy-external-address":
		return true
	}
	return false
}

// fold writes name in lower case with '_' as '-' into buf, and returns it ("" if it does not
// fit: no header the proxy cares about is that long).
func fold(buf []byte, name []byte) []byte {
	if len(name) > cap(buf) {
		return buf[:0]
	}
	buf = buf[:len(name)]
	for i, c := range name {
		switch {
		case c >= 'A' && c <= 'Z':
			c += 'a' - 'A'
		case c == '_':
			c = '-'
		}
		buf[i] = c
	}
	return buf
}

// tokens calls f with each comma-separated token of a header value, trimmed.
func tokens(v []byte, f func(tok []byte)) {
	for len(v) > 0 {
		i := 0
		for i < len(v) && v[i] != ',' {
			i++
		}
		tok := v[:i]
		for len(tok) > 0 && (tok[0] == ' ' || tok[0] == '\t') {
			tok = tok[1:]
		}
		for len(tok) > 0 && (tok[len(tok)-1] == ' ' || tok[len(tok)-1] == '\t') {
			tok = tok[:len(tok)-1]
		}
		if len(tok) > 0 {
			f(tok)
		}
		if i == len(v) {
			return
		}
		v = v[i+1:]
	}
}

// forwardHeaders removes what the client may not pass on (above, and the headers its Connection
// header names as its connection's own), and sets what the app should know: the client's
// address (X-Forwarded-For, X-Real-IP, Forwarded), the host it asked for (X-Forwarded-Host;
// an HTTP/1.0 request without a Host gets the address it connected to as its Host) and the
// scheme. It returns the Upgrade header's value when the request asks to switch protocols,
// nil otherwise.
func forwardHeaders(ctx *fasthttp.RequestCtx) (upgrade []byte, err error) {
	h := &ctx.Request.Header
	var (
		fb       [32]byte
		delBuf   [maxDeletes][]byte
		del      = delBuf[:0]
		named    [4][]byte // names the Connection header lists, beyond close, keep-alive and upgrade
		nNamed   int
		askedUpg bool
	)
	// The raw head, in order: the keys point into it, so deleting from the parsed header
	// (which is kept apart) leaves them valid. All() would parse the cookies, and the app
	// would get them rewritten; AllInOrder validates every byte again, a third of this
	// function's time.
	raw := h.RawHeaders()
	for k, v := range rawHeaders(raw) {
		name := fold(fb[:], k)
		if !isDropped(name) {
			continue
		}
		del = append(del, k)
		switch string(name) {
		case "connection":
			tokens(v, func(tok []byte) {
				switch string(fold(fb[:], tok)) {
				case "upgrade":
					askedUpg = true
				case "close", "keep-alive":
				default:
					if nNamed < len(named) {
						named[nNamed] = tok
						nNamed++
					}
				}
			})
		case "upgrade":
			if len(v) > 0 {
				upgrade = v
			}
		}
	}
	if nNamed > 0 {
		var nb [32]byte
		for k := range rawHeaders(raw) {
			name := fold(fb[:], k)
			for _, n := range named[:nNamed] {
				if string(name) == string(fold(nb[:], n)) && !isFramingHeader(name) {
					del = append(del, k)
				}
			}
		}
	}
	if len(del) > maxDeletes {
		// Each deletion is a pass over the headers: so many are rebuilt in one pass instead.
		var nb [32]byte
		dropped := func(k []byte) bool {
			name := fold(fb[:], k)
			if isDropped(name) {
				return true
			}
			for _, n := range named[:nNamed] {
				if string(name) == string(fold(nb[:], n)) && !isFramingHeader(name) {
					return true
				}
			}
			return false
		}
		if upgrade != nil {
			upgrade = append([]byte(nil), upgrade...) // raw's bytes are gone once rebuilt
		}
		if err := rebuild(h, raw, dropped); err != nil {
			return nil, err
		}
		del = del[:0]
	}
	if !askedUpg {
		upgrade = nil
	}
	if upgrade != nil {
		upgrade = append([]byte(nil), upgrade...) // its raw bytes outlive the deletions, not a Set
	}
	for _, k := range del {
		h.DelBytes(k)
	}

	// The host the app gets: the request's target's (its Host header, or the authority of an
	// absolute URI). HTTP/1.0 needs none: such a request gets the address the client
	// connected to, where the app would get nothing (and refuse it) or its own address.
	host := ctx.Request.URI().Host()
	if !validHost(host) || !validHost(h.Host()) || hasUserinfo(h.RequestURI()) {
		return nil, errBadHost
	}
	if len(host) == 0 {
		ctx.Request.URI().SetHost(localAddr(ctx.LocalAddr()))
		host = ctx.Request.URI().Host()
		h.SetHostBytes(host)
	}
	var ab, fw [128]byte
	ip := appendIP(ab[:0], ctx.RemoteIP())
	// Added, not set: every header of these names is gone already.
	h.AddBytesV("X-Forwarded-For", ip)
	h.AddBytesV("X-Real-IP", ip)
	h.AddBytesV("X-Forwarded-Host", host)
	h.Add("X-Forwarded-Proto", "http")
	f := append(fw[:0], "for="...)
	if ctx.RemoteIP().To4() == nil {
		f = append(append(append(f, `"[`...), ip...), `]"`...)
	} else {
		f = append(f, ip...)
	}
	f = appendQuoted(append(f, ";host="...), host)
	f = append(f, ";proto=http"...)
	h.AddBytesV("Forwarded", f)
	return upgrade, nil
}

// hasUserinfo says whether a request's target is an absolute URI with userinfo ("user@host"),
// which a server must take for an error (RFC 9110 4.2.4): fasthttp would make it the request's
// Authorization.
func hasUserinfo(target []byte) bool {
	i := bytes.Index(target, []byte("://"))
	if i < 0 || bytes.IndexByte(target[:i], '/') >= 0 {
		return false
	}
	auth := target[i+3:]
	if j := bytes.IndexAny(auth, "/?#"); j >= 0 {
		auth = auth[:j]
	}
	return bytes.IndexByte(auth, '@') >= 0
}

var errBadHost = errors.New("the request's host is not a host name or address")

// validHost says whether a Host (empty, or a name or an address, with a port or not) has only
// what a host may: letters, digits, '-', '.', '_', and ':' '[' ']' for a port or an IPv6
// address. Anything else (';', '@', '/', quotes, spaces) is a client playing on how the app or
// what it passes the host on to reads it (the proxy's Forwarded header quotes it).
func validHost(h []byte) bool {
	for _, c := range h {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '-', c == '.', c == '_', c == ':', c == '[', c == ']':
		default:
			return false
		}
	}
	return true
}

// maxDeletes is how many headers forwardHeaders deletes one by one (each a pass over the
// others); beyond, the head is rebuilt without them in one pass.
const maxDeletes = 16

// rebuild makes h the head it was less the header lines (and the lines that continue them)
// whose names dropped says are dropped: the head kept is parsed again, as it came.
func rebuild(h *fasthttp.RequestHeader, raw []byte, dropped func(name []byte) bool) error {
	buf := make([]byte, 0, len(raw)+len(h.RequestURI())+len(h.Method())+len(h.Protocol())+8)
	buf = append(append(append(append(append(buf, h.Method()...), ' '), h.RequestURI()...), ' '), h.Protocol()...)
	buf = append(buf, "\r\n"...)
	keep := true
	for line := range headLines(raw) {
		if line[0] != ' ' && line[0] != '\t' {
			colon := bytes.IndexByte(line, ':')
			keep = colon <= 0 || !dropped(bytes.TrimRight(line[:colon], " \t"))
		}
		if keep {
			buf = append(append(buf, line...), "\r\n"...)
		}
	}
	buf = append(buf, "\r\n"...)
	h.Reset()
	h.DisableNormalizing()
	// The head parsed before: it parses again (its lines are the same, fewer).
	return h.Read(bufio.NewReaderSize(bytes.NewReader(buf), len(buf)+16))
}

// rawHeaders yields the name and value of each header line of a raw head that fasthttp has
// parsed (and so validated): a name is what comes before the line's first colon, less trailing
// spaces, as fasthttp reads it; a line that continues the one before (obs-fold) is not a header
// of its own.
func rawHeaders(raw []byte) iter.Seq2[[]byte, []byte] {
	return func(yield func([]byte, []byte) bool) {
		for line := range headLines(raw) {
			if line[0] == ' ' || line[0] == '\t' {
				continue
			}
			colon := bytes.IndexByte(line, ':')
			if colon <= 0 {
				continue
			}
			name := bytes.TrimRight(line[:colon], " \t")
			value := bytes.Trim(line[colon+1:], " \t")
			if !yield(name, value) {
				return
			}
		}
	}
}

// headLines yields the lines of a raw head, without their line ends, up to the empty line that
// ends it (or the end of raw).
func headLines(raw []byte) iter.Seq[[]byte] {
	return func(yield func([]byte) bool) {
		for len(raw) > 0 {
			line := raw
			if i := bytes.IndexByte(raw, '\n'); i >= 0 {
				line, raw = raw[:i], raw[i+1:]
			} else {
				raw = nil
			}
			line = bytes.TrimSuffix(line, []byte("\r"))
			if len(line) == 0 || !yield(line) {
				return // the end of the head
			}
		}
	}
}

// isFramingHeader reports whether a (folded) name is one the request's framing depends on: a
// Connection header that names it is not obeyed.
func isFramingHeader(name []byte) bool {
	switch string(name) {
	case "host", "content-length", "transfer-encoding":
		return true
	}
	return false
}

func appendIP(dst []byte, ip net.IP) []byte {
	if ip4 := ip.To4(); ip4 != nil {
		return fasthttp.AppendIPv4(dst, ip4)
	}
	return append(dst, ip.String()...)
}

// appendQuoted appends v as a quoted-string (RFC 9110).
func appendQuoted(dst, v []byte) []byte {
	dst = append(dst, '"')
	for _, c := range v {
		if c == '"' || c == '\\' {
			dst = append(dst, '\\')
		}
		dst = append(dst, c)
	}
	return append(dst, '"')
}

// localAddr is the address a client connected to, as a Host header names it.
func localAddr(a net.Addr) string {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return a.String()
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).String()
}
