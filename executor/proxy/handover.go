package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// An upgraded proxy takes over the listening sockets of the one it replaces instead of opening
// its own. Two sockets sharing a port through SO_REUSEPORT each have their own queue of
// connections waiting to be accepted, and the kernel resets those still queued on a socket
// when it is closed: the old proxy stopping would cost the requests that arrived in that
// instant. One socket held by both processes has one queue, which outlives the old process.
//
// The old proxy hands its sockets over on a unix socket in the state volume both containers
// mount: one packet per listener, the listen address as data and the descriptor as
// SCM_RIGHTS, then an empty packet to end. Each proxy serves its own socket there (the
// Handover path with a suffix of its own), so that a new proxy that is stopped before the old
// one (an upgrade cut short) never leaves the old one unreachable for the next attempt; a new
// proxy tries every socket it finds, and removes those nobody answers on.

// inherit takes the listening sockets of a proxy serving a handover socket beside prefix, if one
// does; they are used by the routes that listen on the same addresses.
func (s *Server) inherit(prefix string) error {
	paths, _ := filepath.Glob(prefix + "*")
	sort.Slice(paths, func(i, j int) bool { return modTime(paths[i]).After(modTime(paths[j])) })
	var last error
	for _, p := range paths {
		if p == s.ownHandover {
			continue
		}
		err := s.inheritFrom(p)
		if err == nil {
			return nil
		}
		if errors.Is(err, syscall.ECONNREFUSED) {
			os.Remove(p) // its proxy is gone
			continue
		}
		last = err
	}
	return last
}

func modTime(p string) time.Time {
	st, err := os.Stat(p)
	if err != nil {
		return time.Time{}
	}
	return st.ModTime()
}

func (s *Server) inheritFrom(path string) error {
	c, err := net.DialTimeout("unixpacket", path, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	uc := c.(*net.UnixConn)
	uc.SetDeadline(time.Now().Add(5 * time.Second))
	got := map[string]*os.File{}
	for {
		buf, oob := make([]byte, 512), make([]byte, syscall.CmsgSpace(4))
		n, oobn, _, _, err := uc.ReadMsgUnix(buf, oob)
		if n == 0 && (err == nil || errors.Is(err, io.EOF)) {
			break // the empty packet that ends the handover
		}
		if err != nil {
			closeFiles(got)
			return fmt.Errorf("take over the old proxy's sockets: %w", err)
		}
		addr := string(buf[:n])
		fds, err := parseRights(oob[:oobn])
		if err != nil || len(fds) != 1 {
			for _, fd := range fds {
				syscall.Close(fd)
			}
			closeFiles(got)
			return fmt.Errorf("take over the old proxy's socket for %s: %v", addr, err)
		}
		got[addr] = os.NewFile(uintptr(fds[0]), "listener "+addr)
	}
	s.mu.Lock()
	s.inherited = got
	s.mu.Unlock()
	return nil
}

func parseRights(oob []byte) ([]int, error) {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, err
	}
	var fds []int
	for _, m := range msgs {
		f, err := syscall.ParseUnixRights(&m)
		if err != nil {
			return fds, err
		}
		fds = append(fds, f...)
	}
	if len(fds) == 0 {
		return nil, errors.New("no descriptor in the message")
	}
	return fds, nil
}

func (s *Server) inheritedAddrs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for a := range s.inherited {
		out = append(out, a)
	}
	sort.Strings(out)
	return out
}

// dropInherited closes the inherited sockets no route took: a socket held but never accepted on
// would leave its clients waiting instead of refused.
func (s *Server) dropInherited() {
	s.mu.Lock()
	defer s.mu.Unlock()
	closeFiles(s.inherited)
	s.inherited = nil
}

func closeFiles(m map[string]*os.File) {
	for _, f := range m {
		f.Close()
	}
}

// listen opens the socket of a route: the one inherited from the old proxy for this address if
// there is one, else a new one of its own. A port belongs to one proxy: no other socket may
// share it, so another project's proxy cannot bind beside this one and split its traffic. Only
// when ReusePort says so (the deployer replaces a proxy of the same project too old to hand its
// sockets over, whose sockets allow sharing) does a port taken by that proxy get a second
// socket with SO_REUSEPORT, so the old one can stop without a gap. Called with s.mu held.
func (s *Server) listen(addr string) (net.Listener, error) {
	if f := s.inherited[addr]; f != nil {
		delete(s.inherited, addr)
		ln, err := net.FileListener(f)
		f.Close()
		if err == nil {
			return ln, nil
		}
	}
	if s.BindHost != "" && strings.HasPrefix(addr, ":") {
		addr = s.BindHost + addr
	}
	ln, err := net.Listen("tcp", addr)
	if err == nil || !s.ReusePort || !errors.Is(err, syscall.EADDRINUSE) {
		return ln, err
	}
	lc := net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, 0xf /* SO_REUSEPORT */, 1)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	return lc.Listen(context.Background(), "tcp", addr)
}

// serveHandover answers proxies that come to take over, on a socket of this proxy's own: each
// gets every listening socket.
func (s *Server) serveHandover(path string) (net.Listener, error) {
	ln, err := net.Listen("unixpacket", path)
	if err != nil {
		return nil, fmt.Errorf("handover socket %s: %w", path, err)
	}
	go func() {
		for {
			c, err := acceptLoop(ln, nil, nil) // ends when closed, whatever else happens
			if err != nil {
				return
			}
			s.handOver(c.(*net.UnixConn))
			c.Close()
		}
	}()
	return ln, nil
}

func (s *Server) handOver(c *net.UnixConn) {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.routes {
		sc, ok := r.ln.(syscall.Conn)
		if !ok {
			continue
		}
		raw, err := sc.SyscallConn()
		if err != nil {
			continue
		}
		// The descriptor is sent as it is: os.File.Fd would switch the shared socket to
		// blocking mode under this proxy's own accept loop.
		var werr error
		err = raw.Control(func(fd uintptr) {
			_, _, werr = c.WriteMsgUnix([]byte(r.Listen), syscall.UnixRights(int(fd)), nil)
		})
		if err != nil || werr != nil {
			return
		}
	}
	c.WriteMsgUnix(nil, nil, nil)
}
