package memengine

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/deployer-dev/deployer/executor/engine"
)

// CopyFrom streams a tar of a path under one of the container's volumes; its entries are named
// from the path's base name, as the engine's copy API names them.
func (e *Engine) CopyFrom(_ context.Context, id, file string) (io.ReadCloser, error) {
	e.mu.Lock()
	c, err := e.get("copy", id)
	var src string
	ok := false
	if err == nil {
		src, ok = (&Process{mounts: c.mounts}).Path(file)
	}
	e.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("copy %s from %s: %w", file, c.name, engine.ErrNotFound)
	}
	if _, err := os.Lstat(src); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("copy %s from %s: %w", file, c.name, engine.ErrNotFound)
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(writeTar(pw, src, path.Base(file))) }()
	return pr, nil
}

func writeTar(w io.Writer, src, base string) error {
	tw := tar.NewWriter(w)
	err := filepath.Walk(src, func(p string, info fs.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		name := path.Join(base, filepath.ToSlash(rel))
		link := ""
		if info.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		hdr.Name = name
		if info.IsDir() {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// CopyTo extracts a tar into a directory under one of the container's volumes.
func (e *Engine) CopyTo(_ context.Context, id, dir string, r io.Reader) error {
	e.mu.Lock()
	c, err := e.get("copy", id)
	e.mu.Unlock()
	if err != nil {
		return err
	}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		name := path.Join(dir, hdr.Name)
		if strings.Contains(hdr.Name, "..") {
			return fmt.Errorf("copy to %s: entry %q leaves the directory", c.name, hdr.Name)
		}
		dst, ok := (&Process{mounts: c.mounts}).Path(name)
		if !ok {
			return fmt.Errorf("copy to %s: %s is on no volume (the in-memory engine has no other files)", c.name, name)
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(dst, 0o755)
		case tar.TypeReg:
			err = writeFile(dst, tr, hdr.FileInfo().Mode().Perm())
		case tar.TypeSymlink:
			os.Remove(dst)
			err = os.Symlink(hdr.Linkname, dst)
		}
		if err != nil {
			return err
		}
	}
}

func writeFile(dst string, r io.Reader, mode fs.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
