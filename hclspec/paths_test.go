package hclspec

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The markers that must never show: the content of a file outside the configuration, of
// /etc/passwd, of the process environment.
const outsideContent = "OUTSIDE-CONTENT-7c1d"

var leakMarkers = []string{outsideContent, "root:x:0:0", "root:*:0:0", "ENV-MARKER-3f9a"}

// hostileTree is a configuration directory (cfg) beside a file outside it, holding every kind
// of path a configuration from a pull request could use to read elsewhere.
func hostileTree(t *testing.T) (root, cfg string) {
	t.Helper()
	t.Setenv("DEPLOYER_TEST_ENV_MARKER", "ENV-MARKER-3f9a") // for /proc/self/environ
	root = t.TempDir()
	cfg = filepath.Join(root, "cfg")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(root, "outside.txt"), []byte(outsideContent), 0o644))
	must(os.WriteFile(filepath.Join(root, "outside.hcl"), []byte("# "+outsideContent+"\nproject = \""+outsideContent+"\"\n"), 0o644))
	must(os.MkdirAll(filepath.Join(cfg, "sub"), 0o755))
	must(os.WriteFile(filepath.Join(cfg, "sub", "inner.txt"), []byte("inner"), 0o644))
	links := map[string]string{
		"link-passwd":  "/etc/passwd",
		"link-outside": "../outside.txt",
		"linkdir":      "/etc",
		"linkdir-rel":  "..",
		"abs-inside":   filepath.Join(cfg, "sub", "inner.txt"),
		"link-devzero": "/dev/zero",
		"link-environ": "/proc/self/environ",
		"dangling":     "/nonexistent/x",
		"loop1":        "loop2",
		"loop2":        "loop1",
		"sub/up-out":   "../../outside.txt",
		"rel-dangling": "../nonexistent/x",
		"out-and-back": "../cfg/sub/inner.txt",
		"link-fifo":    "fifo",
	}
	for name, target := range links {
		must(os.Symlink(target, filepath.Join(cfg, name)))
	}
	must(syscall.Mkfifo(filepath.Join(cfg, "fifo"), 0o644))
	ln, err := net.Listen("unix", filepath.Join(cfg, "sock"))
	must(err)
	t.Cleanup(func() { ln.Close() })
	// A device node needs privileges; without them the case is covered by /dev/zero through a
	// link, and said.
	if err := syscall.Mknod(filepath.Join(cfg, "devnull"), syscall.S_IFCHR|0o644, 1<<8|3); err != nil {
		t.Logf("no device node in the tree (%v): covered through link-devzero", err)
	}
	return root, cfg
}

// loadHostile loads cfg with main.hcl holding src, and returns the rendered diagnostics; it
// fails the test when loading succeeds, takes more than 5 s (a fifo read would block forever),
// or shows anything of what is outside.
func loadHostile(t *testing.T, cfg, src string, opts Options) string {
	t.Helper()
	if err := os.WriteFile(filepath.Join(cfg, "main.hcl"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if opts.Dir == "" && len(opts.Files) == 0 {
		opts.Dir = cfg
	}
	type result struct {
		res  *Result
		text string
		errs bool
	}
	done := make(chan result, 1)
	go func() {
		res, diags := Load(opts)
		done <- result{res, res.DiagnosticsText(diags), diags.HasErrors()}
	}()
	var r result
	select {
	case r = <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("loading hangs on:\n%s", src)
	}
	if !r.errs {
		t.Fatalf("loaded without an error:\n%s", src)
	}
	for _, m := range leakMarkers {
		if strings.Contains(r.text, m) {
			t.Errorf("the error shows %q:\n%s", m, r.text)
		}
	}
	return r.text
}

// file() reads only regular files inside the configuration's directory: every way out is
// refused with an error at the call (file:line:col) that says why, and none blocks.
func TestFileStaysInside(t *testing.T) {
	_, cfg := hostileTree(t)
	cases := []struct{ path, want string }{
		{"/etc/passwd", "is an absolute path"},
		{"/dev/zero", "is an absolute path"},
		{"/proc/self/environ", "is an absolute path"},
		{"/etc/../etc/passwd", "is an absolute path"},
		{"//etc/passwd", "is an absolute path"},
		{"../outside.txt", `leaves the configuration's directory`},
		{"./../outside.txt", `leaves the configuration's directory`},
		{"sub/../../outside.txt", `leaves the configuration's directory`},
		{"sub/../../../../../../../etc/passwd", `leaves the configuration's directory`},
		{"..", `leaves the configuration's directory`},
		{"link-passwd", `symbolic link with an absolute target ("link-passwd" -> "/etc/passwd")`},
		{"link-outside", "through a symbolic link"},
		{"linkdir/passwd", `absolute target ("linkdir" -> "/etc")`},
		{"linkdir-rel/outside.txt", "through a symbolic link"},
		{"sub/up-out", "through a symbolic link"},
		{"link-devzero", "through a symbolic link"},
		{"link-environ", "through a symbolic link"},
		{"abs-inside", "make the link relative"},
		{"dangling", `absolute target ("dangling" -> "/nonexistent/x")`}, // as a link to what exists: nothing says what is outside
		{"rel-dangling", `leads out of the configuration's directory`},
		{"out-and-back", `through a symbolic link ("out-and-back" -> "../cfg/sub/inner.txt")`},
		{"sub/../out-and-back", `through a symbolic link`},
		{"loop1", "goes through more than 40 symbolic links"},
		{"fifo", "is a named pipe, not a regular file"},
		{"link-fifo", "is a named pipe, not a regular file"},
		{"sock", "is a socket, not a regular file"},
		{"sub", "is a directory, not a regular file"},
		{".", "is a directory, not a regular file"},
		{"missing.txt", "does not exist"},
		{"", "the path is empty"},
		{`nul\u0000byte`, "holds a NUL character"},
	}
	if _, err := os.Lstat(filepath.Join(cfg, "devnull")); err == nil {
		cases = append(cases, struct{ path, want string }{"devnull", "is a character device, not a regular file"})
	}
	for _, c := range cases {
		t.Run(c.path, func(t *testing.T) {
			src := fmt.Sprintf("project = \"x\"\nlocals { a = file(%q) }\n", c.path)
			src = strings.ReplaceAll(src, `\\u0000`, `\u0000`)
			text := loadHostile(t, cfg, src, Options{})
			if !strings.Contains(text, c.want) || !strings.Contains(text, "main.hcl:2:") {
				t.Errorf("want an error at main.hcl:2 saying %q, got:\n%s", c.want, text)
			}
		})
	}
	t.Logf("%d paths tried", len(cases))
	// Inside, through a relative link, is read.
	os.WriteFile(filepath.Join(cfg, "main.hcl"), []byte("project = \"x\"\nservice \"a\" { image = file(\"sub/../sub/inner.txt\") }\n"), 0o644)
	os.Symlink("sub/inner.txt", filepath.Join(cfg, "rel-inside"))
	if p := load(t, Options{Dir: cfg}); p.Service("a").Image != "inner" {
		t.Errorf("image %q", p.Service("a").Image)
	}
}

// Every other path a configuration names (TLS material, a build context, its Dockerfile and
// .dockerignore) stays inside too, checked at the attribute.
func TestPathAttributesStayInside(t *testing.T) {
	_, cfg := hostileTree(t)
	tlsCase := func(attr, path string) string { // the attribute tried on line 5, the others valid
		src := fmt.Sprintf("project = \"x\"\nengine \"e\" {\n  host = \"tcp://127.0.0.1:2376\"\n  tls {\n    %s = %q\n", attr, path)
		for _, a := range []string{"ca", "cert", "key"} {
			if a != attr {
				src += fmt.Sprintf("    %s = \"sub/inner.txt\"\n", a)
			}
		}
		return src + "  }\n}\n"
	}
	buildCase := func(attr, path string) string {
		return fmt.Sprintf("project = \"x\"\nservice \"a\" {\n  image = \"a\"\n  build {\n    %s = %q\n  }\n}\n", attr, path)
	}
	cases := []struct{ name, src, at, want string }{
		{"tls ca absolute", tlsCase("ca", "/etc/ssl/certs/ca-certificates.crt"), "main.hcl:5:", "is an absolute path"},
		{"tls cert dotdot", tlsCase("cert", "../outside.txt"), "main.hcl:5:", "leaves the configuration's directory"},
		{"tls key link out", tlsCase("key", "link-outside"), "main.hcl:5:", "through a symbolic link"},
		{"tls key link dir", tlsCase("key", "linkdir/ssh/ssh_host_ed25519_key"), "main.hcl:5:", "through a symbolic link"},
		{"tls ca fifo", tlsCase("ca", "fifo"), "main.hcl:5:", "named pipe"},
		{"tls ca directory", tlsCase("ca", "sub"), "main.hcl:5:", "is a directory"},
		{"tls key environ", tlsCase("key", "link-environ"), "main.hcl:5:", "through a symbolic link"},
		{"tls key dev", tlsCase("key", "/dev/zero"), "main.hcl:5:", "is an absolute path"},
		{"context root", buildCase("context", "/"), "main.hcl:5:", "is an absolute path"},
		{"context dotdot", buildCase("context", ".."), "main.hcl:5:", "leaves the configuration's directory"},
		{"context link dir", buildCase("context", "linkdir"), "main.hcl:5:", "through a symbolic link"},
		{"context link up", buildCase("context", "linkdir-rel"), "main.hcl:5:", "through a symbolic link"},
		{"context a file", buildCase("context", "sub/inner.txt"), "main.hcl:5:", "not a directory"},
		{"dockerfile link out", buildCase("dockerfile", "link-passwd"), "main.hcl:5:", "through a symbolic link"},
		{"dockerfile fifo", buildCase("dockerfile", "fifo"), "main.hcl:5:", "named pipe"},
		{"dockerfile dir", buildCase("dockerfile", "sub"), "main.hcl:5:", "is a directory"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			text := loadHostile(t, cfg, c.src, Options{})
			if !strings.Contains(text, c.want) || !strings.Contains(text, c.at) || !strings.Contains(text, "Path outside the configuration") {
				t.Errorf("want an error at %s saying %q, got:\n%s", c.at, c.want, text)
			}
		})
	}
	// A .dockerignore the build would read, linked out of the context.
	t.Run("dockerignore link out", func(t *testing.T) {
		os.Symlink("/etc/passwd", filepath.Join(cfg, "sub", ".dockerignore"))
		defer os.Remove(filepath.Join(cfg, "sub", ".dockerignore"))
		text := loadHostile(t, cfg, buildCase("context", "sub"), Options{})
		if !strings.Contains(text, ".dockerignore") || !strings.Contains(text, "main.hcl:5:") {
			t.Errorf("got:\n%s", text)
		}
	})
	t.Logf("%d attributes tried", len(cases)+1)
	// Inside: the real path is kept for the executor to read; a file CI writes later is allowed.
	os.WriteFile(filepath.Join(cfg, "main.hcl"), []byte(tlsCase("key", "tls/key.pem")), 0o644)
	p := load(t, Options{Dir: cfg})
	if tls := p.Engines["e"].TLS; tls.CA != filepath.Join(cfg, "sub", "inner.txt") || tls.Key != filepath.Join(cfg, "tls", "key.pem") {
		t.Errorf("tls %+v", tls)
	}
}

// The configuration's own files are read through its directory too: a *.hcl or
// *.auto.vars.hcl linked out of it, a -f FILE or -var-file FILE that is a link out of it, and a
// -var-file outside reached through a link, are refused; a fifo never blocks.
func TestConfigFilesStayInside(t *testing.T) {
	root, cfg := hostileTree(t)
	valid := "project = \"x\"\nvariable \"v\" { default = \"d\" }\n"
	other := filepath.Join(root, "other")
	os.Mkdir(other, 0o755)
	os.Symlink("../outside.hcl", filepath.Join(other, "link.vars.hcl"))
	os.Symlink("../nonexistent.hcl", filepath.Join(other, "dangling.vars.hcl"))
	os.WriteFile(filepath.Join(root, "plain.vars.hcl"), []byte("v = \"from-outside\"\n"), 0o644)
	os.Symlink("../outside.hcl", filepath.Join(cfg, "link.hcl.vars"))
	syscall.Mkfifo(filepath.Join(root, "outside-fifo"), 0o644)
	cases := []struct {
		name  string
		setup func()
		opts  Options
		want  string
	}{
		{"a *.hcl linked to /etc/passwd", func() { os.Symlink("/etc/passwd", filepath.Join(cfg, "evil.hcl")) }, Options{}, "through a symbolic link"},
		{"a *.hcl linked out", func() { os.Symlink("../outside.hcl", filepath.Join(cfg, "evil.hcl")) }, Options{}, "through a symbolic link"},
		{"a *.hcl that is a fifo", func() { syscall.Mkfifo(filepath.Join(cfg, "evil.hcl"), 0o644) }, Options{}, "named pipe"},
		{"a *.hcl.json linked to environ", func() { os.Symlink("/proc/self/environ", filepath.Join(cfg, "evil.hcl.json")) }, Options{}, "through a symbolic link"},
		{"an auto vars file linked out", func() { os.Symlink("../outside.hcl", filepath.Join(cfg, "evil.auto.vars.hcl")) }, Options{}, "through a symbolic link"},
		{"an auto vars file linked to passwd", func() { os.Symlink("/etc/passwd", filepath.Join(cfg, "evil.auto.vars.hcl")) }, Options{}, "through a symbolic link"},
		{"-f a link out", func() { os.Symlink("../outside.hcl", filepath.Join(cfg, "evil.hcl.f")) }, Options{Files: []string{filepath.Join(cfg, "evil.hcl.f")}}, "through a symbolic link"},
		{"-var-file a link out", nil, Options{Vars: []VarArg{{File: filepath.Join(cfg, "link.hcl.vars")}}}, "through a symbolic link"},
		{"-var-file outside through a link", nil, Options{Vars: []VarArg{{File: filepath.Join(other, "link.vars.hcl")}}}, "is a symbolic link, or is reached through one"},
		{"-var-file outside through a dangling link", nil, Options{Vars: []VarArg{{File: filepath.Join(other, "dangling.vars.hcl")}}}, "is a symbolic link, or is reached through one"},
		{"-var-file a fifo inside", nil, Options{Vars: []VarArg{{File: filepath.Join(cfg, "fifo")}}}, "named pipe"},
		{"-var-file a fifo outside", nil, Options{Vars: []VarArg{{File: filepath.Join(root, "outside-fifo")}}}, "named pipe"},
		{"-var-file /dev/zero", nil, Options{Vars: []VarArg{{File: "/dev/zero"}}}, "not a regular file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, n := range []string{"evil.hcl", "evil.hcl.json", "evil.auto.vars.hcl", "evil.hcl.f"} {
				os.Remove(filepath.Join(cfg, n))
			}
			if c.setup != nil {
				c.setup()
			}
			text := loadHostile(t, cfg, valid, c.opts)
			if !strings.Contains(text, c.want) {
				t.Errorf("want %q, got:\n%s", c.want, text)
			}
		})
	}
	for _, n := range []string{"evil.hcl", "evil.hcl.json", "evil.auto.vars.hcl", "evil.hcl.f"} {
		os.Remove(filepath.Join(cfg, n))
	}
	t.Logf("%d files tried", len(cases))
	// The operator's own file outside the directory, with no link on its way, is read.
	p := load(t, Options{Dir: cfg, Vars: []VarArg{{File: filepath.Join(root, "plain.vars.hcl")}}})
	if p.Variables[0].Source != filepath.Join(root, "plain.vars.hcl") {
		t.Errorf("variables %+v", p.Variables[0])
	}
}

// fmt reads and writes its files through their directory too: a link out of it, a fifo or a
// device is refused (fmt -check runs on forks' pull requests and shows a file's syntax errors
// with its lines), and a file made a link since it was read is not written through.
func TestFormatSourceStaysInside(t *testing.T) {
	root, cfg := hostileTree(t)
	os.Symlink("../outside.hcl", filepath.Join(cfg, "evil.hcl"))
	syscall.Mkfifo(filepath.Join(cfg, "pipe.hcl"), 0o644)
	for _, name := range []string{"evil.hcl", "pipe.hcl", "link-passwd", "link-devzero", "sock"} {
		done := make(chan error, 1)
		go func() { _, err := ReadSource(filepath.Join(cfg, name)); done <- err }()
		select {
		case err := <-done:
			if err == nil || strings.Contains(err.Error(), outsideContent) {
				t.Errorf("%s: %v", name, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("reading %s hangs", name)
		}
	}
	ok := filepath.Join(cfg, "ok.hcl")
	os.WriteFile(ok, []byte("a=1\n"), 0o644)
	if b, err := ReadSource(ok); err != nil || string(b) != "a=1\n" {
		t.Fatalf("%q %v", b, err)
	}
	os.Remove(ok)
	os.Symlink("../outside.hcl", ok) // swapped for a link after the read
	if err := WriteSource(ok, []byte("a = 1\n")); err == nil {
		t.Error("written through a link out of the directory")
	}
	if b, _ := os.ReadFile(filepath.Join(root, "outside.hcl")); !strings.Contains(string(b), outsideContent) {
		t.Errorf("the file outside was rewritten: %q", b)
	}
}
