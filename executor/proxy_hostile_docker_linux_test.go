package executor_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/deployer-dev/deployer/executor"
	"github.com/deployer-dev/deployer/executor/plan"
)

// procMemory reads a process's resident memory and its peak (VmRSS, VmHWM), in bytes.
func procMemory(t testing.TB, pid int) (rss, peak int64) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && (f[0] == "VmRSS:" || f[0] == "VmHWM:") {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			if f[0] == "VmRSS:" {
				rss = n << 10
			} else {
				peak = n << 10
			}
		}
	}
	return rss, peak
}

// The proxy's container under hostile clients, on the real engine: a large body on an upgrade
// request streams through without the proxy's memory growing with it; more connections than
// the proxy may open descriptors for make `deployer status` call the proxy unhealthy (not
// "running") while it cannot accept, and once the flood ends it serves again and is healthy.
func TestProxyHostileClients(t *testing.T) {
	r := proxyRig(t)
	p := r.config("v1", proxyMode(nil))
	if so := r.apply(p); so.Error != "" {
		t.Fatal(so.Error)
	}
	ctx := context.Background()
	obs, err := plan.Observe(ctx, r.eng, projectOnly(r.project))
	if err != nil || obs.Proxy == nil {
		t.Fatalf("the proxy: %v %v", obs, err)
	}
	info, err := r.eng.Client().ContainerInspect(ctx, obs.Proxy.ID)
	if err != nil {
		t.Fatal(err)
	}
	pid := info.State.Pid
	listen := fmt.Sprintf("127.0.0.1:%d", r.port)

	// 256 MiB, chunked, on a request that asks for a WebSocket: the app gets it as a plain
	// request, streamed. The peak is reset first (writing 5 to clear_refs).
	const size = 256 << 20
	os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
	_, before := procMemory(t, pid)
	c, err := net.Dial("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() {
		w := bufio.NewWriterSize(c, 64<<10)
		fmt.Fprintf(w, "POST /upload HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nTransfer-Encoding: chunked\r\n\r\n")
		chunk := make([]byte, 60<<10)
		for n := 0; n < size; n += len(chunk) {
			fmt.Fprintf(w, "%x\r\n", len(chunk))
			w.Write(chunk)
			io.WriteString(w, "\r\n")
		}
		io.WriteString(w, "0\r\n\r\n")
		w.Flush()
	}()
	c.SetReadDeadline(time.Now().Add(2 * time.Minute))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_, peak := procMemory(t, pid)
	n := (size / (60 << 10)) * (60 << 10)
	if n < size {
		n += 60 << 10
	}
	if resp.StatusCode != 200 || strings.TrimSpace(string(body)) != strconv.Itoa(n) {
		t.Errorf("a %d-byte body on an upgrade request: %d %q", n, resp.StatusCode, body)
	}
	t.Logf("the proxy's peak memory: %d MiB before, %d MiB while %d MiB went through on an upgrade request", before>>20, peak>>20, n>>20)
	if peak-before > 64<<20 {
		t.Errorf("the proxy's peak memory grew by %d MiB for a %d MiB body", (peak-before)>>20, n>>20)
	}
	c.Close()

	// The proxy may now open 64 descriptors; 200 connections come and stay.
	var old unix.Rlimit
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: 64, Max: 64}, &old); err != nil {
		t.Fatalf("lowering the proxy's descriptors (this test needs root): %v", err)
	}
	defer unix.Prlimit(pid, unix.RLIMIT_NOFILE, &old, nil)
	var flood []net.Conn
	defer func() {
		for _, c := range flood {
			c.Close()
		}
	}()
	for range 200 {
		c, err := net.DialTimeout("tcp", listen, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		flood = append(flood, c)
	}
	status := func() *executor.Status {
		st, err := executor.GetStatus(ctx, p, r.eng, "127.0.0.1", false)
		if err != nil || st.Proxy == nil {
			t.Fatalf("status: %v %+v", err, st)
		}
		return st
	}
	var st *executor.Status
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if st = status(); st.Proxy.State == executor.ProxyUnhealthy {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the proxy out of descriptors is %q: %s", st.Proxy.State, st.Proxy.Error)
		}
	}
	if !strings.Contains(st.Proxy.Error, "cannot accept connections") || !strings.Contains(st.Proxy.Error, "too many open files") {
		t.Errorf("status of the proxy out of descriptors: %+v", st.Proxy)
	}
	t.Logf("deployer status during the flood: proxy %s: %s", st.Proxy.State, st.Proxy.Error)
	for _, c := range flood {
		c.Close()
	}
	flood = nil
	for deadline := time.Now().Add(30 * time.Second); r.get("/") != "version=v1"; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the proxy does not serve again after the flood: %q", r.get("/"))
		}
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if st = status(); st.Proxy.State == "running" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the flood, the proxy is %q: %s", st.Proxy.State, st.Proxy.Error)
		}
	}
}
