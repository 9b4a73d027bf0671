package engine

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

// ContextFile is one entry of a build context, as the engine would receive it.
type ContextFile struct {
	Rel  string // slash-separated, relative to the context
	Path string // on disk
	Info fs.FileInfo
	Link string // symlink target
}

// WalkContext visits, in lexical order, the files of a build context that the engine would be
// sent: everything except what .dockerignore excludes (the Dockerfile and .dockerignore are always
// sent, as the engine needs them).
func WalkContext(dir, dockerfile string, visit func(ContextFile) error) error {
	var pm *patternmatcher.PatternMatcher
	if f, err := os.Open(filepath.Join(dir, ".dockerignore")); err == nil {
		patterns, err := ignorefile.ReadAll(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("%q: %w", filepath.Join(dir, ".dockerignore"), err)
		}
		if pm, err = patternmatcher.New(patterns); err != nil {
			return fmt.Errorf("%q: %w", filepath.Join(dir, ".dockerignore"), err)
		}
	}
	always := map[string]bool{filepath.ToSlash(filepath.Clean(dockerfile)): true, ".dockerignore": true}
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		if pm != nil && !always[rel] {
			skip, err := pm.MatchesOrParentMatches(rel)
			if err != nil {
				return err
			}
			if skip {
				if d.IsDir() && !pm.Exclusions() {
					return filepath.SkipDir
				}
				return nil
			}
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		cf := ContextFile{Rel: rel, Path: path, Info: info}
		if info.Mode()&fs.ModeSymlink != 0 {
			if cf.Link, err = os.Readlink(path); err != nil {
				return err
			}
		}
		return visit(cf)
	})
}

// ContextHash is a content hash of a build context: names, modes, symlink targets and bytes of
// every file sent to the engine. Timestamps are left out, so an untouched checkout hashes the same
// in every CI run.
func ContextHash(dir, dockerfile string) (string, error) {
	if _, err := os.Stat(filepath.Join(dir, dockerfile)); err != nil {
		return "", fmt.Errorf("build context %q: dockerfile %q: %w", dir, dockerfile, unwrapPath(err))
	}
	h := sha256.New()
	err := WalkContext(dir, dockerfile, func(f ContextFile) error {
		mode := f.Info.Mode()
		fmt.Fprintf(h, "%s\x00%o\x00%s\x00", f.Rel, mode&(fs.ModeType|0o111), f.Link)
		if !mode.IsRegular() {
			return nil
		}
		file, err := os.Open(f.Path)
		if err != nil {
			return err
		}
		defer file.Close()
		_, err = io.Copy(h, file)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("build context %q: %w", dir, unwrapPath(err))
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// unwrapPath names the file of a path error quoted: a build context is a pull request's
// checkout, whose file names may hold new lines and escape sequences.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%q: %w", pe.Path, pe.Err)
	}
	return err
}
