package proxy

import (
	"bufio"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// headWith is a request head with kept headers and dropped ones (hop-by-hop, spoofed), n of
// each, interleaved.
func headWith(n int) string {
	var b strings.Builder
	b.WriteString("GET / HTTP/1.1\r\nHost: app\r\n")
	drop := []string{"te", "Te", "tE", "TE"}
	for i := range n {
		b.WriteString("a:\r\n")
		b.WriteString(drop[i%len(drop)] + ":\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

// forwardTime is how long forwardHeaders takes on head (the best of a few runs).
func forwardTime(t *testing.T, head string) time.Duration {
	best := time.Hour
	for range 5 {
		var ctx fasthttp.RequestCtx
		ctx.Request.Header.DisableNormalizing()
		if err := ctx.Request.Header.Read(bufio.NewReaderSize(strings.NewReader(head), 1<<20)); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if _, err := forwardHeaders(&ctx); err != nil {
			t.Fatal(err)
		}
		best = min(best, time.Since(start))
		if n := strings.Count(string(ctx.Request.Header.Header()), "a:"); n != strings.Count(head, "a:") {
			t.Fatalf("%d kept headers of %d", n, strings.Count(head, "a:"))
		}
		if h := string(ctx.Request.Header.Header()); strings.Contains(strings.ToLower(h), "te:") || strings.Count(strings.ToLower(h), "x-real-ip") != 1 || strings.Count(h, "\n") > strings.Count(head, "a:")+10 {
			t.Fatalf("dropped headers left: %.300q", h)
		}
	}
	return best
}

// Dropping headers takes time in proportion to the head: a head of thousands of headers to drop,
// among thousands to keep (all a 64 KiB head holds), costs no more than a few times a small one
// for each header. (Each header dropped was a pass over all the others: 6000 of each took some
// 100 ms of the proxy's CPU, for one request.)
func TestDroppingHeadersIsLinear(t *testing.T) {
	small, large := forwardTime(t, headWith(600)), forwardTime(t, headWith(6000))
	t.Logf("600 of each: %s, 6000: %s", small, large)
	if len(headWith(6000)) > bufferSize {
		t.Fatalf("the head is over %d bytes: the proxy would refuse it", bufferSize)
	}
	// Linear: 10 times the headers, about 10 times the time; quadratic: 100 times.
	if large > 30*small && large > 5*time.Millisecond {
		t.Errorf("10 times the headers took %.0f times as long (%s, %s)", float64(large)/float64(small), small, large)
	}
}
