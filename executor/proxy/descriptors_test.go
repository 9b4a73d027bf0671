package proxy

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// childEnv makes the test binary a proxy of its own with few descriptors (see childProxy).
const childEnv = "DEPLOYER_PROXY_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(childProxy())
	}
	os.Exit(m.Run())
}

// childProxy serves a proxy on the control socket $DEPLOYER_PROXY_TEST_CHILD, in a process
// that may open $..._NOFILE descriptors (0: as many as it may), with MaxConns $..._MAXCONNS
// (0: the default) and HeaderTimeout $..._HEADER (empty: the default).
func childProxy() int {
	if n, _ := strconv.ParseUint(os.Getenv(childEnv+"_NOFILE"), 10, 64); n > 0 {
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: n, Max: n}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	s := NewServer()
	s.Limits.MaxConns, _ = strconv.Atoi(os.Getenv(childEnv + "_MAXCONNS"))
	s.Limits.HeaderTimeout, _ = time.ParseDuration(os.Getenv(childEnv + "_HEADER"))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := s.Serve(ctx, os.Getenv(childEnv), time.Second); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// startChild runs a proxy in a process of its own that may open nofile descriptors, with a
// route to backend, and returns its control socket, the route's address and the process's id.
// header is its HeaderTimeout, 0 for the default.
func startChild(t testing.TB, nofile, maxConns int, header time.Duration, backend string) (sock, listen string, pid int) {
	t.Helper()
	sock = filepath.Join(t.TempDir(), "ctl.sock")
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), childEnv+"="+sock, fmt.Sprintf("%s_NOFILE=%d", childEnv, nofile), fmt.Sprintf("%s_MAXCONNS=%d", childEnv, maxConns))
	if header > 0 {
		cmd.Env = append(cmd.Env, childEnv+"_HEADER="+header.String())
	}
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}

	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("the proxy's process: %v\n%s", err, out.String())
			}
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			t.Errorf("the proxy's process did not stop\n%s", out.String())
		}
	})
	waitFor(t, 10*time.Second, "the proxy's control socket answers", func() bool {
		resp, err := Ctl(sock, Request{Op: "ping"})
		return err == nil && resp.OK
	})
	listen = freeAddr(t)
	if resp, err := Ctl(sock, Request{Op: "set", Route: &Route{Name: "web", Listen: listen, Backend: backend}}); err != nil || !resp.OK {
		t.Fatalf("set: %v %+v", err, resp)
	}
	return sock, listen, cmd.Process.Pid
}

func childStatus(t testing.TB, sock string) RouteStatus {
	t.Helper()
	resp, err := Ctl(sock, Request{Op: "status"})
	if err != nil || len(resp.Routes) != 1 {
		t.Fatalf("status: %v %+v", err, resp)
	}
	return resp.Routes[0]
}

// getOnce sends one request on a connection of its own and says what came back.
func getOnce(listen string, d time.Duration) (int, error) {
	c := &http.Client{Timeout: d, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + listen + "/who")
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// More connections than the proxy's process may open descriptors for: the proxy keeps its
// accept loop, says it cannot accept (on a control socket that still answers), and serves again
// once the flood ends. The proxy's cap is set above what it can open, as a limit lowered under
// it, or descriptors held by connections to the app, would leave it.
func TestOutOfDescriptors(t *testing.T) {
	green, _ := hostileApp(t, "green")
	blue, _ := hostileApp(t, "blue")
	sock, listen, _ := startChild(t, 64, 1000, time.Minute, addr(green)) // the flood stays until the test closes it
	// Switched from green to blue: green is the fail-back target.
	if resp, err := Ctl(sock, Request{Op: "set", Route: &Route{Name: "web", Listen: listen, Backend: addr(blue)}}); err != nil || !resp.OK {
		t.Fatalf("set: %v %+v", err, resp)
	}
	var flood []*rawClient
	for i := range 200 {
		flood = append(flood, dialRawFrom(t, fmt.Sprintf("127.0.2.%d", 1+i/50), listen))
	}
	var st RouteStatus
	waitFor(t, 10*time.Second, "the proxy says it cannot accept", func() bool {
		st = childStatus(t, sock)
		return isEMFILE(st.AcceptError)
	})
	t.Logf("during the flood: %d connections open, accept error %q", st.Conns, st.AcceptError)
	// The connections it did accept send requests: it cannot open connections to the app
	// either, which is its own shortage, not blue's: no fail-back to green.
	for _, c := range flood {
		c.SetWriteDeadline(time.Now().Add(time.Second))
		io.WriteString(c, "GET /who HTTP/1.1\r\nHost: app\r\n\r\n")
	}
	codes := make(chan int, 40)
	for _, c := range flood[:40] {
		go func() {
			resp, _, err := c.tryResponse(5 * time.Second)
			if err != nil {
				codes <- 0
				return
			}
			codes <- resp.StatusCode
		}()
	}
	got := map[int]int{}
	for range 40 {
		got[<-codes]++
	}
	t.Logf("answers on the connections accepted, out of descriptors: %v (0: none within 5 s)", got)
	// The proxy's own shortage: 503 (try again), not the release's 502.
	if got[http.StatusServiceUnavailable] == 0 || got[0]+got[http.StatusServiceUnavailable]+got[http.StatusOK] != 40 {
		t.Errorf("the requests on the connections accepted, out of descriptors: %v (status: count), want 503s (a descriptor freed a moment may serve one: 200)", got)
	}
	for _, c := range flood {
		c.Close()
	}
	start := time.Now()
	waitFor(t, 20*time.Second, "the proxy serves again", func() bool {
		code, err := getOnce(listen, 2*time.Second)
		return err == nil && code == 200
	})
	t.Logf("served again %s after the flood ended", time.Since(start).Round(time.Millisecond))
	if st := childStatus(t, sock); st.FailedOver || st.Backend != addr(blue) || st.Errors != 0 || st.ProxyErrors == 0 {
		t.Errorf("out of descriptors, the proxy failed back or counted the release's errors: %+v", st)
	}
	waitFor(t, 10*time.Second, "the proxy no longer says it cannot accept", func() bool { return childStatus(t, sock).AcceptError == "" })
}

// With its default cap (half its descriptors), the proxy never runs out: the connections
// beyond the cap are refused at once, and served again once the flood ends.
func TestDescriptorsCapConnections(t *testing.T) {
	app, _ := hostileApp(t, "blue")
	sock, listen, _ := startChild(t, 200, 0, time.Minute, addr(app))
	var flood []*rawClient
	for i := range 100 {
		flood = append(flood, dialRawFrom(t, fmt.Sprintf("127.0.3.%d", 1+i/25), listen))
	}
	status := func() RouteStatus { return childStatus(t, sock) }
	waitForStatus(t, 10*time.Second, "the cap's connections held", status, func(st RouteStatus) bool { return st.Conns == int64(Limits{}.resolve(200).MaxConns) })
	// Refused while 32 others are being told so (the flood's, which say nothing for a
	// second), a connection is closed without a word; then it is answered.
	waitFor(t, 5*time.Second, "a request beyond the cap is answered 503", func() bool {
		code, err := getOnce(listen, 5*time.Second)
		return err == nil && code == http.StatusServiceUnavailable
	})
	if st := status(); st.AcceptError != "" || st.Refused < 100-st.Conns {
		t.Errorf("status during the flood: %+v", st)
	}
	for _, c := range flood {
		c.Close()
	}
	waitFor(t, 10*time.Second, "the proxy serves again", func() bool {
		code, err := getOnce(listen, 2*time.Second)
		return err == nil && code == 200
	})
}

// The connection cap never takes more than half the descriptors the process may open.
func TestMaxConnsFollowsDescriptors(t *testing.T) {
	for _, c := range []struct {
		explicit int
		nofile   uint64
		want     int
	}{{0, 0, 4096}, {0, 1 << 20, 4096}, {0, 20000, 4096}, {0, 1000, 436}, {0, 200, 50}, {0, 10, 2}, {100, 200, 100}} {
		if got := (Limits{MaxConns: c.explicit}).resolve(c.nofile).MaxConns; got != c.want {
			t.Errorf("MaxConns %d with %d descriptors: %d, want %d", c.explicit, c.nofile, got, c.want)
		}
	}
}
