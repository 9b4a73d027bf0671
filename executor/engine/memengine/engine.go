// Package memengine is a container engine in memory, behind the deployer's engine port
// (package engine), for tests that run apply's whole sequence in seconds without Docker.
//
// Its containers are Go programs (Program) that serve real HTTP on their own loopback addresses
// (127.a.b.c, one /24 per engine), its published ports real TCP forwarders on 127.0.0.1, its
// volumes directories, and the image of the deployer's proxy an in-process proxy.Server behind
// its real control socket. Nothing listens beyond the loopback interface. A test can make an
// operation fail (Fail), and freeze the engine at a kill point (Freeze) as a crashed deployer
// leaves a real one: what runs keeps running, nothing more is asked of it.
package memengine

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/deployer-dev/deployer/executor/engine"
)

// ErrFrozen is what every call returns while the engine is frozen.
var ErrFrozen = errors.New("memengine: frozen (the deployer crashed here)")

// Engine is one engine in memory. Its zero value is not usable: call New.
type Engine struct {
	dir    string // volumes and control sockets
	prefix [2]byte
	// HostIP is the loopback address this engine's published ports and proxy bind
	// (127.0.0.1 when empty): several engines on one machine, each a host of its own.
	HostIP string

	mu         sync.Mutex
	frozen     bool
	images     map[string]*image // by ID
	refs       map[string]string // reference -> image ID
	pullable   map[string]Program
	buildable  map[string]Program
	containers map[string]*container        // by ID
	volumes    map[string]string            // name -> directory
	volLabels  map[string]map[string]string // labels of the volumes made with CreateVolume
	keys       map[string][]byte
	networks   map[string]map[string]string // name -> labels
	netRanges  map[string]string            // name -> its fixed range
	nextID     int
	nextAddr   int
	faults     []*fault
	execs      ExecCounts
}

// ExecCounts counts the execs into containers: one-shot ones, sessions opened, and sessions
// whose command still runs.
type ExecCounts struct{ OneShot, Sessions, Open int }

// Execs returns the counts so far.
func (e *Engine) Execs() ExecCounts {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.execs
}

type image struct {
	id, ref string
	prog    Program
	env     map[string]string
	labels  map[string]string
}

// New makes an engine whose files live in dir (a test's temporary directory).
func New(dir string) (*Engine, error) {
	a, err := rand.Int(rand.Reader, big.NewInt(50))
	if err != nil {
		return nil, err
	}
	b, err := rand.Int(rand.Reader, big.NewInt(250))
	if err != nil {
		return nil, err
	}
	e := &Engine{dir: dir, prefix: [2]byte{byte(200 + a.Int64()), byte(1 + b.Int64())},
		images: map[string]*image{}, refs: map[string]string{}, pullable: map[string]Program{}, buildable: map[string]Program{},
		containers: map[string]*container{}, volumes: map[string]string{}, volLabels: map[string]map[string]string{}, keys: map[string][]byte{}, networks: map[string]map[string]string{}, netRanges: map[string]string{}, nextAddr: 2}
	e.add(&image{ref: "deployer-lock", prog: func(context.Context, *Process) int { return 0 }})
	return e, nil
}

// Image makes an image available on the engine under ref, running prog, with env as the
// environment the image sets. It returns the image's ID.
func (e *Engine) Image(ref string, prog Program, env map[string]string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.add(&image{ref: ref, prog: prog, env: env})
}

// Pullable makes ref pullable from a registry: PullImage makes it an image running prog.
func (e *Engine) Pullable(ref string, prog Program) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.pullable[ref] = prog
}

// Buildable says what an image built with the tag runs: BuildImage makes one per context.
func (e *Engine) Buildable(tag string, prog Program) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.buildable[tag] = prog
}

func (e *Engine) hostIP() string {
	if e.HostIP != "" {
		return e.HostIP
	}
	return "127.0.0.1"
}

// add registers an image; called with e.mu held (or before the engine is shared).
func (e *Engine) add(img *image) string {
	e.nextID++
	img.id = fmt.Sprintf("sha256:%064x", e.nextID)
	e.images[img.id] = img
	if img.ref != "" {
		e.refs[img.ref] = img.id
	}
	return img.id
}

// Freeze makes every call fail with ErrFrozen, as if the deployer had been killed: what runs
// keeps running. Thaw ends it, for the next deployer.
func (e *Engine) Freeze() { e.mu.Lock(); e.frozen = true; e.mu.Unlock() }

// Thaw ends a freeze.
func (e *Engine) Thaw() { e.mu.Lock(); e.frozen = false; e.mu.Unlock() }

// Fail makes the next times calls of op ("create", "start", "stop", "remove", "rename",
// "exec", "pull", "build", "inspect") on a container whose name matches fail with err. Each
// request written to an exec session is an "exec" call too: a fault ends the session.
func (e *Engine) Fail(op, name string, times int, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.faults = append(e.faults, &fault{op: op, name: name, times: times, err: err})
}

type fault struct {
	op, name string
	times    int
	err      error
}

// check is the start of every call: the engine must not be frozen, and a planned fault fires.
// Called with e.mu held.
func (e *Engine) check(op, name string) error {
	if e.frozen {
		return ErrFrozen
	}
	for _, f := range e.faults {
		if f.op == op && f.times > 0 && (f.name == "" || f.name == name) {
			f.times--
			return f.err
		}
	}
	return nil
}

// Close stops every container.
func (e *Engine) Close() {
	e.mu.Lock()
	list := make([]*container, 0, len(e.containers))
	for _, c := range e.containers {
		list = append(list, c)
	}
	e.mu.Unlock()
	for _, c := range list {
		c.kill()
	}
}

func (e *Engine) Host() string { return "unix://" + filepath.Join(e.dir, "memengine.sock") }

func (e *Engine) Ping(context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.check("ping", "")
}

func (e *Engine) Platform(context.Context) (string, string, error) {
	return "linux", runtime.GOARCH, nil
}

// Containers lists the containers labelled with the project.
func (e *Engine) Containers(_ context.Context, project string) ([]engine.Container, error) {
	all, err := e.list()
	if err != nil {
		return nil, err
	}
	var out []engine.Container
	for _, c := range all {
		if c.Labels[engine.LabelProject] == project {
			out = append(out, c)
		}
	}
	return out, nil
}

// AllContainers lists every container.
func (e *Engine) AllContainers(context.Context) ([]engine.Container, error) { return e.list() }

func (e *Engine) list() ([]engine.Container, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.check("list", ""); err != nil {
		return nil, err
	}
	var out []engine.Container
	for _, c := range e.containers {
		out = append(out, c.summary())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// ImageID resolves a reference or an ID.
func (e *Engine) ImageID(_ context.Context, ref string) (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.check("image", ref); err != nil {
		return "", err
	}
	if img := e.image(ref); img != nil {
		return img.id, nil
	}
	return "", engine.ErrNotFound
}

// image finds an image by ID or reference; called with e.mu held.
func (e *Engine) image(ref string) *image {
	if img := e.images[ref]; img != nil {
		return img
	}
	if id, ok := e.refs[ref]; ok {
		return e.images[id]
	}
	return nil
}

func (e *Engine) ImageEnv(_ context.Context, ref string) (map[string]string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	img := e.image(ref)
	if img == nil {
		return nil, engine.ErrNotFound
	}
	return img.env, nil
}

// ReadProjectKey is the project's key, nil before the first ProjectKey.
func (e *Engine) ReadProjectKey(_ context.Context, project string) ([]byte, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.check("key", project); err != nil {
		return nil, err
	}
	return e.keys[project], nil
}

// ProjectKey keeps one random key per project.
func (e *Engine) ProjectKey(_ context.Context, project string) ([]byte, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.check("key", project); err != nil {
		return nil, err
	}
	if k := e.keys[project]; k != nil {
		return k, nil
	}
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return nil, err
	}
	e.keys[project] = k
	return k, nil
}

func (e *Engine) PullImage(_ context.Context, ref string, _ map[string]engine.RegistryAuth, _ io.Writer) (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.check("pull", ref); err != nil {
		return "", err
	}
	prog, ok := e.pullable[ref]
	if !ok {
		if img := e.image(ref); img != nil {
			return img.id, nil
		}
		return "", fmt.Errorf("pull %s: manifest unknown: the registry has no such image", ref)
	}
	if img := e.image(ref); img != nil && img.prog != nil {
		return img.id, nil
	}
	return e.add(&image{ref: ref, prog: prog}), nil
}

// BuildImage makes an image of the context (one ID per context hash) running what Buildable
// said for the tag.
func (e *Engine) BuildImage(_ context.Context, o engine.BuildOptions) (string, error) {
	hash, err := engine.ContextHash(o.Dir, o.Dockerfile)
	if err != nil {
		return "", err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.check("build", o.Tag); err != nil {
		return "", err
	}
	prog, ok := e.buildable[o.Tag]
	if !ok {
		return "", fmt.Errorf("build %s: memengine: no program for this tag (Buildable)", o.Tag)
	}
	for _, img := range e.images {
		if img.labels[engine.LabelContextHash] == hash && img.ref == o.Tag {
			return img.id, nil
		}
	}
	labels := map[string]string{engine.LabelContextHash: hash}
	for k, v := range o.Labels {
		labels[k] = v
	}
	return e.add(&image{ref: o.Tag, prog: prog, labels: labels}), nil
}

func (e *Engine) EnsureLockImage(context.Context) (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.check("lock-image", ""); err != nil {
		return "", err
	}
	return e.refs["deployer-lock"], nil
}

// RemoveImage removes an image no container uses.
func (e *Engine) RemoveImage(_ context.Context, id string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.check("remove-image", id); err != nil {
		return err
	}
	img := e.image(id)
	if img == nil {
		return nil
	}
	for _, c := range e.containers {
		if c.image.id == img.id {
			return fmt.Errorf("remove image %s: conflict: it is being used by container %s", id, c.name)
		}
	}
	delete(e.images, img.id)
	for ref, rid := range e.refs {
		if rid == img.id {
			delete(e.refs, ref)
		}
	}
	return nil
}

// HasImage reports whether the engine still has an image (for tests of pruning).
func (e *Engine) HasImage(id string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.images[id] != nil
}

// EnsureNetwork makes a network; its fixed range is the upper half of a /24 of its own (the
// first network's is the engine's), as the engine gives each network a subnet of its own. One
// of that name made with other labels is ErrNameTaken.
func (e *Engine) EnsureNetwork(_ context.Context, name string, labels map[string]string) (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.check("network", name); err != nil {
		return "", err
	}
	if have, ok := e.networks[name]; ok {
		for k, v := range labels {
			if have[k] != v {
				return "", fmt.Errorf("%w: a network named %s exists that was made for something else", engine.ErrNameTaken, name)
			}
		}
	} else {
		e.networks[name] = copyMap(labels)
		e.netRanges[name] = fmt.Sprintf("127.%d.%d.128/25", e.prefix[0], byte(int(e.prefix[1])+len(e.netRanges)))
	}
	return e.netRanges[name], nil
}

// holder is the running container other than c that holds addr on network, as the engine's
// address allocator sees it; called with e.mu held.
func (e *Engine) holder(network, addr string, c *container) *container {
	if network == "" {
		return nil
	}
	for _, o := range e.containers {
		if o != c && o.spec.Network == network && o.addr == addr && (o.state == "running" || o.state == "paused") {
			return o
		}
	}
	return nil
}

// NetworkAddresses lists the addresses of the running containers on a network.
func (e *Engine) NetworkAddresses(_ context.Context, name string) (map[string]string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.check("network", name); err != nil {
		return nil, err
	}
	if _, ok := e.networks[name]; !ok {
		return nil, fmt.Errorf("network %s: %w", name, engine.ErrNotFound)
	}
	out := map[string]string{}
	for _, c := range e.containers {
		if c.spec.Network == name && (c.state == "running" || c.state == "paused") {
			out[c.addr] = c.name
		}
	}
	return out, nil
}

// ImageContent reports an image: an in-memory image has no layers; its labels and
// environment are what it was made with.
func (e *Engine) ImageContent(_ context.Context, ref string) (*engine.ImageContent, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	img := e.image(ref)
	if img == nil {
		return nil, fmt.Errorf("image %s: %w", ref, engine.ErrNotFound)
	}
	out := &engine.ImageContent{ID: img.id, OS: "linux", Arch: runtime.GOARCH, Labels: copyMap(img.labels)}
	for k, v := range img.env {
		out.Env = append(out.Env, k+"="+v)
	}
	sort.Strings(out.Env)
	return out, nil
}

// NetworkLabels are a network's labels.
func (e *Engine) NetworkLabels(_ context.Context, name string) (map[string]string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.check("network", name); err != nil {
		return nil, err
	}
	labels, ok := e.networks[name]
	if !ok {
		return nil, fmt.Errorf("network %s: %w", name, engine.ErrNotFound)
	}
	return copyMap(labels), nil
}

// InspectVolume reports a volume and its labels.
func (e *Engine) InspectVolume(_ context.Context, name string) (*engine.Volume, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.check("volumes", name); err != nil {
		return nil, err
	}
	if _, ok := e.volumes[name]; !ok {
		return nil, fmt.Errorf("volume %s: %w", name, engine.ErrNotFound)
	}
	return &engine.Volume{Name: name, Labels: copyMap(e.volLabels[name])}, nil
}

// ImageLabels are an image's labels (a built one's: those of the build).
func (e *Engine) ImageLabels(_ context.Context, ref string) (map[string]string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	img := e.image(ref)
	if img == nil {
		return nil, fmt.Errorf("image %s: %w", ref, engine.ErrNotFound)
	}
	return copyMap(img.labels), nil
}

// Networks lists the networks made with the project's label.
func (e *Engine) Networks(_ context.Context, project string) ([]string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.check("networks", project); err != nil {
		return nil, err
	}
	var out []string
	for name, labels := range e.networks {
		if labels[engine.LabelProject] == project {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out, nil
}

// RemoveNetwork removes a network no running container is connected to, as the engine does.
func (e *Engine) RemoveNetwork(_ context.Context, name string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.check("network", name); err != nil {
		return err
	}
	for _, c := range e.containers {
		if c.spec.Network == name && (c.state == "running" || c.state == "paused") {
			return fmt.Errorf("remove network %s: error while removing network: network %s has active endpoints (container %s)", name, name, c.name)
		}
	}
	delete(e.networks, name)
	return nil
}

// RemoveProjectKey forgets the project's key.
func (e *Engine) RemoveProjectKey(_ context.Context, project string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.check("key", project); err != nil {
		return err
	}
	delete(e.keys, project)
	return nil
}

// RemoveVolume removes a volume and its files; one a container mounts stays, as the engine
// refuses it.
func (e *Engine) RemoveVolume(_ context.Context, name string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.check("volume", name); err != nil {
		return err
	}
	for _, c := range e.containers {
		for _, v := range c.spec.Volumes {
			if v.Name == name {
				return fmt.Errorf("remove volume %s: volume is in use - [%s]", name, c.id)
			}
		}
	}
	if dir, ok := e.volumes[name]; ok {
		delete(e.volumes, name)
		delete(e.volLabels, name)
		return os.RemoveAll(dir)
	}
	return nil
}

// CreateVolume makes a labelled volume; an existing one is kept as it is.
func (e *Engine) CreateVolume(_ context.Context, name string, labels map[string]string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.check("volume", name); err != nil {
		return err
	}
	if _, ok := e.volumes[name]; ok {
		for k, want := range labels {
			if e.volLabels[name][k] != want {
				return fmt.Errorf("%w: a volume named %s exists that the deployer did not make for this", engine.ErrNameTaken, name)
			}
		}
		return nil
	}
	if _, err := e.volume(name); err != nil {
		return err
	}
	e.volLabels[name] = copyMap(labels)
	return nil
}

// Volumes lists the volumes made with the project's label.
func (e *Engine) Volumes(_ context.Context, project string) ([]engine.Volume, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.check("volumes", project); err != nil {
		return nil, err
	}
	var out []engine.Volume
	for name, labels := range e.volLabels {
		if labels[engine.LabelProject] == project {
			out = append(out, engine.Volume{Name: name, Labels: copyMap(labels)})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// volume returns a volume's directory, making it; called with e.mu held.
func (e *Engine) volume(name string) (string, error) {
	if dir, ok := e.volumes[name]; ok {
		return dir, nil
	}
	dir := filepath.Join(e.dir, "volumes", name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	e.volumes[name] = dir
	return dir, nil
}

// HasVolume reports whether the engine has a volume (for tests of what is removed).
func (e *Engine) HasVolume(name string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	_, ok := e.volumes[name]
	return ok
}

// VolumeDir is where a volume's files are (for tests that look at the data).
func (e *Engine) VolumeDir(name string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	dir, _ := e.volume(name)
	return dir
}

// address gives a container without a fixed one an address of the lower half of the /24,
// or fails when every one is taken; called with e.mu held.
func (e *Engine) address() (string, error) {
	for range 126 {
		addr := fmt.Sprintf("127.%d.%d.%d", e.prefix[0], e.prefix[1], e.nextAddr)
		e.nextAddr++
		if e.nextAddr > 127 {
			e.nextAddr = 2
		}
		taken := false
		for _, c := range e.containers {
			taken = taken || c.addr == addr
		}
		if !taken {
			return addr, nil
		}
	}
	return "", errors.New("memengine: every address of the engine's network is taken")
}

// find finds a container by ID, short ID or name; called with e.mu held.
func (e *Engine) find(id string) *container {
	if c := e.containers[id]; c != nil {
		return c
	}
	for _, c := range e.containers {
		if c.name == id || strings.HasPrefix(c.id, id) && len(id) >= 12 {
			return c
		}
	}
	return nil
}

// wait is how long a stop waits at most when the call's context has no deadline.
const stopGrace = 10 * time.Second

// saved holds the images SaveImage handed out, by token: the archive of an in-memory image is
// its token, which LoadImage of any engine of this process turns back into the image.
var saved sync.Map

// SaveImage streams an image's archive: here, a token for it.
func (e *Engine) SaveImage(_ context.Context, ref string) (io.ReadCloser, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.check("save-image", ref); err != nil {
		return nil, err
	}
	img := e.image(ref)
	if img == nil {
		return nil, fmt.Errorf("save image %s: %w", ref, engine.ErrNotFound)
	}
	cp := *img
	cp.ref = ref
	if ref == img.id {
		cp.ref = img.ref
	}
	token := fmt.Sprintf("memengine-image %p", &cp)
	saved.Store(token, &cp)
	return io.NopCloser(strings.NewReader(token)), nil
}

// LoadImage loads an archive SaveImage made, keeping the image's ID and tag.
func (e *Engine) LoadImage(_ context.Context, archive io.Reader) error {
	raw, err := io.ReadAll(archive)
	if err != nil {
		return err
	}
	v, ok := saved.Load(string(raw))
	if !ok {
		return fmt.Errorf("load image: not an archive of an in-memory engine")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.check("load-image", ""); err != nil {
		return err
	}
	cp := *v.(*image)
	e.images[cp.id] = &cp
	if cp.ref != "" {
		e.refs[cp.ref] = cp.id
	}
	return nil
}
