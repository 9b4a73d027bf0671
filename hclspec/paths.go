package hclspec

import (
	"bytes"
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
	"github.com/zclconf/go-cty/cty"

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
// absolute target (which the root does not follow even when it points inside). It looks only
// inside the directory (resolve): what is outside, and whether it exists, is never described.
func (c *confined) why(p, rel string, err error) error {
	if _, e := c.resolve(p, rel); e != nil {
		var pe *pathError
		if errors.As(e, &pe) {
			return e
		}
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return refuse("%q cannot be read: %v", p, err)
}

// maxLinks bounds the symbolic links followed to resolve one path, as the kernel does.
const maxLinks = 40

// resolve follows rel (clean, relative) inside the directory one element at a time, reading
// symbolic links through the root and never looking outside: it returns the path rel leads to,
// relative to the directory (up to a missing name, followed by the rest as written), or why it
// leads out: a link with an absolute target, or a ".." that leaves, through a link or not.
func (c *confined) resolve(p, rel string) (string, error) {
	todo := strings.Split(filepath.ToSlash(rel), "/")
	var done []string
	via, links := "", 0
	for len(todo) > 0 {
		part := todo[0]
		todo = todo[1:]
		switch part {
		case "", ".":
			continue
		case "..":
			if len(done) == 0 {
				if via != "" {
					return "", refuse("%q leads out of the configuration's directory (%s) through a symbolic link (%s); paths in a configuration stay inside it", p, c.dir, via)
				}
				return "", refuse("%q leaves the configuration's directory (%s) through \"..\"; paths in a configuration stay inside it: put the file in the directory", p, c.dir)
			}
			done = done[:len(done)-1]
			continue
		}
		cur := filepath.Join(append(append([]string{}, done...), part)...)
		st, err := c.root.Lstat(cur)
		if errors.Is(err, fs.ErrNotExist) {
			return filepath.Join(append(append(done, part), todo...)...), nil
		}
		if err != nil {
			return "", err
		}
		if st.Mode()&fs.ModeSymlink == 0 {
			done = append(done, part)
			continue
		}
		if links++; links > maxLinks {
			return "", refuse("%q goes through more than %d symbolic links", p, maxLinks)
		}
		target, err := c.root.Readlink(cur)
		if err != nil {
			return "", err
		}
		if filepath.IsAbs(target) || strings.HasPrefix(target, "/") || filepath.VolumeName(target) != "" {
			return "", refuse("%q is reached through a symbolic link with an absolute target (%q -> %q); the deployer follows only relative links that stay inside the configuration's directory (%s): make the link relative", p, cur, target, c.dir)
		}
		via = fmt.Sprintf("%q -> %q", cur, target)
		todo = append(strings.Split(filepath.ToSlash(target), "/"), todo...)
	}
	return filepath.Join(done...), nil
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

// readResolved is read that also returns the path read, its links resolved, relative to the
// directory.
func (c *confined) readResolved(p string, max int64) ([]byte, string, error) {
	rel, err := c.clean(p)
	if err != nil {
		return nil, "", err
	}
	b, err := c.readRel(p, rel, max)
	if err != nil {
		return nil, "", err
	}
	real, err := c.resolve(p, rel)
	if err != nil {
		return nil, "", err
	}
	return b, real, nil
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
	real, err := c.resolve(p, rel)
	if err != nil {
		return "", c.why(p, rel, err)
	}
	return filepath.Join(c.real, real), nil
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
	if err == nil && real == abs {
		return "", false, nil // no link on the way
	}
	if err == nil {
		if rel, ok := inside(c.real, real); ok {
			return rel, true, nil
		}
	} else if st, e := os.Lstat(abs); e != nil || st.Mode()&fs.ModeSymlink == 0 {
		return "", false, nil // missing (the read says so)
	}
	// Where the link leads is not said: whether something exists there is not the
	// configuration's business.
	return "", false, refuse("%s is a symbolic link, or is reached through one, that does not lead inside the configuration's directory (%s); name the file itself", displayName(path), c.dir)
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

// credentialFile reports whether a file read with file() holds credentials, so that its content
// is sensitive: a private key (PEM, OpenSSH, PuTTY), or a file named as credentials are (a key or
// keystore, an ssh identity, .netrc, .pgpass, .npmrc, .pypirc, .git-credentials, .env,
// .dockercfg, a cloud CLI's credentials). real is its path inside the directory, links resolved.
func credentialFile(real string, content []byte) bool {
	if bytes.Contains(content, []byte("PRIVATE KEY")) || bytes.Contains(content, []byte("PuTTY-User-Key-File")) {
		return true
	}
	base := strings.ToLower(filepath.Base(real))
	switch filepath.Ext(base) {
	case ".pem", ".key", ".p8", ".p12", ".pfx", ".jks", ".keystore", ".ppk", ".kdbx", ".gpg", ".asc":
		return true
	}
	switch base {
	case ".netrc", "_netrc", ".pgpass", ".npmrc", ".pypirc", ".git-credentials", ".dockercfg", "credentials", ".env":
		return true
	}
	if strings.HasPrefix(base, ".env.") || strings.HasPrefix(base, "id_") && !strings.HasSuffix(base, ".pub") {
		return true
	}
	return false
}

// fileRead is a file read with file(), for checkCredentialReads.
type fileRead struct {
	path string    // as written
	real string    // inside the directory, links resolved
	at   hcl.Range // the expression that read it
}

// staticTLSPaths are the engines' TLS files written as constants, resolved inside the directory:
// file() refuses them before reading (checkCredentialReads catches those computed).
func (l *loader) staticTLSPaths(engines []*hcl.Block) map[string]string {
	out := map[string]string{}
	for _, b := range engines {
		c, _ := b.Body.Content(engineSchema)
		for _, t := range c.Blocks {
			if t.Type != "tls" {
				continue
			}
			a, _ := t.Body.Content(engineTLSSchema)
			for _, key := range []string{"ca", "cert", "key"} {
				attr := a.Attributes[key]
				if attr == nil {
					continue
				}
				v, d := attr.Expr.Value(nil)
				if d.HasErrors() || !v.IsKnown() || v.IsNull() || v.Type() != cty.String {
					continue
				}
				if rel, err := l.fs.clean(v.AsString()); err == nil {
					if real, err := l.fs.resolve(v.AsString(), rel); err == nil {
						out[real] = fmt.Sprintf("engine %q tls.%s", b.Labels[0], key)
					}
				}
			}
		}
	}
	return out
}

// checkCredentialReads refuses a file() that reads a file the configuration names as an
// engine's TLS material (a key CI writes into the directory before plan). Its content may be
// in the values and errors of everything evaluated since, so loading reports only this error.
func (l *loader) checkCredentialReads(p *config.Project) hcl.Diagnostics {
	tls := map[string]string{}
	for _, name := range slices.Sorted(maps.Keys(p.Engines)) {
		e := p.Engines[name]
		if e.TLS == nil {
			continue
		}
		for key, path := range map[string]string{"tls.ca": e.TLS.CA, "tls.cert": e.TLS.Cert, "tls.key": e.TLS.Key} {
			if path == "" {
				continue
			}
			if rel, ok := inside(l.fs.real, path); ok { // checkPaths made it the real path
				tls[rel] = fmt.Sprintf("engine %q %s", name, key)
			} else if rel, err := l.fs.clean(path); err == nil {
				if real, err := l.fs.resolve(path, rel); err == nil {
					tls[real] = fmt.Sprintf("engine %q %s", name, key)
				}
			}
		}
	}
	for _, r := range l.fileReads {
		if what, ok := tls[r.real]; ok {
			return hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "file() reads TLS material",
				Detail:  fmt.Sprintf("file(%q) reads the file the configuration names as %s: an engine's TLS material is read by the deployer alone, never into the configuration. Remove the call.", r.path, what),
				Subject: r.at.Ptr(), Extra: safeDetail{}}}
		}
	}
	return nil
}
