package backup

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"path"
	"strings"
)

// withSnapshots is a volume's archive stream with its databases taken from their snapshots:
// inner (the volume's tar from the engine, nil when nothing besides the databases is read) is
// copied without the databases and their -wal, -shm and -journal, then each snapshot is added
// under its database's path, with the owner and mode the database had. A restore then finds a
// database that opens cleanly: no stale -wal or -shm beside it.
func withSnapshots(ctx context.Context, base string, inner io.ReadCloser, vr *VolumeReport, open func(context.Context, string) (io.ReadCloser, error)) io.ReadCloser {
	pr, pw := io.Pipe()
	go func() {
		err := writeWithSnapshots(ctx, pw, base, inner, vr, open)
		if inner != nil {
			inner.Close()
		}
		pw.CloseWithError(err)
	}()
	return pr
}

func writeWithSnapshots(ctx context.Context, w io.Writer, base string, inner io.Reader, vr *VolumeReport, open func(context.Context, string) (io.ReadCloser, error)) error {
	tw := tar.NewWriter(w)
	if inner == nil {
		for _, d := range append([]EntryInfo{vr.Root}, vr.Dirs...) {
			name := strings.TrimSuffix(path.Join(base, d.Path), "/") + "/"
			hdr := &tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: d.Mode, Uid: d.UID, Gid: d.GID, ModTime: d.ModTime}
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
		}
	} else if err := copyExcept(tw, inner, vr.Excluded()); err != nil {
		return err
	}
	for _, db := range vr.DBs {
		if db.Error != "" {
			continue
		}
		rc, err := open(ctx, db.File)
		if err != nil {
			return fmt.Errorf("the snapshot of %s: %w", db.Path, err)
		}
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: path.Join(base, db.Path), Mode: db.Mode, Uid: db.UID, Gid: db.GID, ModTime: db.ModTime, Size: db.Size}
		err = tw.WriteHeader(hdr)
		var n int64
		if err == nil {
			n, err = io.Copy(tw, io.LimitReader(rc, db.Size))
		}
		rc.Close()
		if err == nil && n != db.Size {
			err = fmt.Errorf("%d bytes of %d", n, db.Size)
		}
		if err != nil {
			return fmt.Errorf("the snapshot of %s: %w", db.Path, err)
		}
	}
	return tw.Close()
}

// copyExcept copies a volume's tar entries (named <base>/<path>) but those whose path is
// excluded.
func copyExcept(tw *tar.Writer, r io.Reader, excluded map[string]bool) error {
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read the volume: %w", err)
		}
		if rel, ok := inVolume(hdr.Name); ok && excluded[rel] {
			continue
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return err
		}
	}
}
