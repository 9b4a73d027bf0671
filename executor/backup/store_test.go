package backup_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/deployer-dev/deployer/executor/backup"
	"github.com/deployer-dev/deployer/executor/backup/s3test"
)

// Every store passes the same suite.
func TestStoreConformance(t *testing.T) {
	t.Run("local", func(t *testing.T) { conformance(t, &backup.Local{Dir: t.TempDir() + "/store"}) })
	t.Run("s3", func(t *testing.T) { conformance(t, s3test.Store(t, "conf/")) })
}

func conformance(t *testing.T, st backup.Store) {
	ctx := context.Background()
	if err := st.Check(ctx); err != nil {
		t.Fatal(err)
	}
	if err := st.Put(ctx, "p/s/a/one.txt", strings.NewReader("hello")); err != nil {
		t.Fatal(err)
	}
	rc, err := st.Get(ctx, "p/s/a/one.txt")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "hello" {
		t.Errorf("got %q", b)
	}
	if _, err := st.Get(ctx, "p/s/a/missing"); !errors.Is(err, backup.ErrNotFound) {
		t.Errorf("missing key: %v", err)
	}
	// A stream of unknown length, larger than one multipart part.
	big := make([]byte, 40<<20)
	rand.Read(big)
	if err := st.Put(ctx, "p/s/b/big.bin", io.MultiReader(bytes.NewReader(big[:1<<20]), bytes.NewReader(big[1<<20:]))); err != nil {
		t.Fatal(err)
	}
	rc, err = st.Get(ctx, "p/s/b/big.bin")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(got, big) {
		t.Errorf("big object differs (%d bytes back)", len(got))
	}
	list, err := st.List(ctx, "p/s/")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, o := range list {
		keys = append(keys, o.Key)
	}
	if strings.Join(keys, ",") != "p/s/a/one.txt,p/s/b/big.bin" || list[1].Size != int64(len(big)) {
		t.Errorf("list: %v", list)
	}
	// An upload cut off halfway leaves nothing at the key.
	cut := io.MultiReader(bytes.NewReader(big[:20<<20]), &failing{})
	if err := st.Put(ctx, "p/s/c/cut.bin", cut); err == nil {
		t.Error("a failed stream was stored")
	}
	if _, err := st.Get(ctx, "p/s/c/cut.bin"); !errors.Is(err, backup.ErrNotFound) {
		t.Errorf("after a cut-off upload: %v", err)
	}
	if err := st.Delete(ctx, "p/s/a/one.txt", "p/s/b/big.bin", "p/s/none"); err != nil {
		t.Fatal(err)
	}
	if list, _ := st.List(ctx, "p/"); len(list) != 0 {
		t.Errorf("after delete: %v", list)
	}
}

type failing struct{}

func (failing) Read([]byte) (int, error) { return 0, errors.New("connection to the container lost") }

func TestS3MultipartAbortedOnFailure(t *testing.T) {
	st := s3test.Store(t, "abort/")
	big := make([]byte, 40<<20)
	if err := st.Put(context.Background(), "x/cut.bin", io.MultiReader(bytes.NewReader(big), &failing{})); err == nil {
		t.Fatal("stored")
	}
	out, err := s3test.Client(t).ListMultipartUploads(context.Background(), &s3.ListMultipartUploadsInput{Bucket: aws.String(s3test.Bucket(st))})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Uploads) != 0 {
		t.Errorf("%d multipart uploads left open", len(out.Uploads))
	}
}

func TestS3Errors(t *testing.T) {
	ctx := context.Background()
	good := s3test.Config(t)
	cases := []struct {
		name string
		cfg  func(c *backup.S3Config)
		env  map[string]string
		want string
	}{
		{"bucket missing", func(c *backup.S3Config) { c.Bucket = "no-such-bucket-here" }, nil, `the bucket "no-such-bucket-here" does not exist`},
		{"wrong credentials", nil, map[string]string{"AWS_SECRET_ACCESS_KEY": "wrong"}, "the credentials were refused"},
		{"endpoint down", func(c *backup.S3Config) { c.Endpoint = "http://127.0.0.1:1" }, nil, "the endpoint does not answer"},
		{"another region", func(c *backup.S3Config) { c.Region = "ap-northeast-1" }, nil, `another region than "ap-northeast-1"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := good
			if c.cfg != nil {
				c.cfg(&cfg)
			}
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			st, err := backup.NewS3(ctx, cfg)
			if err == nil {
				err = st.Check(ctx)
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("check: err = %v, want %q", err, c.want)
			}
			if st != nil {
				if err := st.Put(ctx, "k", strings.NewReader("x")); err == nil || !strings.Contains(err.Error(), c.want) {
					t.Errorf("put: err = %v, want %q", err, c.want)
				}
			}
		})
	}
}

// A local store on a full disk: the write fails with the system's reason and nothing is left at
// the key, not even a temporary file.
func TestLocalDiskFull(t *testing.T) {
	dir := t.TempDir()
	if err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", dir).Run(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI runs as root and must be able to mount a tmpfs: %v", err)
		}
		t.Skipf("cannot mount a small tmpfs here (not root?): %v", err)
	}
	defer exec.Command("umount", dir).Run()
	st := &backup.Local{Dir: dir}
	err := st.Put(context.Background(), "p/s/id/volume-data.tar.zst", bytes.NewReader(make([]byte, 2<<20)))
	if err == nil || !strings.Contains(err.Error(), "no space left on device") {
		t.Fatalf("err = %v", err)
	}
	if list, _ := st.List(context.Background(), ""); len(list) != 0 {
		t.Errorf("left behind: %v", list)
	}
	entries, _ := os.ReadDir(dir + "/p/s/id")
	if len(entries) != 0 {
		t.Errorf("temporary files left: %v", entries)
	}
}

// sse and kms_key_id reach the bucket with every upload, small (one PUT) or multipart (on the
// request that creates the upload), as the S3 headers that ask for server-side encryption. There
// is no KMS here: the real server ignores them, and what the deployer sent is what is checked.
func TestS3ServerSideEncryptionHeaders(t *testing.T) {
	cfg := s3test.Config(t)
	target, _ := url.Parse(cfg.Endpoint)
	var mu sync.Mutex
	var seen []http.Header
	rp := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, create := r.URL.Query()["uploads"]
		if (r.Method == http.MethodPut && r.URL.Query().Get("partNumber") == "") || (r.Method == http.MethodPost && create) {
			mu.Lock()
			seen = append(seen, r.Header.Clone())
			mu.Unlock()
		}
		rp.ServeHTTP(w, r)
	}))
	defer srv.Close()
	for _, c := range []struct{ sse, kms string }{{"AES256", ""}, {"aws:kms", "alias/deployer-backups"}} {
		seen = nil
		cfg.Endpoint, cfg.SSE, cfg.KMSKeyID = srv.URL, c.sse, c.kms
		st, err := backup.NewS3(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Put(context.Background(), "small", strings.NewReader("hello")); err != nil {
			t.Fatal(err)
		}
		if err := st.Put(context.Background(), "big", bytes.NewReader(make([]byte, 20<<20))); err != nil {
			t.Fatal(err)
		}
		if len(seen) != 2 {
			t.Fatalf("%s: %d object uploads seen, want a PUT and a multipart upload", c.sse, len(seen))
		}
		for _, h := range seen {
			if got := h.Get("X-Amz-Server-Side-Encryption"); got != c.sse {
				t.Errorf("x-amz-server-side-encryption %q, want %q", got, c.sse)
			}
			if got := h.Get("X-Amz-Server-Side-Encryption-Aws-Kms-Key-Id"); got != c.kms {
				t.Errorf("x-amz-server-side-encryption-aws-kms-key-id %q, want %q", got, c.kms)
			}
		}
	}
}

// A prefix is a directory, as a local store's is: "backups" and "backups/" put keys in the same
// place, and what an earlier version stored under "backupsKEY" is still read and deleted.
func TestS3PrefixJoin(t *testing.T) {
	ctx := context.Background()
	cfg := s3test.Config(t)
	raw := s3test.Client(t)
	// What a deployer before 2026-11-28 wrote with prefix "backups".
	raw.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(cfg.Bucket), Key: aws.String("backupsproj/web/old.txt"), Body: strings.NewReader("old")})
	cfg.Prefix = "backups"
	st, err := backup.NewS3(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Put(ctx, "proj/web/new.txt", strings.NewReader("new")); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(cfg.Bucket), Key: aws.String("backups/proj/web/new.txt")}); err != nil {
		t.Errorf("not written under backups/: %v", err)
	}
	list, err := st.List(ctx, "proj/web/")
	if err != nil || len(list) != 2 {
		t.Fatalf("list: %+v %v", list, err)
	}
	rc, err := st.Get(ctx, "proj/web/old.txt")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "old" {
		t.Errorf("old object: %q", b)
	}
	if err := st.Delete(ctx, "proj/web/old.txt"); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(cfg.Bucket), Key: aws.String("backupsproj/web/old.txt")}); err == nil {
		t.Error("the old object was not deleted")
	}
}

// slowBody is a response body from the store that gives its first bytes, then nothing (stall)
// or one byte at a time, every tick (trickle), until the client goes away.
type slowBody struct {
	r     io.ReadCloser
	ctx   context.Context
	first int
	tick  time.Duration // 0: nothing after the first bytes
	sent  int
}

func (s *slowBody) Read(p []byte) (int, error) {
	if s.sent >= s.first {
		if s.tick == 0 {
			<-s.ctx.Done()
			return 0, s.ctx.Err()
		}
		select {
		case <-time.After(s.tick):
		case <-s.ctx.Done():
			return 0, s.ctx.Err()
		}
		p = p[:1]
	} else if len(p) > s.first-s.sent {
		p = p[:s.first-s.sent]
	}
	n, err := s.r.Read(p)
	s.sent += n
	return n, err
}

func (s *slowBody) Close() error { return s.r.Close() }

// slowStore is the test's S3 server behind a proxy that slows the answers slow picks.
func slowStore(t *testing.T, cfg backup.S3Config, slow func(r *http.Request) *slowBody) *backup.S3 {
	t.Helper()
	u, _ := url.Parse(cfg.Endpoint)
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.FlushInterval = -1
	rp.ModifyResponse = func(resp *http.Response) error {
		if s := slow(resp.Request); s != nil {
			s.r, s.ctx = resp.Body, resp.Request.Context()
			resp.Body = s
		}
		return nil
	}
	srv := httptest.NewServer(rp)
	t.Cleanup(func() { srv.CloseClientConnections(); srv.Close() })
	cfg.Endpoint = srv.URL
	st, err := backup.NewS3(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// within runs fn and fails the test with what it returns, or if it has not returned in a
// minute: what would hang. fn never touches t (it may outlive the test).
func within(t *testing.T, what string, fn func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("%s: %v", what, err)
		}
	case <-time.After(time.Minute):
		t.Fatalf("%s still runs after a minute", what)
	}
}

// A store that stops sending (part of a manifest, then nothing; part of a listing, then
// nothing) fails the read once it has been silent for the store's idle bound, and one that
// trickles a byte at a time is stopped by the prune's deadline: a listing, a backup's prune and
// the deploy lock are never held by a store that does not answer.
func TestStoreThatStalls(t *testing.T) {
	ctx := context.Background()
	defer backup.SetStoreIdle(time.Second)()
	cfg := s3test.Config(t)
	direct, err := backup.NewS3(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	stalled, _ := takeKeep(t, direct, nil, 0)
	takeKeep(t, direct, nil, 0)
	manifestOf := func(id string) func(r *http.Request) *slowBody {
		return func(r *http.Request) *slowBody {
			if r.Method == "GET" && strings.HasSuffix(r.URL.Path, id+"/"+backup.ManifestName) {
				return &slowBody{first: 10}
			}
			return nil
		}
	}
	t.Run("a manifest", func(t *testing.T) {
		store := slowStore(t, cfg, manifestOf(stalled.ID))
		within(t, "the listing", func() error {
			l, err := backup.List(ctx, store, want, nil)
			if err != nil {
				return err
			}
			if len(l.Complete) != 1 || len(l.Refused) != 1 || l.Refused[0].ID != stalled.ID || !strings.Contains(l.Refused[0].Reason, "the store sent nothing for 1s") {
				return fmt.Errorf("%d complete, refused %+v", len(l.Complete), l.Refused)
			}
			return nil
		})
		within(t, "the lookup", func() error {
			if _, err := backup.Find(ctx, store, want, nil, stalled.ID); err == nil || !strings.Contains(err.Error(), "the store sent nothing") {
				return fmt.Errorf("find: %v", err)
			}
			return nil
		})
	})
	t.Run("a listing", func(t *testing.T) {
		store := slowStore(t, cfg, func(r *http.Request) *slowBody {
			if r.Method == "GET" && r.URL.Query().Get("list-type") == "2" {
				return &slowBody{first: 10}
			}
			return nil
		})
		within(t, "the listing", func() error {
			if _, err := backup.List(ctx, store, want, nil); err == nil || !strings.Contains(err.Error(), "the store sent nothing for 1s") {
				return fmt.Errorf("list: %v", err)
			}
			return nil
		})
	})
	t.Run("a manifest a byte at a time", func(t *testing.T) {
		defer backup.SetPruneDeadline(2 * time.Second)()
		store := slowStore(t, cfg, func(r *http.Request) *slowBody {
			if r.Method == "GET" && strings.HasSuffix(r.URL.Path, backup.ManifestName) {
				return &slowBody{first: 1, tick: 200 * time.Millisecond}
			}
			return nil
		})
		within(t, "the backup", func() error {
			var warned []string
			m, err := backup.Take(ctx, backup.Request{Store: store, Source: &memSource{map[string][]byte{"/data": tarOf(t, entry{name: "data/f.txt", body: "genuine"})}},
				Project: "proj", Service: "web", Release: 3, ContainerID: "c", Consistency: "none", Keep: 1,
				Volumes: []backup.Volume{{Name: "data", Target: "/data"}}, Warn: func(s string) { warned = append(warned, s) }})
			if err != nil {
				return err
			}
			if text := strings.Join(warned, "\n"); !strings.Contains(text, "backup "+m.ID+" is complete, but old backups were not removed: the prune did not finish within 2s") {
				return fmt.Errorf("warnings: %q", warned)
			}
			return nil
		})
	})
}
