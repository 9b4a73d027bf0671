package backup_test

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"

	"filippo.io/age"

	"github.com/deployer-dev/deployer/executor/backup"
)

// randomTar is a tar of one file of n incompressible bytes.
func randomTar(n int64) io.Reader {
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		tw.WriteHeader(&tar.Header{Name: "data/big.bin", Mode: 0o644, Size: n})
		_, err := io.CopyN(tw, rand.NewChaCha8([32]byte{7}), n)
		if err == nil {
			err = tw.Close()
		}
		pw.CloseWithError(err)
	}()
	return pr
}

type streamSource struct{ n int64 }

func (s streamSource) CopyFrom(ctx context.Context, id, path string) (io.ReadCloser, error) {
	return io.NopCloser(randomTar(s.n)), nil
}
func (streamSource) Pause(ctx context.Context, id string) error   { return nil }
func (streamSource) Unpause(ctx context.Context, id string) error { return nil }
func (streamSource) LogStream(ctx context.Context, id string) (io.ReadCloser, error) {
	return nil, nil
}

// BenchmarkArchive measures the deployer's own side of a backup and of a restore (no engine):
// tar in, compressed (and encrypted) archive out to a local store, and back through Tame.
func BenchmarkArchive(b *testing.B) {
	const size = 256 << 20
	for _, enc := range []string{"plain", "age"} {
		id, _ := age.GenerateX25519Identity()
		keys := &backup.Keys{}
		if enc == "age" {
			keys = &backup.Keys{Recipients: []age.Recipient{id.Recipient()}, Identities: []age.Identity{id}}
		}
		store := &backup.Local{Dir: b.TempDir()}
		var m *backup.Manifest
		b.Run(fmt.Sprintf("take/enc=%s", enc), func(b *testing.B) {
			b.SetBytes(size)
			for i := 0; i < b.N; i++ {
				var err error
				m, err = backup.Take(context.Background(), backup.Request{Store: store, Source: streamSource{size}, Project: "p", Service: "s",
					ContainerID: "c", Consistency: "none", Keys: keys, Volumes: []backup.Volume{{Name: "data", Target: "/data"}}, TempDir: b.TempDir()})
				if err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("restore/enc=%s", enc), func(b *testing.B) {
			b.SetBytes(size)
			for i := 0; i < b.N; i++ {
				rc, err := backup.OpenVolume(context.Background(), store, m, "data", keys, b.TempDir())
				if err != nil {
					b.Fatal(err)
				}
				if _, err := backup.Tame(rc, io.Discard, "volume", m.Volumes[0].Bytes); err != nil {
					b.Fatal(err)
				}
				rc.Close()
			}
		})
	}
}
