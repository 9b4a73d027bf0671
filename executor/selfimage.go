package executor

import (
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
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

// helperImage is the image the proxy and restores run in: docker.proxy_image when the
// configuration names one, else one built (once per binary) from the deployer's own binary,
// FROM scratch, when that binary can run on the engine.
func (rn *run) helperImage(ctx context.Context) (string, error) {
	if rn.helper != "" {
		return rn.helper, nil
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
			"%s", why, osName, arch, rn.versionTag(), rn.versionTag(), alt)
	}
	id, err := rn.buildSelfImage(ctx, self)
	if err == nil {
		rn.helper = id
	}
	return id, err
}

// buildSelfImage builds (once per binary and libraries: the tag is named after them) the image
// of the deployer FROM scratch.
func (rn *run) buildSelfImage(ctx context.Context, self *selfImage) (string, error) {
	df := "FROM scratch\nCOPY rootfs/ /\nENTRYPOINT [\"/deployer\"]\n"
	h := sha256.New()
	h.Write([]byte(df))
	paths := sortedKeys(self.files)
	contents := map[string][]byte{}
	for _, p := range append([]string{""}, paths...) {
		src := self.binary
		if p != "" {
			src = self.files[p]
		}
		b, err := os.ReadFile(src)
		if err != nil {
			return "", err
		}
		contents[p] = b
		fmt.Fprintf(h, "%s %d\n", p, len(b))
		h.Write(b)
	}
	tag := "deployer-helper:" + hex.EncodeToString(h.Sum(nil))[:12]
	if id, err := rn.Runtime.ImageID(ctx, tag); err == nil {
		return id, nil
	}
	dir, err := os.MkdirTemp(rn.TempDir, "deployer-helper-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	for p, b := range contents {
		dst := filepath.Join(dir, "rootfs", "deployer")
		if p != "" {
			dst = filepath.Join(dir, "rootfs", p)
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return "", err
		}
		if err := os.WriteFile(dst, b, 0o755); err != nil {
			return "", err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(df), 0o644); err != nil {
		return "", err
	}
	return rn.Runtime.BuildImage(ctx, BuildOptions{Dir: dir, Dockerfile: "Dockerfile", Tag: tag, Labels: map[string]string{"deployer.image": "helper"}})
}

// versionTag is the deployer's version as an image tag.
func (rn *run) versionTag() string {
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
