package backup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
)

// CloneVolume copies the volume mounted at src into the empty directory dst, for a migration's
// dry-run (issue 11): each database in dbs (paths relative to the volume) from an online
// snapshot taken as the database's owner (through runAs, as backups take theirs), and every
// other file as it is, with its mode, owner and times (symbolic links as links). A database's
// -wal, -shm and -journal are never copied: the snapshot holds what they did. src is only read,
// and memory stays bounded whatever the sizes. It returns each database's snapshot.
func CloneVolume(ctx context.Context, src, dst string, dbs []string, runAs func(uid, gid int, src, dst string) (*DBSnapshot, error)) ([]DBSnapshot, error) {
	isDB, skip := map[string]bool{}, map[string]bool{} // isDB: those not cloned yet
	for _, p := range dbs {
		p = path.Clean(strings.TrimPrefix(p, "/"))
		isDB[p] = true
		for _, s := range sidecars {
			skip[p+s] = true
		}
	}
	var snaps []DBSnapshot
	var dirs []EntryInfo // their times are set last, once nothing more is written in them
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel := "."
		if p != src {
			rel = filepath.ToSlash(strings.TrimPrefix(p, src+string(filepath.Separator)))
		}
		info, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) && !isDB[rel] {
			return nil // gone since the directory was read: a database's -wal or -shm, removed when its snapshot closed it
		}
		if err != nil {
			return err
		}
		e := entryInfo(rel, info)
		to := filepath.Join(dst, filepath.FromSlash(rel))
		switch {
		case d.IsDir():
			if err := os.MkdirAll(to, 0o700); err != nil {
				return err
			}
			dirs = append(dirs, e)
			return own(to, e, info.Mode())
		case isDB[rel] && info.Mode().IsRegular():
			// The snapshot is written by the database's owner, who may not be allowed to create
			// files in its directory: the file is made for them first.
			f, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return err
			}
			f.Close()
			if err := os.Lchown(to, e.UID, e.GID); err != nil {
				return err
			}
			got, err := runAs(e.UID, e.GID, p, to)
			if err != nil {
				return fmt.Errorf("snapshot %s: %v", rel, err)
			}
			snap := *got
			snap.EntryInfo, snap.File = e, rel
			snaps = append(snaps, snap)
			delete(isDB, rel)
			return own(to, e, info.Mode())
		case skip[rel]:
			return nil
		case info.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if err := os.Symlink(target, to); err != nil {
				return err
			}
			return os.Lchown(to, e.UID, e.GID)
		case info.Mode().IsRegular():
			if err := copyFile(p, to); err != nil {
				return err
			}
			return own(to, e, info.Mode())
		}
		return nil // sockets, pipes, devices: nothing a migration reads
	})
	if err != nil {
		return nil, fmt.Errorf("clone %s: %w", src, err)
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		to := filepath.Join(dst, filepath.FromSlash(dirs[i].Path))
		os.Chtimes(to, dirs[i].ModTime, dirs[i].ModTime)
	}
	for p := range isDB {
		return nil, fmt.Errorf("clone %s: the database %s is not in the volume", src, p)
	}
	return snaps, nil
}

// own gives a copied entry its original owner, mode (setuid and the like included) and time.
func own(to string, e EntryInfo, mode fs.FileMode) error {
	if err := os.Lchown(to, e.UID, e.GID); err != nil {
		return err
	}
	if err := os.Chmod(to, mode&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); err != nil {
		return err
	}
	return os.Chtimes(to, e.ModTime, e.ModTime)
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
