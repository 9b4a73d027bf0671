package executor

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"
)

// The proxy and restores run the deployer itself in a container built FROM scratch. A deployer
// built the usual way (`go install`, `go build`: cgo on) is dynamically linked; its image then
// carries what the binary needs to run, found from the binary itself: its ELF interpreter and
// the shared libraries it names, and theirs, at the paths it looks for them.

// elfMachines maps the engine's architecture to the ELF machine its binaries are built for.
var elfMachines = map[string]elf.Machine{
	"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64, "arm": elf.EM_ARM, "386": elf.EM_386,
	"ppc64le": elf.EM_PPC64, "s390x": elf.EM_S390, "riscv64": elf.EM_RISCV,
}

// selfImage is what goes into the helper image: the deployer at /deployer, and for a dynamic
// binary its interpreter and libraries at their own paths.
type selfImage struct {
	binary string
	files  map[string]string // path in the image -> file on this machine
}

// imageOfSelf checks that the binary runs on an engine of that OS and architecture and lists
// what its image needs.
func imageOfSelf(p, osName, arch string) (*selfImage, error) {
	if osName != "linux" {
		return nil, fmt.Errorf("the engine runs %s containers", osName)
	}
	f, err := elf.Open(p)
	if err != nil {
		return nil, fmt.Errorf("this deployer (%s) is not a Linux binary", p)
	}
	defer f.Close()
	if m, ok := elfMachines[arch]; !ok || f.Machine != m {
		return nil, fmt.Errorf("this deployer (%s) is built for %s, the engine runs %s", p, f.Machine, arch)
	}
	img := &selfImage{binary: p, files: map[string]string{}}
	interp := interpreter(f)
	if interp == "" {
		return img, nil // static
	}
	if _, err := os.Stat(interp); err != nil {
		return nil, fmt.Errorf("this deployer (%s) is dynamically linked, and its interpreter %s is not on this machine", p, interp)
	}
	img.files[interp] = interp
	find := libraryFinder(filepath.Dir(interp))
	todo := []*elf.File{f}
	seen := map[string]bool{}
	for len(todo) > 0 {
		cur := todo[0]
		todo = todo[1:]
		needed, err := cur.ImportedLibraries()
		if err != nil {
			return nil, fmt.Errorf("this deployer (%s): read its libraries: %v", p, err)
		}
		rpath := append(dynPaths(cur, elf.DT_RUNPATH), dynPaths(cur, elf.DT_RPATH)...)
		for _, name := range needed {
			if seen[name] {
				continue
			}
			seen[name] = true
			path := find(name, rpath, f.Machine)
			if path == "" {
				return nil, fmt.Errorf("this deployer (%s) needs the library %s, which is not found on this machine", p, name)
			}
			img.files[path] = path
			lib, err := elf.Open(path)
			if err != nil {
				return nil, fmt.Errorf("library %s: %v", path, err)
			}
			defer lib.Close()
			todo = append(todo, lib)
		}
	}
	return img, nil
}

func interpreter(f *elf.File) string {
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			b := make([]byte, prog.Filesz)
			if _, err := prog.ReadAt(b, 0); err != nil {
				return ""
			}
			return string(bytes.TrimRight(b, "\x00"))
		}
	}
	return ""
}

func dynPaths(f *elf.File, tag elf.DynTag) []string {
	vals, _ := f.DynString(tag)
	var out []string
	for _, v := range vals {
		out = append(out, filepath.SplitList(v)...)
	}
	return out
}

// libraryFinder resolves a library's name as the dynamic linker would on this machine: the
// binary's run paths, the linker's cache (ldconfig -p), then the usual directories.
func libraryFinder(interpDir string) func(name string, rpath []string, m elf.Machine) string {
	cache := map[string][]string{}
	if out, err := exec.Command("ldconfig", "-p").Output(); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			name, rest, ok := strings.Cut(strings.TrimSpace(line), " ")
			_, path, ok2 := strings.Cut(rest, "=> ")
			if ok && ok2 {
				cache[name] = append(cache[name], strings.TrimSpace(path))
			}
		}
	}
	dirs := []string{interpDir, "/lib64", "/usr/lib64", "/lib", "/usr/lib"}
	if multiarch, _ := filepath.Glob("/lib/*-linux-gnu*"); len(multiarch) > 0 {
		sort.Strings(multiarch)
		dirs = append(dirs, multiarch...)
		for _, d := range multiarch {
			dirs = append(dirs, "/usr"+d)
		}
	}
	fits := func(path string, m elf.Machine) bool {
		f, err := elf.Open(path)
		if err != nil {
			return false
		}
		defer f.Close()
		return f.Machine == m
	}
	return func(name string, rpath []string, m elf.Machine) string {
		var candidates []string
		for _, d := range rpath {
			candidates = append(candidates, filepath.Join(d, name))
		}
		candidates = append(candidates, cache[name]...)
		for _, d := range dirs {
			candidates = append(candidates, filepath.Join(d, name))
		}
		for _, c := range candidates {
			if fits(c, m) {
				return c
			}
		}
		return ""
	}
}

// runsOn reports whether a binary can run in the helper image on an engine of that OS and
// architecture.
func runsOn(p, osName, arch string) error {
	_, err := imageOfSelf(p, osName, arch)
	return err
}

// helpers run the deployer's helper image in one-off containers on the engine: snapshots,
// clones and copies of volumes, schema reads, file reads and writes in a volume. image is the
// helper image's ID, once found or built.
type helpers struct {
	rn    *run
	image string
}

// helperImage is the image the proxy and restores run in: docker.proxy_image when the
// configuration names one, else one built (once per binary) from the deployer's own binary,
// FROM scratch, when that binary can run on the engine.
func (hp *helpers) helperImage(ctx context.Context) (string, error) {
	rn := hp.rn
	if hp.image != "" {
		return hp.image, nil
	}
	if ref := rn.Project.Docker.ProxyImage; ref != "" {
		if id, err := rn.Runtime.ImageID(ctx, ref); err == nil {
			return id, nil
		}
		id, err := rn.Runtime.PullImage(ctx, ref, rn.registries(), nil)
		if err != nil {
			return "", fmt.Errorf("docker.proxy_image %q: %w", ref, err)
		}
		return id, nil
	}
	osName, arch, err := rn.Runtime.Platform(ctx)
	if err != nil {
		return "", err
	}
	why := errors.New("the deployer does not know where its own binary is")
	var self *selfImage
	if rn.SelfBinary != "" {
		self, why = imageOfSelf(rn.SelfBinary, osName, arch)
	}
	if why != nil {
		alt := "(deploys with cutover = \"restart\" do without it on a local engine; restores always need it)"
		if rn.remote() {
			alt = "(on a remote engine every deploy needs it: the health checks run from the proxy, on the engine's host)"
		}
		return "", fmt.Errorf("the proxy and restores run the deployer itself in a container, and this one cannot run on the engine: %v.\n"+
			"Build a deployer for the engine (in a checkout of its source) and name its image in the configuration:\n"+
			"  GOOS=%s GOARCH=%s CGO_ENABLED=0 go build -o deployer ./cmd/deployer\n"+
			"  printf 'FROM scratch\\nCOPY deployer /deployer\\nENTRYPOINT [\"/deployer\"]\\n' | docker build -t deployer-proxy:%s -f - .\n"+
			"  docker { proxy_image = \"deployer-proxy:%s\" }   # in the configuration (push it to your registry for a remote engine)\n"+
			"%s", why, osName, arch, hp.versionTag(), hp.versionTag(), alt)
	}
	id, err := hp.loadSelfImage(ctx, self, arch)
	if err == nil {
		hp.image = id
	}
	return id, err
}

// The helper image is loaded, not built: its archive (docker save's format) is a function of
// the files alone (one layer holding them in name order, owned by root and dated 1970, and a
// configuration without a date), so the digest of its layer is known here before the engine is
// asked. An image is used as the helper only when it is made of exactly that layer and that
// configuration: its tag (deployer-helper:<digest>) can be moved by anyone who can use the
// engine, and the proxy and restores run it with the host's network and the services' data.

// helperLayer is the helper image's one layer, as a list of entries.
type helperLayer struct {
	files  []helperFile
	diffID string // "sha256:<hex>" of the layer's tar
	size   int64
}

type helperFile struct {
	path string // in the image, without the leading slash
	src  string // on this machine; "" for a directory
}

// epoch dates everything in the helper image: its digest depends on its content alone, so the
// same binary gives the same image from any machine.
var epoch = time.Unix(0, 0).UTC()

// newHelperLayer lists the layer's entries (each directory before what it holds) and digests it.
func newHelperLayer(self *selfImage) (*helperLayer, error) {
	srcs := map[string]string{"deployer": self.binary}
	for p, src := range self.files {
		srcs[strings.TrimPrefix(filepath.ToSlash(p), "/")] = src
	}
	dirs := map[string]bool{}
	for p := range srcs {
		for d := path.Dir(p); d != "." && d != "/"; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	l := &helperLayer{}
	for d := range dirs {
		l.files = append(l.files, helperFile{path: d})
	}
	for p, src := range srcs {
		l.files = append(l.files, helperFile{path: p, src: src})
	}
	sort.Slice(l.files, func(i, j int) bool { return l.files[i].path < l.files[j].path })
	h := sha256.New()
	cw := &countingWriter{w: h}
	if err := l.write(cw); err != nil {
		return nil, err
	}
	l.diffID, l.size = "sha256:"+hex.EncodeToString(h.Sum(nil)), cw.n
	return l, nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// write writes the layer's tar.
func (l *helperLayer) write(w io.Writer) error {
	tw := tar.NewWriter(w)
	for _, f := range l.files {
		if f.src == "" {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: f.path + "/", Mode: 0o755, ModTime: epoch, Format: tar.FormatUSTAR}); err != nil {
				return err
			}
			continue
		}
		file, err := os.Open(f.src)
		if err != nil {
			return err
		}
		info, err := file.Stat()
		if err == nil {
			err = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.path, Mode: 0o755, Size: info.Size(), ModTime: epoch, Format: tar.FormatUSTAR})
		}
		if err == nil {
			_, err = io.Copy(tw, file)
		}
		file.Close()
		if err != nil {
			return fmt.Errorf("the helper image's file %s: %w", f.src, err)
		}
	}
	return tw.Close()
}

// helperConfig is the helper image's configuration, byte for byte.
func helperConfig(diffID, arch string) []byte {
	b, _ := json.Marshal(map[string]any{
		"architecture": arch, "os": "linux", "created": epoch.Format(time.RFC3339),
		"config":  map[string]any{"Entrypoint": helperEntrypoint, "Labels": helperLabels},
		"rootfs":  map[string]any{"type": "layers", "diff_ids": []string{diffID}},
		"history": []map[string]string{{"created": epoch.Format(time.RFC3339), "created_by": "the deployer's own binary"}},
	})
	return b
}

var (
	helperEntrypoint = []string{"/deployer"}
	helperLabels     = map[string]string{LabelImage: "helper"}
)

// isHelper reports whether an image is exactly the helper image of that layer: that one layer,
// and nothing in its configuration but the deployer's entrypoint and label.
func isHelper(c *ImageContent, diffID, arch string) bool {
	return slices.Equal(c.Layers, []string{diffID}) && c.OS == "linux" && c.Arch == arch && slices.Equal(c.Entrypoint, helperEntrypoint) &&
		len(c.Cmd) == 0 && len(c.Env) == 0 && c.User == "" && c.WorkingDir == "" && len(c.Volumes) == 0 && !c.Other && maps.Equal(c.Labels, helperLabels)
}

// loadSelfImage makes sure the engine has the helper image of this deployer (loading it when
// the engine has none that is exactly it) and returns its ID.
func (hp *helpers) loadSelfImage(ctx context.Context, self *selfImage, arch string) (string, error) {
	rn := hp.rn
	layer, err := newHelperLayer(self)
	if err != nil {
		return "", err
	}
	tag := "deployer-helper:" + strings.TrimPrefix(layer.diffID, "sha256:")[:12]
	if c, err := rn.Runtime.ImageContent(ctx, tag); err == nil && isHelper(c, layer.diffID, arch) {
		return c.ID, nil
	} else if err != nil && !errors.Is(err, ErrNotFound) {
		return "", err
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(layer.archive(pw, arch, tag)) }()
	err = rn.Runtime.LoadImage(ctx, pr)
	pr.Close()
	if err != nil {
		return "", fmt.Errorf("load the helper image %s: %w", tag, err)
	}
	c, err := rn.Runtime.ImageContent(ctx, tag)
	if err != nil {
		return "", fmt.Errorf("the helper image %s: %w", tag, err)
	}
	if !isHelper(c, layer.diffID, arch) {
		return "", fmt.Errorf("the tag %s was moved to another image right after the deployer loaded its helper image there: something on the engine moves it; run again, and find out what", tag)
	}
	return c.ID, nil
}

// archive writes the helper image as docker save does.
func (l *helperLayer) archive(w io.Writer, arch, tag string) error {
	cfg := helperConfig(l.diffID, arch)
	sum := sha256.Sum256(cfg)
	cfgName := hex.EncodeToString(sum[:]) + ".json"
	layerName := strings.TrimPrefix(l.diffID, "sha256:") + "/layer.tar"
	manifest, _ := json.Marshal([]map[string]any{{"Config": cfgName, "RepoTags": []string{tag}, "Layers": []string{layerName}}})
	tw := tar.NewWriter(w)
	put := func(name string, b []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(b)), ModTime: epoch}); err != nil {
			return err
		}
		_, err := tw.Write(b)
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: path.Dir(layerName) + "/", Mode: 0o755, ModTime: epoch}); err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: layerName, Mode: 0o644, Size: l.size, ModTime: epoch}); err != nil {
		return err
	}
	cw := &countingWriter{w: tw}
	if err := l.write(cw); err != nil {
		return err
	}
	if cw.n != l.size {
		return fmt.Errorf("the helper image's files changed while it was loaded (%d bytes, then %d): run again", l.size, cw.n)
	}
	if err := put(cfgName, cfg); err != nil {
		return err
	}
	if err := put("manifest.json", manifest); err != nil {
		return err
	}
	return tw.Close()
}

// versionTag is the deployer's version as an image tag.
func (hp *helpers) versionTag() string {
	rn := hp.rn
	v := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_' {
			return r
		}
		return '-'
	}, rn.Version)
	if v == "" {
		return "latest"
	}
	return v
}
