package backup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Local is a store in a directory on the machine that runs the deployer: the embedded default,
// which needs no cloud.
type Local struct {
	Dir string
}

func (l *Local) String() string { return l.Dir }

func (l *Local) path(key string) (string, error) {
	clean := filepath.Clean("/" + key)
	if clean == "/" || strings.Contains(key, "..") {
		return "", fmt.Errorf("invalid key %q", key)
	}
	return filepath.Join(l.Dir, filepath.FromSlash(clean)), nil
}

// Check makes sure the directory exists and is writable.
func (l *Local) Check(ctx context.Context) error {
	if err := os.MkdirAll(l.Dir, 0o700); err != nil {
		return fmt.Errorf("backup store %s: %w", l.Dir, err)
	}
	f, err := os.CreateTemp(l.Dir, ".check-*")
	if err != nil {
		return fmt.Errorf("backup store %s is not writable: %w", l.Dir, err)
	}
	f.Close()
	return os.Remove(f.Name())
}

// Put writes to a temporary file beside the key, syncs it and renames it into place, so a
// failure (a full disk, a cancelled context) leaves nothing at key.
func (l *Local) Put(ctx context.Context, key string, r io.Reader) error {
	p, err := l.path(key)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return fmt.Errorf("backup store %s: %w", l.Dir, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(p), ".tmp-"+filepath.Base(p)+"-*")
	if err != nil {
		return fmt.Errorf("backup store %s: %w", l.Dir, err)
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := io.Copy(tmp, ctxReader{ctx, r}); err != nil {
		return fmt.Errorf("write %s to %s: %w", key, l.Dir, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write %s to %s: %w", key, l.Dir, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s to %s: %w", key, l.Dir, err)
	}
	if err := os.Rename(tmp.Name(), p); err != nil {
		return err
	}
	ok = true
	return nil
}

// ctxReader stops a copy when the context is cancelled.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

func (l *Local) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	p, err := l.path(key)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s in %s: %w", key, l.Dir, ErrNotFound)
	}
	return f, err
}

func (l *Local) List(ctx context.Context, prefix string) ([]Object, error) {
	var out []Object
	err := filepath.WalkDir(l.Dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() || strings.HasPrefix(d.Name(), ".tmp-") {
			return nil
		}
		rel, _ := filepath.Rel(l.Dir, p)
		key := filepath.ToSlash(rel)
		if !strings.HasPrefix(key, prefix) {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		out = append(out, Object{Key: key, Size: info.Size(), Modified: info.ModTime()})
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, err
}

func (l *Local) Delete(ctx context.Context, keys ...string) error {
	for _, k := range keys {
		p, err := l.path(k)
		if err != nil {
			return err
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		// Remove directories left empty, up to the store's root.
		for dir := filepath.Dir(p); dir != filepath.Clean(l.Dir) && strings.HasPrefix(dir, filepath.Clean(l.Dir)); dir = filepath.Dir(dir) {
			if os.Remove(dir) != nil {
				break
			}
		}
	}
	return nil
}
