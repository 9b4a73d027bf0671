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
	"time"

	"golang.org/x/sys/unix"
)

// Local is a store in a directory on the machine that runs the deployer: the embedded default,
// which needs no cloud. Every access opens the store's directories one at a time, by handle, each
// inside the one before and never through a symbolic link (openat with O_NOFOLLOW), and acts on
// the handle it opened: neither a key, nor a link, nor a rename someone makes meanwhile leads a
// read, a write or a delete out of the directory it checked. A listing remembers the identity
// (device and inode) of every file and directory it lists; a prune reads and deletes a listed
// backup only where that identity still is.
type Local struct {
	Dir string
}

func (l *Local) String() string { return l.Dir }

// identity is what a manifest's signature binds of a local store: only that it is one (its
// directory may move with the project).
func (l *Local) identity() string { return "local" }

// fileID is a file's identity on this machine.
type fileID struct{ dev, ino uint64 }

// listedAt is where a local store found an object when it listed it.
type listedAt struct{ dir, file fileID }

// maxListDepth is how many directories below the one a listing starts in it looks into: a
// service's directory holds <id>/<file>, and the directories inside a backup's are looked into
// too (what is nested there is seen, and never counted or deleted), never deeper: a tree
// thousands deep costs nothing.
const maxListDepth = 2

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

// openRoot opens the store's directory (the operator's path, links in it included).
func (l *Local) openRoot() (*os.File, error) {
	f, err := os.Open(l.Dir)
	if err != nil {
		return nil, fmt.Errorf("backup store %s: %w", l.Dir, unwrapPath(err))
	}
	if st, err := f.Stat(); err != nil || !st.IsDir() {
		f.Close()
		return nil, fmt.Errorf("backup store %s is not a directory", l.Dir)
	}
	return f, nil
}

// openDirAt opens the directory name inside dir without following a symbolic link; with
// create, it is made (0700) when missing. where names it for errors.
func (l *Local) openDirAt(dir *os.File, name, where string, create bool) (*os.File, error) {
	if create {
		if err := unix.Mkdirat(int(dir.Fd()), name, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("backup store %s: %s: %w", l.Dir, Printable(where), err)
		}
	}
	fd, err := unix.Openat(int(dir.Fd()), name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOTDIR) { // what Linux says of a link with O_DIRECTORY
		if st, serr := statAt(dir, name); serr == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
			err = unix.ELOOP
		}
	}
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil, fs.ErrNotExist
	case errors.Is(err, unix.ELOOP):
		return nil, fmt.Errorf("backup store %s: %s is a symbolic link: the deployer follows none in a store; replace it with a directory: %w", l.Dir, Printable(where), errNotDir)
	case errors.Is(err, unix.ENOTDIR):
		return nil, fmt.Errorf("backup store %s: %s is not a directory: %w", l.Dir, Printable(where), errNotDir)
	case err != nil:
		return nil, fmt.Errorf("backup store %s: %s: %w", l.Dir, Printable(where), err)
	}
	return os.NewFile(uintptr(fd), where), nil
}

// walk opens the directories dirs (a key's directories, outermost first) one inside the other
// from the store's, and returns the handles, the store's first: the caller closes them.
func (l *Local) walk(dirs []string, create bool) ([]*os.File, error) {
	if create {
		if err := os.MkdirAll(l.Dir, 0o700); err != nil {
			return nil, fmt.Errorf("backup store %s: %w", l.Dir, err)
		}
	}
	root, err := l.openRoot()
	if err != nil {
		return nil, err
	}
	out := []*os.File{root}
	for i, name := range dirs {
		d, err := l.openDirAt(out[len(out)-1], name, strings.Join(dirs[:i+1], "/"), create)
		if err != nil {
			closeAll(out)
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

func closeAll(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

// statAt is what fstatat says of name in dir, without following a link.
func statAt(dir *os.File, name string) (*unix.Stat_t, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(int(dir.Fd()), name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil, err
	}
	return &st, nil
}

func statFile(f *os.File) (*unix.Stat_t, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, err
	}
	return &st, nil
}

func idOf(st *unix.Stat_t) fileID { return fileID{dev: uint64(st.Dev), ino: uint64(st.Ino)} }

func isRegular(st *unix.Stat_t) bool { return st.Mode&unix.S_IFMT == unix.S_IFREG }
func isDir(st *unix.Stat_t) bool     { return st.Mode&unix.S_IFMT == unix.S_IFDIR }

// ours reports whether only this process's user can change the directory's entries.
func ours(st *unix.Stat_t) bool {
	return int(st.Uid) == os.Geteuid() && st.Mode&0o022 == 0
}

func split(key string) (dirs []string, base string) {
	parts := strings.Split(key, "/")
	return parts[:len(parts)-1], parts[len(parts)-1]
}

// Put writes to a temporary file beside the key, syncs it and renames it into place, so a
// failure (a full disk, a cancelled context) leaves nothing at key. The directory it writes
// into must be the deployer's own (made by it, not writable by others): someone else's could
// swap what was written.
func (l *Local) Put(ctx context.Context, key string, r io.Reader) error {
	if err := checkKey(key); err != nil {
		return err
	}
	dirs, base := split(key)
	handles, err := l.walk(dirs, true)
	if err != nil {
		return err
	}
	defer closeAll(handles)
	dir := handles[len(handles)-1]
	if len(dirs) > 0 {
		st, err := statFile(dir)
		if err != nil {
			return fmt.Errorf("backup store %s: %w", l.Dir, err)
		}
		if !ours(st) {
			return fmt.Errorf("backup store %s: %s belongs to uid %d with mode %o: the deployer writes only into a directory of its own, which nobody else can change; remove it, or make it the deployer's (chown, chmod go-w)",
				l.Dir, Printable(path.Dir(key)), st.Uid, st.Mode&0o7777)
		}
	}
	tmp := ".tmp-" + base + "-" + randomSuffix()
	fd, err := unix.Openat(int(dir.Fd()), tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("backup store %s: %w", l.Dir, err)
	}
	f := os.NewFile(uintptr(fd), tmp)
	ok := false
	defer func() {
		if !ok {
			f.Close()
			unix.Unlinkat(int(dir.Fd()), tmp, 0)
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
	if err := unix.Renameat(int(dir.Fd()), tmp, int(dir.Fd()), base); err != nil {
		return fmt.Errorf("write %s to %s: %w", key, l.Dir, err)
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
	return l.get(key, nil)
}

// getListed opens an object where its listing found it: the same directory and the same file,
// or not at all.
func (l *Local) getListed(ctx context.Context, o Object) (io.ReadCloser, error) {
	return l.get(o.Key, o.listed)
}

func (l *Local) get(key string, at *listedAt) (io.ReadCloser, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	dirs, base := split(key)
	handles, err := l.walk(dirs, false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s in %s: %w", key, l.Dir, ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	defer closeAll(handles)
	dir := handles[len(handles)-1]
	if at != nil {
		if err := l.same(dir, at.dir, path.Dir(key)); err != nil {
			return nil, err
		}
	}
	before, err := statAt(dir, base)
	if errors.Is(err, unix.ENOENT) {
		return nil, fmt.Errorf("%s in %s: %w", key, l.Dir, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("backup store %s: %s: %w", l.Dir, Printable(key), err)
	}
	if !isRegular(before) {
		return nil, fmt.Errorf("backup store %s: %s is not a regular file (%s): the deployer reads no other", l.Dir, Printable(key), fs.FileMode(before.Mode&unix.S_IFMT).Type())
	}
	// O_NONBLOCK: a FIFO swapped in meanwhile does not hang the open; it is refused below.
	fd, err := unix.Openat(int(dir.Fd()), base, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil, fmt.Errorf("%s in %s: %w", key, l.Dir, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("backup store %s: %s: %w", l.Dir, Printable(key), err)
	}
	f := os.NewFile(uintptr(fd), key)
	st, err := statFile(f)
	if err != nil || !isRegular(st) || idOf(st) != idOf(before) || (at != nil && idOf(st) != at.file) {
		f.Close()
		return nil, fmt.Errorf("backup store %s: %s is not a regular file, or changed since it was listed", l.Dir, Printable(key))
	}
	return f, nil
}

// errNotDir marks a directory of a key that is a link or a file.
var errNotDir = errors.New("not a directory")

// errChanged marks a directory or a file of a local store that is not the one a listing found
// at its name: someone renamed it meanwhile.
var errChanged = errors.New("changed since it was listed")

// same fails unless dir is the directory a listing found at its name.
func (l *Local) same(dir *os.File, want fileID, name string) error {
	st, err := statFile(dir)
	if err != nil {
		return fmt.Errorf("backup store %s: %s: %w", l.Dir, Printable(name), err)
	}
	if idOf(st) != want {
		return fmt.Errorf("backup store %s: %s is another directory than the one listed (renamed by someone meanwhile): %w", l.Dir, Printable(name), errChanged)
	}
	return nil
}

// List walks the directory that holds prefix (without following symbolic links, at most
// maxListDepth directories down) for the regular files under prefix. It reads directories in
// batches and stops with an error past maxListObjects entries, counting every entry it meets,
// so a directory of millions of files, or a tree thousands deep, costs neither memory nor time.
func (l *Local) List(ctx context.Context, prefix string) ([]Object, error) {
	var dirs []string
	if start := path.Dir(prefix + "x"); start != "." { // the directory that holds every key starting with prefix
		dirs = strings.Split(start, "/")
	}
	handles, err := l.walk(dirs, false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer closeAll(handles)
	var out []Object
	seen := 0
	var walk func(dir *os.File, rel string, depth int) error
	walk = func(dir *os.File, rel string, depth int) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		st, err := statFile(dir)
		if err != nil {
			return fmt.Errorf("backup store %s: %w", l.Dir, err)
		}
		dirID := idOf(st)
		var subdirs []string
		for {
			names, err := dir.Readdirnames(256)
			for _, name := range names {
				if seen++; seen > maxListObjects {
					return tooMany(l.Dir, prefix)
				}
				p := name
				if rel != "" {
					p = rel + "/" + name
				}
				st, err := statAt(dir, name)
				if errors.Is(err, unix.ENOENT) {
					continue // removed meanwhile
				}
				if err != nil {
					return fmt.Errorf("backup store %s: %s: %w", l.Dir, Printable(p), err)
				}
				switch {
				case isDir(st): // a symbolic link is not a directory here: never followed
					if depth < maxListDepth && (strings.HasPrefix(p+"/", prefix) || strings.HasPrefix(prefix, p+"/")) {
						subdirs = append(subdirs, name)
					}
				case isRegular(st) && strings.HasPrefix(p, prefix) && !strings.HasPrefix(name, ".tmp-"):
					out = append(out, Object{Key: p, Size: st.Size, Modified: mtime(st), listed: &listedAt{dir: dirID, file: idOf(st)}})
				}
			}
			if err == io.EOF || (err == nil && len(names) == 0) {
				break
			}
			if err != nil {
				return fmt.Errorf("backup store %s: %w", l.Dir, unwrapPath(err))
			}
		}
		for _, name := range subdirs {
			p := name
			if rel != "" {
				p = rel + "/" + name
			}
			sub, err := l.openDirAt(dir, name, p, false)
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return err
			}
			err = walk(sub, p, depth+1)
			sub.Close()
			if err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(handles[len(handles)-1], strings.Join(dirs, "/"), 0); err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// exposed says which directories on the way to prefix (the store's own included) someone else
// can change the entries of: there they can rename or hide backups (never read, change or
// delete one, which the deployer makes in directories of its own).
func (l *Local) exposed(prefix string) []string {
	var dirs []string
	if start := path.Dir(prefix + "x"); start != "." {
		dirs = strings.Split(start, "/")
	}
	root, err := l.openRoot()
	if err != nil {
		return nil
	}
	open := []*os.File{root}
	defer func() { closeAll(open) }()
	var out []string
	check := func(f *os.File, name string) {
		st, err := statFile(f)
		if err != nil {
			return
		}
		other := int(st.Uid) != os.Geteuid() && st.Uid != 0
		if other || st.Mode&0o022 != 0 && st.Mode&unix.S_ISVTX == 0 {
			out = append(out, fmt.Sprintf("backup store %s: the directory %s belongs to uid %d with mode %o: others can rename or hide the backups in it (never read, change or delete them); make it the deployer's own (chown, chmod go-w)",
				l.Dir, Printable(name), st.Uid, st.Mode&0o7777))
		}
	}
	check(root, l.Dir)
	for i, name := range dirs {
		d, err := l.openDirAt(open[len(open)-1], name, strings.Join(dirs[:i+1], "/"), false)
		if err != nil {
			break
		}
		open = append(open, d)
		check(d, strings.Join(dirs[:i+1], "/"))
	}
	return out
}

// Delete removes keys, and the directories they leave empty up to the store's root.
func (l *Local) Delete(ctx context.Context, keys ...string) error {
	var objs []Object
	for _, k := range keys {
		objs = append(objs, Object{Key: k})
	}
	return l.deleteListed(ctx, objs)
}

// deleteListed removes objects where their listing found them: in a directory that is no longer
// the one listed at its name (renamed meanwhile), nothing is deleted and the error wraps
// errChanged; a file that is not the one listed is left. The directory is opened once for all
// its objects and every unlink goes through that handle: a rename after it changes nothing.
// Then the directories left empty are removed, up to the store's root.
func (l *Local) deleteListed(ctx context.Context, objs []Object) error {
	for i := 0; i < len(objs); {
		if err := checkKey(objs[i].Key); err != nil {
			return err
		}
		dirKey := path.Dir(objs[i].Key)
		j := i + 1
		for j < len(objs) && path.Dir(objs[j].Key) == dirKey && checkKey(objs[j].Key) == nil {
			j++
		}
		if err := l.deleteIn(objs[i:j]); err != nil {
			return err
		}
		i = j
	}
	return nil
}

// deleteIn deletes objects of one directory.
func (l *Local) deleteIn(objs []Object) error {
	dirs, _ := split(objs[0].Key)
	handles, err := l.walk(dirs, false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if errors.Is(err, errNotDir) && objs[0].listed != nil {
		return fmt.Errorf("%w: %w", err, errChanged) // it was a directory when it was listed
	}
	if err != nil {
		return err
	}
	defer closeAll(handles)
	dir := handles[len(handles)-1]
	if at := objs[0].listed; at != nil {
		if err := l.same(dir, at.dir, strings.Join(dirs, "/")); err != nil {
			return err
		}
	}
	for _, o := range objs {
		_, base := split(o.Key)
		st, err := statAt(dir, base)
		if errors.Is(err, unix.ENOENT) {
			continue
		}
		if err != nil {
			return fmt.Errorf("backup store %s: %s: %w", l.Dir, Printable(o.Key), err)
		}
		if o.listed != nil && idOf(st) != o.listed.file {
			return fmt.Errorf("backup store %s: %s is another file than the one listed: %w", l.Dir, Printable(o.Key), errChanged)
		}
		if isRegular(st) && st.Size > 4*shrinkStep {
			l.shrinkAt(dir, base, st)
		}
		if err := unix.Unlinkat(int(dir.Fd()), base, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("backup store %s: delete %s: %w", l.Dir, Printable(o.Key), err)
		}
	}
	// The directories left empty, innermost first; rmdir removes none that holds anything.
	for i := len(dirs); i > 0; i-- {
		parent, d := handles[i-1], handles[i]
		st, err := statFile(d)
		if err != nil {
			break
		}
		if at, err := statAt(parent, dirs[i-1]); err != nil || idOf(at) != idOf(st) {
			break
		}
		if unix.Unlinkat(int(parent.Fd()), dirs[i-1], unix.AT_REMOVEDIR) != nil {
			break
		}
	}
	return nil
}

// shrinkAt frees a large file of the deployer's in steps before it is removed (see shrink): only
// the very file it looked at (no link followed, the same inode, one name, its owner this
// process's user), so nothing else is ever truncated.
func (l *Local) shrinkAt(dir *os.File, name string, before *unix.Stat_t) {
	if int(before.Uid) != os.Geteuid() || before.Nlink != 1 {
		return
	}
	fd, err := unix.Openat(int(dir.Fd()), name, unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	st, err := statFile(f)
	if err != nil || !isRegular(st) || idOf(st) != idOf(before) || st.Nlink != 1 || int(st.Uid) != os.Geteuid() {
		return
	}
	shrink(f, st.Size)
}

// mtime is a file's modification time.
func mtime(st *unix.Stat_t) time.Time { return time.Unix(int64(st.Mtim.Sec), int64(st.Mtim.Nsec)) }
