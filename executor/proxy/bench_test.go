package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkProxy measures requests through the proxy against the same requests straight to
// the backend, in one process, with parallel keep-alive clients: the proxy's own cost per
// request without Docker in the way.
func BenchmarkProxy(b *testing.B) {
	backend := release(b, "blue")
	s := NewServer()
	listen := freeAddr(b)
	if _, err := s.Set(Route{Name: "web", Listen: listen, Backend: addr(backend)}); err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	for _, c := range []struct{ name, url string }{
		{"direct", backend.URL + "/"},
		{"proxy", "http://" + listen + "/"},
	} {
		b.Run(c.name, func(b *testing.B) {
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			b.SetParallelism(8)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := client.Get(c.url)
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
		})
	}
}

// BenchmarkHostileFigures measures a proxy with its default limits, in a process of its own
// (as in its container; a fresh one for each memory figure), under hostile clients: its peak
// memory while 1 GiB goes through as the body of an upgrade request; its memory with 4000
// connections from 20 addresses that send nothing, half a head, or 60 KiB of a head that never
// ends, and with 4000 from one address (the cap keeps 256); and how long slow clients live: a
// head that trickles in (at once, or after 9 s of silence), a connection that sends nothing, a
// body that trickles in. Run it with -benchtime 1x: each figure is one measurement.
func BenchmarkHostileFigures(b *testing.B) {
	app, _ := hostileApp(b, "blue")
	mib := func(n int64) float64 { return float64(n) / (1 << 20) }
	for range b.N {
		// 1 GiB, chunked, on an upgrade request.
		_, listen, pid := startChild(b, 0, 0, 0, addr(app))
		rss, _ := procStatus(b, pid)
		b.ReportMetric(mib(rss), "idle-rss-MiB")
		resetPeak(pid)
		c := dialRaw(b, listen)
		go func() {
			w := bufio.NewWriterSize(c, 64<<10)
			io.WriteString(w, "POST /count HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nTransfer-Encoding: chunked\r\n\r\n")
			chunk := make([]byte, 64<<10)
			for n := 0; n < 1<<30; n += len(chunk) {
				fmt.Fprintf(w, "%x\r\n", len(chunk))
				w.Write(chunk)
				io.WriteString(w, "\r\n")
			}
			io.WriteString(w, "0\r\n\r\n")
			w.Flush()
		}()
		start := time.Now()
		if resp, body, err := c.tryResponse(5 * time.Minute); err != nil || !strings.HasPrefix(body, "blue counted 1073741824 bytes") {
			b.Fatalf("1 GiB on an upgrade request: %v %v %q", resp, err, body)
		}
		_, peak := procStatus(b, pid)
		b.ReportMetric(mib(peak), "upgrade-1GiB-peak-MiB")
		b.ReportMetric(float64(1<<30)/(1<<20)/time.Since(start).Seconds(), "upgrade-1GiB-MiB/s")
		c.Close()

		// 4000 connections held.
		for _, v := range []struct {
			name  string
			addrs int
			head  string
		}{
			{"silent", 20, ""},
			{"halfhead", 20, "GET / HTTP/1.1\r\nHost: "},
			{"fullhead", 20, "GET / HTTP/1.1\r\nX: " + strings.Repeat("x", 60<<10)},
			{"oneaddr", 1, ""},
			// Each asks for 64 MiB and reads none of it: the app's answer fills what the
			// proxy holds for it, and the kernel's buffers on both sides.
			{"slowreader", 20, "GET /big?n=67108864 HTTP/1.1\r\nHost: app\r\n\r\n"},
			// The same with heads of 8 KiB (as large as a head may be without counting as a
			// large one), and of 60 KiB (only 256 of those are let in flight at once).
			{"head8k-slowreader", 20, "GET /big?n=67108864 HTTP/1.1\r\nHost: app\r\nX: " + strings.Repeat("x", 8<<10-64) + "\r\n\r\n"},
			{"fullhead-slowreader", 20, "GET /big?n=67108864 HTTP/1.1\r\nHost: app\r\nX: " + strings.Repeat("x", 60<<10) + "\r\n\r\n"},
		} {
			sock, listen, pid := startChild(b, 0, 0, 0, addr(app))
			status := func() RouteStatus { return childStatus(b, sock) }
			rss, _ := procStatus(b, pid)
			kernel := tcpKernelMem(b)
			resetPeak(pid)
			conns := make([]*rawClient, 0, 4000)
			for i := range 4000 {
				c := dialRawFrom(b, fmt.Sprintf("127.0.4.%d", 1+i%v.addrs), listen)
				if v.head != "" {
					c.send(b, v.head)
				}
				conns = append(conns, c)
			}
			want := int64(4000)
			if v.addrs == 1 {
				want = int64(DefaultLimits.MaxConnsPerAddr)
			}
			inFlight := want
			if v.name == "fullhead-slowreader" {
				inFlight = int64(cap(bigHeads)) // the others are answered 503 and closed
			} else {
				waitForStatus(b, 5*time.Second, "the connections held", status, func(st RouteStatus) bool { return st.Conns == want })
			}
			if strings.HasSuffix(v.name, "slowreader") {
				// Until the answers have filled every buffer: the memory stops growing.
				waitForStatus(b, time.Minute, "every answer under way", status, func(st RouteStatus) bool { return st.InFlight == inFlight })
				last := int64(-1 << 40)
				for range 60 {
					time.Sleep(500 * time.Millisecond)
					now, _ := procStatus(b, pid)
					if now-last < 1<<20 {
						break
					}
					last = now
				}
				b.ReportMetric(mib(tcpKernelMem(b)-kernel), v.name+"-4000-kernel-tcp-MiB")
			}
			held, peak := procStatus(b, pid)
			b.ReportMetric(mib(held-rss), v.name+"-4000-rss-MiB")
			b.ReportMetric(mib(peak-rss), v.name+"-4000-peak-MiB")
			for _, c := range conns {
				c.Close()
			}
		}

		// Slow clients, at once: a head a byte a second (at once, or after 9 s of silence),
		// nothing, a body at 100 bytes a second after its first 8 KiB (what the server reads
		// with the head).
		_, listen, _ = startChild(b, 0, 0, 0, addr(app))
		kinds := []string{"head-trickle", "late-head-trickle", "silent", "body-trickle"}
		lived := make(chan [2]any, len(kinds))
		for _, kind := range kinds {
			c := dialRaw(b, listen)
			go func() {
				start := time.Now()
				trickle := func(every time.Duration, s string) {
					for {
						time.Sleep(every)
						c.SetWriteDeadline(time.Now().Add(time.Second))
						if _, err := io.WriteString(c, s); err != nil {
							return
						}
					}
				}
				switch kind {
				case "head-trickle":
					io.WriteString(c, "GET / HTTP/1.1\r\n")
					go trickle(time.Second, "X")
				case "late-head-trickle":
					time.Sleep(9 * time.Second)
					io.WriteString(c, "GET / HTTP/1.1\r\n")
					go trickle(time.Second, "X")
				case "body-trickle":
					io.WriteString(c, "POST /count HTTP/1.1\r\nHost: app\r\nContent-Length: 1000000\r\n\r\n"+strings.Repeat("x", 8192))
					go trickle(100*time.Millisecond, "0123456789")
				}
				c.SetReadDeadline(time.Now().Add(time.Minute))
				io.Copy(io.Discard, c)
				lived <- [2]any{kind, time.Since(start)}
			}()
		}
		for range kinds {
			l := <-lived
			b.ReportMetric(l[1].(time.Duration).Seconds(), l[0].(string)+"-lived-s")
		}
	}
}

// tcpKernelMem is the memory the kernel's TCP sockets hold, all processes together
// (/proc/net/sockstat, "TCP: ... mem" in pages).
func tcpKernelMem(t testing.TB) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/net/sockstat")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && f[0] == "TCP:" {
			for i := 1; i+1 < len(f); i++ {
				if f[i] == "mem" {
					n, _ := strconv.ParseInt(f[i+1], 10, 64)
					return n * int64(os.Getpagesize())
				}
			}
		}
	}
	return 0
}

// procStatus reads a process's resident memory and its peak (VmRSS, VmHWM), in bytes.
func procStatus(t testing.TB, pid int) (rss, peak int64) {
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

// resetPeak makes a process's peak resident memory its present one (Linux: clear_refs 5).
func resetPeak(pid int) { os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0) }
