// Package selfimage makes the image of the deployer's own binary that the proxy and the helper
// containers run: the binary (and for a dynamic one its interpreter and libraries) in one
// reproducible layer, and the checks that it runs on an engine.
package selfimage

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
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

	"github.com/deployer-dev/deployer/executor/engine"
)

// elfMachines maps the engine's architecture to the ELF machine its binaries are built for.
var elfMachines = map[string]elf.Machine{
	"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64, "arm": elf.EM_ARM, "386": elf.EM_386,
	"ppc64le": elf.EM_PPC64, "s390x": elf.EM_S390, "riscv64": elf.EM_RISCV,
}

// Binary is what goes into the helper image: the deployer at /deployer, and for a dynamic
// binary its interpreter and libraries at their own paths.
type Binary struct {
	binary string
	Files  map[string]string // path in the image -> file on this machine
}

// Of checks that the binary runs on an engine of that OS and architecture and lists
// what its image needs.
func Of(p, osName, arch string) (*Binary, error) {
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
	img := &Binary{binary: p, Files: map[string]string{}}
	interp := interpreter(f)
	if interp == "" {
		return img, nil // static
	}
	if _, err := os.Stat(interp); err != nil {
		return nil, fmt.Errorf("this deployer (%s) is dynamically linked, and its interpreter %s is not on this machine", p, interp)
	}
	img.Files[interp] = interp
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
			img.Files[path] = path
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

// RunsOn reports whether a binary can run in the helper image on an engine of that OS and
// architecture.
func RunsOn(p, osName, arch string) error {
	_, err := Of(p, osName, arch)
	return err
}

// Layer is the helper image's one layer, as a list of entries.
type Layer struct {
	files  []helperFile
	DiffID string // "sha256:<hex>" of the layer's tar
	size   int64
}

type helperFile struct {
	path string // in the image, without the leading slash
	src  string // on this machine; "" for a directory
}

// epoch dates everything in the helper image: its digest depends on its content alone, so the
// same binary gives the same image from any machine.
var epoch = time.Unix(0, 0).UTC()

// NewLayer lists the layer's entries (each directory before what it holds) and digests it.
func NewLayer(self *Binary) (*Layer, error) {
	srcs := map[string]string{"deployer": self.binary}
	for p, src := range self.Files {
		srcs[strings.TrimPrefix(filepath.ToSlash(p), "/")] = src
	}
	dirs := map[string]bool{}
	for p := range srcs {
		for d := path.Dir(p); d != "." && d != "/"; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	l := &Layer{}
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
	l.DiffID, l.size = "sha256:"+hex.EncodeToString(h.Sum(nil)), cw.n
	return l, nil
}

type countingWriter struct {
	w io.Writer
	n int64
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
	helperLabels     = map[string]string{engine.LabelImage: "helper"}
)

// IsHelper reports whether an image is exactly the helper image of that layer: that one layer,
// and nothing in its configuration but the deployer's entrypoint and label.
func IsHelper(c *engine.ImageContent, diffID, arch string) bool {
	return slices.Equal(c.Layers, []string{diffID}) && c.OS == "linux" && c.Arch == arch && slices.Equal(c.Entrypoint, helperEntrypoint) &&
		len(c.Cmd) == 0 && len(c.Env) == 0 && c.User == "" && c.WorkingDir == "" && len(c.Volumes) == 0 && !c.Other && maps.Equal(c.Labels, helperLabels)
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// write writes the layer's tar.
func (l *Layer) write(w io.Writer) error {
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

// archive writes the helper image as docker save does.
func (l *Layer) Archive(w io.Writer, arch, tag string) error {
	cfg := helperConfig(l.DiffID, arch)
	sum := sha256.Sum256(cfg)
	cfgName := hex.EncodeToString(sum[:]) + ".json"
	layerName := strings.TrimPrefix(l.DiffID, "sha256:") + "/layer.tar"
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
