package hclspec

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/hashicorp/hcl/v2"

	"github.com/deployer-dev/deployer/config"
)

// A configuration may come from an untrusted pull request, and CI runs validate and plan on it:
// whatever it names, the deployer reads only files inside the configuration's directory. Paths
// are opened through an os.Root of the directory, which refuses absolute paths, ".." that leaves
// it and symbolic links that lead out of it (or to an absolute path) one element at a time, so
// there is no window between a check and the open; and only regular files are read: a fifo, a
// device, a socket or a directory is refused without being read (a fifo is opened without
// blocking, then refused).

// confined is a configuration's directory, through which its files are read.
type confined struct {
	dir  string // as named
	abs  string // absolute, as named
	real string // absolute, symbolic links resolved
	root *os.Root
}

func openConfined(dir string) (*confined, error) {
	c := &confined{dir: dir}
	var err error
	if c.abs, err = filepath.Abs(dir); err != nil {
		return nil, err
	}
	if c.real, err = filepath.EvalSymlinks(c.abs); err != nil {
		return nil, err
	}
	if c.root, err = os.OpenRoot(c.real); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *confined) close() {
	if c != nil && c.root != nil {
		c.root.Close()
	}
}

// pathError is why a path is refused; its text says what to do.
type pathError struct{ msg string }

func (e *pathError) Error() string { return e.msg }

func refuse(format string, args ...any) error { return &pathError{fmt.Sprintf(format, args...)} }

// inside returns p relative to dir when p (both absolute and clean) is dir or below it.
func inside(dir, p string) (string, bool) {
	rel, err := filepath.Rel(dir, p)
	if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) || filepath.IsAbs(rel) {
		return "", false
	}
	return rel, true
}

// clean checks a path written in the configuration: relative to the directory and staying in it
// by name. It returns the path cleaned.
func (c *confined) clean(p string) (string, error) {
	switch {
	case p == "":
		return "", refuse("the path is empty")
	case filepath.IsAbs(p) || strings.HasPrefix(p, "/") || strings.HasPrefix(p, `\`) || filepath.VolumeName(p) != "":
		return "", refuse("%q is an absolute path; paths in a configuration are relative to its directory (%s) and stay inside it: put the file in the directory", p, c.dir)
	case strings.ContainsRune(p, 0):
		return "", refuse("%q holds a NUL character", p)
	}
	rel := filepath.Clean(p)
	if rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return "", refuse("%q leaves the configuration's directory (%s) through \"..\"; paths in a configuration stay inside it: put the file in the directory", p, c.dir)
	}
	return rel, nil
}

// stat follows rel inside the directory, refusing what leads out of it.
func (c *confined) stat(p, rel string) (fs.FileInfo, error) {
	st, err := c.root.Stat(rel)
	if err == nil {
		return st, nil
	}
	if errors.Is(err, fs.ErrNotExist) {
		return nil, refuse("%q does not exist in %s", p, c.dir)
	}
	return nil, c.why(p, rel, err)
}

// why explains an error of the root: a symbolic link out of the directory, or one with an
// absolute target (which the root does not follow even when it points inside).
func (c *confined) why(p, rel string, err error) error {
	if real, e := filepath.EvalSymlinks(filepath.Join(c.real, rel)); e == nil {
		if _, ok := inside(c.real, real); !ok {
			return refuse("%q leads out of the configuration's directory (%s) through a symbolic link (to %s); paths in a configuration stay inside it", p, c.dir, real)
		}
		return refuse("%q is reached through a symbolic link with an absolute target; the deployer follows only relative links that stay inside the configuration's directory (%s): make the link relative", p, c.dir)
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return refuse("%q cannot be read: %v", p, err)
}

// kind names what a non-regular file is.
func kind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a device"
	}
	return "not a regular file"
}

// read reads the regular file p (relative to the directory) of at most max bytes.
func (c *confined) read(p string, max int64) ([]byte, error) {
	rel, err := c.clean(p)
	if err != nil {
		return nil, err
	}
	return c.readRel(p, rel, max)
}

func (c *confined) readRel(p, rel string, max int64) ([]byte, error) {
	st, err := c.stat(p, rel)
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, refuse("%q is %s, not a regular file", p, kind(st.Mode()))
	}
	f, err := c.root.OpenFile(rel, os.O_RDONLY|openNonblock, 0)
	if err != nil {
		return nil, c.why(p, rel, err)
	}
	defer f.Close()
	// What was opened is what is read: a file swapped for a fifo or a device since the stat
	// is refused here.
	if st, err = f.Stat(); err != nil || !st.Mode().IsRegular() {
		return nil, refuse("%q is not a regular file", p)
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, refuse("%q cannot be read: %v", p, err)
	}
	if int64(len(b)) > max {
		return nil, refuse("%q is larger than %d MiB", p, max>>20)
	}
	return b, nil
}

// expect is what a path attribute must name.
type expect int

const (
	wantFile expect = iota
	wantDir
)

// check checks a path attribute that the executor reads later (TLS material, a build context):
// inside the directory, and, when it exists, a regular file or a directory as asked. It returns
// the path to use: its real path when it exists (so that what is read later is what was
// checked), else the path joined to the directory (a file written later, e.g. by CI before plan).
func (c *confined) check(p string, w expect) (string, error) {
	rel, err := c.clean(p)
	if err != nil {
		return "", err
	}
	st, err := c.root.Stat(rel)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// Resolved inside the directory up to a missing name: a file made later (CI writes
		// TLS material before plan).
		return filepath.Join(c.dir, rel), nil
	case err != nil:
		return "", c.why(p, rel, err)
	case w == wantFile && !st.Mode().IsRegular():
		return "", refuse("%q is %s, not a regular file", p, kind(st.Mode()))
	case w == wantDir && !st.IsDir():
		return "", refuse("%q is %s, not a directory", p, kind(st.Mode()))
	}
	real, err := filepath.EvalSymlinks(filepath.Join(c.real, rel))
	if err != nil {
		return "", c.why(p, rel, err)
	}
	return real, nil
}

// named resolves a file named on the command line (-f FILE, -var-file FILE). A file inside the
// configuration's directory is read through it, like every file the configuration names; a
// file outside is the operator's own (a secrets file CI wrote elsewhere) and is read as named,
// unless a symbolic link leads to it: a pull request can turn a file the workflow names into a
// link, so a linked file must lead inside the directory. It returns the path relative to the
// directory and true when the file is read through it.
func (c *confined) named(path string) (string, bool, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", false, err
	}
	if rel, ok := inside(c.abs, abs); ok {
		return rel, true, nil
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil || real == abs {
		return "", false, nil // missing (the read says so), or no link on the way
	}
	if rel, ok := inside(c.real, real); ok {
		return rel, true, nil
	}
	return "", false, refuse("%s leads through a symbolic link to %s, outside the configuration's directory (%s); name the file itself", path, real, c.dir)
}

// checkPaths checks every path attribute of a decoded project that the deployer reads later:
// each engine's TLS files, and each build's context, Dockerfile and .dockerignore. Paths that
// are sensitive (refused already) or unknown (validate) are left alone. A local backup store's
// directory is not among them: it is where apply writes backups, and it may be anywhere (a
// mounted disk); validate and plan never read it.
func (l *loader) checkPaths(p *config.Project) hcl.Diagnostics {
	var diags hcl.Diagnostics
	bad := func(r config.Range, what string, err error) {
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Path outside the configuration",
			Detail:  fmt.Sprintf("%s: %v.", what, err),
			Subject: hclRange(r).Ptr()})
	}
	skip := func(path string) bool { return p.Sensitive[path] || p.Unknown[path] }
	for _, name := range slices.Sorted(maps.Keys(p.Engines)) {
		e := p.Engines[name]
		if e.TLS == nil {
			continue
		}
		for _, f := range []struct {
			key string
			dst *string
		}{{"tls.ca", &e.TLS.CA}, {"tls.cert", &e.TLS.Cert}, {"tls.key", &e.TLS.Key}} {
			if *f.dst == "" || skip("engine."+name+"."+f.key) {
				continue
			}
			real, err := l.fs.check(*f.dst, wantFile)
			if err != nil {
				bad(e.Ranges[f.key], fmt.Sprintf("engine %q: %s", name, f.key), err)
				continue
			}
			*f.dst = real
		}
	}
	for _, s := range p.Services {
		b := s.Build
		if b == nil {
			continue
		}
		at := func(key string) config.Range {
			if r, ok := s.Ranges[key]; ok {
				return r
			}
			return s.DeclRange
		}
		prefix := "service." + s.Name + "."
		if skip(prefix + config.AttrBuildContext) {
			continue
		}
		if _, err := l.fs.check(b.Context, wantDir); err != nil {
			bad(at(config.AttrBuildContext), fmt.Sprintf("service %q: build.context", s.Name), err)
			continue
		}
		// A Dockerfile written outside its context is config's error (Validate), said better there.
		if df := filepath.Clean(b.Dockerfile); !skip(prefix+config.AttrBuildDockerfile) && !filepath.IsAbs(df) && df != ".." && !strings.HasPrefix(df, ".."+string(filepath.Separator)) {
			if _, err := l.fs.check(filepath.Join(b.Context, b.Dockerfile), wantFile); err != nil {
				bad(at(config.AttrBuildDockerfile), fmt.Sprintf("service %q: build.dockerfile", s.Name), err)
			}
		}
		if _, err := l.fs.check(filepath.Join(b.Context, ".dockerignore"), wantFile); err != nil {
			bad(at(config.AttrBuildContext), fmt.Sprintf("service %q: the build context's .dockerignore", s.Name), err)
		}
	}
	return diags
}
