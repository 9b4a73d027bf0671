package proxy

import (
	"io"
	"net/http"
	"testing"
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
