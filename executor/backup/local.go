package backup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"syscall"
)

// Local is a store in a directory on the machine that runs the deployer: the embedded default,
// which needs no cloud. Every access goes through an os.Root of the directory, so neither a key
// nor a symbolic link someone put into the directory reaches a file outside it.
type Local struct {
	Dir string
}

func (l *Local) String() string { return l.Dir }

// checkKey refuses keys that are not relative paths of names: ".." or an empty component is
// refused (a name that merely contains "..", like a project "a..b", is fine).
func checkKey(key string) error {
	if key == "" || strings.HasPrefix(key, "/") || strings.ContainsRune(key, 0) {
		return fmt.Errorf("invalid key %q", key)
	}
	for _, part := range strings.Split(key, "/") {
		if part == "" || part == "." || part == ".." {
			return fmt.Errorf("invalid key %q", key)
		}
	}
	return nil
}

func (l *Local) root() (*os.Root, error) {
	r, err := os.OpenRoot(l.Dir)
	if err != nil {
		return nil, fmt.Errorf("backup store %s: %w", l.Dir, unwrapPath(err))
	}
	return r, nil
}

func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
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
	if err := checkKey(key); err != nil {
		return err
	}
	if err := os.MkdirAll(l.Dir, 0o700); err != nil {
		return fmt.Errorf("backup store %s: %w", l.Dir, err)
	}
	root, err := l.root()
	if err != nil {
		return err
	}
	defer root.Close()
	if err := l.noLinks(root, key); err != nil {
		return err
	}
	if err := root.MkdirAll(path.Dir(key), 0o700); err != nil {
		return fmt.Errorf("backup store %s: %w", l.Dir, err)
	}
	tmp := path.Join(path.Dir(key), ".tmp-"+path.Base(key)+"-"+randomSuffix())
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("backup store %s: %w", l.Dir, err)
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			root.Remove(tmp)
		}
	}()
	if _, err := io.Copy(newWriteBehind(f), ctxReader{ctx, r}); err != nil {
		return fmt.Errorf("write %s to %s: %w", key, l.Dir, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write %s to %s: %w", key, l.Dir, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s to %s: %w", key, l.Dir, err)
	}
	if err := root.Rename(tmp, key); err != nil {
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

// Get opens the regular file at key.
func (l *Local) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	root, err := l.root()
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s in %s: %w", key, l.Dir, ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	defer root.Close()
	if err := l.noLinks(root, key); err != nil {
		return nil, err
	}
	before, err := root.Lstat(key)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s in %s: %w", key, l.Dir, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("backup store %s: %s: %w", l.Dir, key, unwrapPath(err))
	}
	if !before.Mode().IsRegular() {
		return nil, fmt.Errorf("backup store %s: %s is not a regular file (%s): the deployer reads no other", l.Dir, key, before.Mode().Type())
	}
	// O_NONBLOCK: a FIFO swapped in meanwhile does not hang the open; it is refused below.
	f, err := root.OpenFile(key, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s in %s: %w", key, l.Dir, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("backup store %s: %s: %w", l.Dir, key, unwrapPath(err))
	}
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() || !os.SameFile(before, st) {
		f.Close()
		return nil, fmt.Errorf("backup store %s: %s is not a regular file, or changed while it was opened", l.Dir, key)
	}
	return f, nil
}

// noLinks refuses a key whose directories include a symbolic link: os.Root follows links that
// stay inside the store, and one could lead a service's directory into another's. A
// directory that does not exist yet is fine.
func (l *Local) noLinks(root *os.Root, key string) error {
	for i := 0; i < len(key); i++ {
		if key[i] != '/' {
			continue
		}
		info, err := root.Lstat(key[:i])
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("backup store %s: %s: %w", l.Dir, key[:i], unwrapPath(err))
		}
		if info.Mode()&fs.ModeSymlink != 0 {
			return fmt.Errorf("backup store %s: %s is a symbolic link: the deployer follows none in a store; replace it with a directory", l.Dir, Printable(key[:i]))
		}
		if !info.IsDir() {
			return fmt.Errorf("backup store %s: %s is not a directory", l.Dir, Printable(key[:i]))
		}
	}
	return nil
}

// List walks the directory that holds prefix (without following symbolic links) for the
// regular files under prefix. It reads directories in batches and stops with an error past
// maxListObjects entries, counting every entry it meets, so a directory of millions of files
// costs neither memory nor time.
func (l *Local) List(ctx context.Context, prefix string) ([]Object, error) {
	root, err := l.root()
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer root.Close()
	start := path.Dir(prefix + "x") // the directory that holds every key starting with prefix
	if start != "." {
		if err := l.noLinks(root, start+"/"); err != nil {
			return nil, err
		}
		info, err := root.Lstat(start)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("backup store %s: %w", l.Dir, unwrapPath(err))
		}
		if !info.IsDir() {
			return nil, nil
		}
	}
	var out []Object
	seen := 0
	var walk func(dir string) error
	walk = func(dir string) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		f, err := root.Open(dir)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("backup store %s: %w", l.Dir, unwrapPath(err))
		}
		var subdirs []string
		for {
			ents, err := f.ReadDir(256)
			for _, e := range ents {
				if seen++; seen > maxListObjects {
					f.Close()
					return tooMany(l.Dir, prefix)
				}
				p := e.Name()
				if dir != "." {
					p = dir + "/" + p
				}
				switch {
				case e.IsDir(): // a symbolic link is not a directory here: never followed
					if strings.HasPrefix(p+"/", prefix) || strings.HasPrefix(prefix, p+"/") {
						subdirs = append(subdirs, p)
					}
				case e.Type().IsRegular() && strings.HasPrefix(p, prefix) && !strings.HasPrefix(e.Name(), ".tmp-"):
					info, err := e.Info()
					if errors.Is(err, fs.ErrNotExist) {
						continue
					}
					if err != nil {
						f.Close()
						return err
					}
					out = append(out, Object{Key: p, Size: info.Size(), Modified: info.ModTime()})
				}
			}
			if err == io.EOF || (err == nil && len(ents) == 0) {
				break
			}
			if err != nil {
				f.Close()
				return fmt.Errorf("backup store %s: %w", l.Dir, unwrapPath(err))
			}
		}
		f.Close() // one directory open at a time, however deep the tree
		for _, d := range subdirs {
			if err := walk(d); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(start); err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// Delete removes keys, and the directories they leave empty up to the store's root.
func (l *Local) Delete(ctx context.Context, keys ...string) error {
	root, err := l.root()
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer root.Close()
	for _, k := range keys {
		if err := checkKey(k); err != nil {
			return err
		}
		if err := l.noLinks(root, k); err != nil {
			return err
		}
		if info, err := root.Lstat(k); err == nil && info.Mode().IsRegular() && info.Size() > 4*shrinkStep {
			if f, err := root.OpenFile(k, os.O_WRONLY, 0); err == nil {
				shrink(f, info.Size())
				f.Close()
			}
		}
		if err := root.Remove(k); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		for dir := path.Dir(k); dir != "." && dir != "/"; dir = path.Dir(dir) {
			if root.Remove(dir) != nil {
				break
			}
		}
	}
	return nil
}
