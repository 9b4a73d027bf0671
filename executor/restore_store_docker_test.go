package executor_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor"
	"github.com/deployer-dev/deployer/executor/backup"
	"github.com/deployer-dev/deployer/executor/plan"
)

// Restores against a store that changes under them (someone who can write to it overwrites an
// archive after the verify, or the safety backup's archive once it is written), and against a
// disk that fills, or an engine that breaks, half-way.

// stepsRun lists the steps of the given kinds (or names) that started, in order.
func (r *rig) stepsRun(names ...string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, e := range r.events {
		if e.Type != executor.EventStep || e.Phase != "start" {
			continue
		}
		for _, n := range names {
			if e.Step == n || strings.HasPrefix(e.Step, n+".") {
				out = append(out, e.Step)
			}
		}
	}
	return out
}

// forget drops the events recorded so far.
func (r *rig) forget() {
	r.mu.Lock()
	r.events = nil
	r.mu.Unlock()
}

// hooked is r's applier for p, running hook on each event after the rig records it.
func (r *rig) hooked(p *config.Project, hook func(e executor.Event)) *executor.Applier {
	a := r.applier(p)
	a.SelfBinary = staticDeployer(r.t)
	record := a.Events
	a.Events = func(e executor.Event) { record(e); hook(e) }
	return a
}

// putModes writes files with the modes given (setuid ones among them) into a container's
// directory through the engine.
func (r *rig) putModes(id, dir string, files map[string]int64) {
	r.t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, mode := range files {
		tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(len(name))})
		tw.Write([]byte(name))
	}
	tw.Close()
	if err := r.eng.CopyTo(context.Background(), id, dir, &buf); err != nil {
		r.t.Fatal(err)
	}
}

// modes is the mode of every regular file under dir in the container, but those the app
// writes at start.
func (r *rig) modes(id, dir string) map[string]int64 {
	r.t.Helper()
	rc, err := r.eng.CopyFrom(context.Background(), id, dir)
	if err != nil {
		r.t.Fatal(err)
	}
	defer rc.Close()
	out := map[string]int64{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err != nil {
			return out
		}
		if h.Typeflag == tar.TypeReg && !strings.HasSuffix(h.Name, "history") && !strings.Contains(h.Name, "started-") { // as dataFiles
			out[h.Name] = h.Mode & 0o7777
		}
	}
}

// newestBackupDir is the directory of the newest backup in a local store.
func newestBackupDir(t *testing.T, store *config.Store, project string) string {
	t.Helper()
	dir := filepath.Join(store.Directory, backup.Dir(project, "app"))
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) == 0 {
		t.Fatalf("no backup in %s: %v", dir, err)
	}
	return filepath.Join(dir, ents[len(ents)-1].Name())
}

// garble overwrites every archive of a backup's directory with other bytes of the same size, as
// someone who can write to the store would: what was verified or written is no longer there.
func garble(t *testing.T, dir string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	n := 0
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "volume-") {
			p := filepath.Join(dir, e.Name())
			st, _ := os.Stat(p)
			if err := os.WriteFile(p, bytes.Repeat([]byte{'A'}, int(st.Size())), 0o600); err != nil {
				t.Fatal(err)
			}
			n++
		}
	}
	if n == 0 {
		t.Fatalf("no archive in %s", dir)
	}
}

// A restore reads the archives its verify downloaded and checked, never the store again: the
// backup's archive overwritten in the store once the restore is prepared, and again once the
// safety backup is written (where the attack of the review struck, after the live release was
// stopped), changes nothing: the volume holds the verified files and the release serves.
func TestRestoreReadsWhatItVerified(t *testing.T) {
	r := newRig(t)
	store := localStore(t)
	m := r.deployWithBackup(store, noDB, map[string][]byte{"a.txt": []byte("the verified data")})
	want := r.dataFiles(r.liveID())
	r.putFiles(r.liveID(), "/data", map[string][]byte{"a.txt": []byte("the current data"), "b.txt": []byte("only now")})
	p := r.configWithStore("v2", store, noDB)
	backupDir := storeDir(store, r.project, m)
	a := r.hooked(p, func(e executor.Event) {
		if e.Type == executor.EventStep && e.Step == string(plan.StepBackup) && e.Phase == "end" {
			garble(t, backupDir)
		}
	})
	ctx := context.Background()
	rp, err := a.PrepareRestore(ctx, "app", m.ID, executor.RestoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	garble(t, backupDir)
	res, err := a.Restore(ctx, "app", rp)
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	if !res.Started {
		t.Error("the release was not started again")
	}
	if got := r.dataFiles(r.liveID()); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("restored %v, want %v", got, want)
	}
	if got := r.get("/"); got != "version=v2" {
		t.Errorf("serving %q", got)
	}
}

// cutCopy is the engine, whose next copy into a container (once armed) breaks off half-way
// through the archive, as an engine that goes away does.
type cutCopy struct {
	executor.Runtime
	armed atomic.Bool
}

func (c *cutCopy) CopyTo(ctx context.Context, id, dir string, r io.Reader) error {
	if c.armed.CompareAndSwap(true, false) {
		r = io.MultiReader(io.LimitReader(r, 64<<10), errReader{errors.New("the engine went away")})
	}
	return c.Runtime.CopyTo(ctx, id, dir, r)
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// A restore that breaks off half-way through a volume it emptied puts the volume back from the
// safety backup's copy kept on this machine, as the engine gave it (a setuid file keeps its
// bit), even though someone overwrote the safety backup's archive in the store meanwhile, and
// starts the release on it.
func TestRestoreFailsHalfWay(t *testing.T) {
	r := newRig(t)
	store := localStore(t)
	m := r.deployWithBackup(store, noDB, smallFiles(1500))
	r.putFiles(r.liveID(), "/data", map[string][]byte{"keep.txt": []byte("the data before the restore")})
	r.putModes(r.liveID(), "/data", map[string]int64{"tool": 0o4755})
	before, modes := r.dataFiles(r.liveID()), r.modes(r.liveID(), "/data")
	if modes["data/tool"] != 0o4755 {
		t.Fatalf("the setuid file is %o", modes["data/tool"])
	}
	p := r.configWithStore("v2", store, noDB)
	cut := &cutCopy{}
	a := r.hooked(p, func(e executor.Event) {
		if e.Type != executor.EventStep {
			return
		}
		switch {
		case e.Step == string(plan.StepBackup) && e.Phase == "end":
			garble(t, newestBackupDir(t, store, r.project)) // the safety backup's archive
		case strings.HasPrefix(e.Step, string(plan.StepRestore)+".") && e.Phase == "start":
			cut.armed.Store(true)
		}
	})
	cut.Runtime = a.Runtime
	a.Runtime = cut
	ctx := context.Background()
	rp, err := a.PrepareRestore(ctx, "app", m.ID, executor.RestoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := a.Restore(ctx, "app", rp)
	if err == nil || !strings.Contains(err.Error(), "restore of volume "+r.project+"-data failed") ||
		!strings.Contains(err.Error(), "put back from the safety backup") || !strings.Contains(err.Error(), "was started on it") {
		t.Fatalf("restore: %v", err)
	}
	if res.Safety == nil {
		t.Fatal("no safety backup")
	}
	if got := r.dataFiles(r.liveID()); fmt.Sprint(got) != fmt.Sprint(before) {
		t.Errorf("after the put-back: %d files, want %d", len(got), len(before))
	}
	if got := r.modes(r.liveID(), "/data"); fmt.Sprint(got) != fmt.Sprint(modes) {
		t.Errorf("modes after the put-back: %v, want %v", got, modes)
	}
	if got := r.get("/"); got != "version=v2" {
		t.Errorf("serving %q", got)
	}
}

// smallFiles is n files of 100 bytes.
func smallFiles(n int) map[string][]byte {
	files := map[string][]byte{}
	for i := 0; i < n; i++ {
		files[fmt.Sprintf("f/%04d.txt", i)] = []byte(strings.Repeat("y", 100))
	}
	return files
}

// fill takes the free space of the filesystem holding dir, but for keep bytes, in a file of
// its own there.
func fill(t *testing.T, dir string, keep int64) {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if n := int64(st.Bavail)*int64(st.Bsize) - keep; n > 0 {
		if err := unix.Fallocate(int(f.Fd()), 0, 0, n); err != nil {
			t.Fatal(err)
		}
	}
}

// When the volume's filesystem fills between the restore's check and the emptying of the
// volume (here, the moment the restore of the volume starts), the helper refuses to empty it:
// nothing of it was removed, so nothing is put back (what the release wrote until it stopped
// is kept, and a setuid file keeps its bit), and the release is started again on its data.
func TestRestoreDiskFillsAfterTheCheck(t *testing.T) {
	r := newRig(t)
	store := localStore(t)
	m := r.deployWithBackup(store, noDB, map[string][]byte{"big.bin": bytes.Repeat([]byte("z"), 2<<20)})
	small, p, root := r.onTmpfs(store, "v3", "size=32m")
	r.putFiles(r.liveID(), "/data", map[string][]byte{"keep.txt": []byte("the data before the restore")})
	r.putModes(r.liveID(), "/data", map[string]int64{"tool": 0o4755})
	before, modes := r.dataFiles(r.liveID()), r.modes(r.liveID(), "/data")
	a := r.hooked(p, func(e executor.Event) {
		if e.Type == executor.EventStep && strings.HasPrefix(e.Step, string(plan.StepRestore)+".") && e.Phase == "start" {
			fill(t, root, 1<<20)
		}
	})
	ctx := context.Background()
	rp, err := a.PrepareRestore(ctx, "app", m.ID, executor.RestoreOptions{Map: map[string]string{r.project + "-data": small}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.Restore(ctx, "app", rp)
	if err == nil || !strings.Contains(err.Error(), "nothing was removed") || !strings.Contains(err.Error(), "its data was left as it was, and release 3 was started on it") {
		t.Fatalf("restore: %v", err)
	}
	if ran := r.stepsRun(string(plan.StepPutBack)); len(ran) != 0 {
		t.Errorf("put back %v, which was never emptied", ran)
	}
	if got := r.dataFiles(r.liveID()); fmt.Sprint(got) != fmt.Sprint(before) {
		t.Errorf("after the refusal: %v, want %v", got, before)
	}
	if got := r.modes(r.liveID(), "/data"); fmt.Sprint(got) != fmt.Sprint(modes) {
		t.Errorf("modes: %v, want %v", got, modes)
	}
	if got := r.get("/"); got != "version=v3" {
		t.Errorf("serving %q", got)
	}
}

// A backup of more files than the volume's filesystem has inodes for is refused in the deploy
// lock before anything is backed up or stopped (1500 files of 100 bytes fit in 64 MiB, not in
// 500 inodes).
func TestRestoreChecksInodes(t *testing.T) {
	r := newRig(t)
	store := localStore(t)
	m := r.deployWithBackup(store, noDB, smallFiles(1500))
	small, p := r.onSmallVolume(store, "v3", "size=64m,nr_inodes=500")
	r.putFiles(r.liveID(), "/data", map[string][]byte{"keep.txt": []byte("the data before the restore")})
	before, live := r.dataFiles(r.liveID()), r.liveID()
	a := r.hooked(p, func(executor.Event) {})
	ctx := context.Background()
	rp, err := a.PrepareRestore(ctx, "app", m.ID, executor.RestoreOptions{Map: map[string]string{r.project + "-data": small}})
	if err != nil {
		t.Fatal(err)
	}
	if v := rp.Volumes[0]; v.Inodes < 1501 {
		t.Errorf("the plan counts %d inodes, want 1500 files and their directory at least", v.Inodes)
	}
	r.forget()
	_, err = a.Restore(ctx, "app", rp)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("nothing was changed: volume %s needs %d inodes", small, rp.Volumes[0].Inodes)) {
		t.Fatalf("restore: %v", err)
	}
	if ran := r.stepsRun(string(plan.StepBackup), string(plan.StepStop)); len(ran) != 0 {
		t.Errorf("the restore ran %v before it refused", ran)
	}
	if got := r.dataFiles(r.liveID()); fmt.Sprint(got) != fmt.Sprint(before) || r.liveID() != live {
		t.Errorf("after the refusal: %v, want %v", got, before)
	}
	if got := r.get("/"); got != "version=v3" {
		t.Errorf("serving %q", got)
	}
}
