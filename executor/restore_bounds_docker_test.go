package executor_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/volume"
	"github.com/klauspost/compress/zstd"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor"
	"github.com/deployer-dev/deployer/executor/backup"
	"github.com/deployer-dev/deployer/executor/backup/tartest"
	"github.com/deployer-dev/deployer/executor/plan"
)

// plantArchive replaces a backup's archive with raw tar bytes, fixing the manifest's size,
// checksum and uncompressed size to match, as someone with write access to the store would.
func plantArchive(t *testing.T, dir string, m *backup.Manifest, raw []byte) {
	var z bytes.Buffer
	zw, _ := zstd.NewWriter(&z)
	zw.Write(raw)
	zw.Close()
	os.WriteFile(filepath.Join(dir, m.Volumes[0].Key), z.Bytes(), 0o600)
	sum := sha256.Sum256(z.Bytes())
	editManifest(t, dir, func(rm map[string]any) {
		v := rm["volumes"].([]any)[0].(map[string]any)
		v["size"], v["sha256"], v["uncompressed_bytes"] = z.Len(), hex.EncodeToString(sum[:]), len(raw)
	})
}

// A backup whose 5 KiB archive holds a 4 GiB sparse file is refused by the verify that every
// restore runs first, before anything is backed up, stopped or emptied: the live release keeps
// its files and keeps serving.
func TestRestoreRefusesExpandingArchive(t *testing.T) {
	r := newRig(t)
	store := localStore(t)
	m := r.deployWithBackup(store, noDB, map[string][]byte{"a.txt": []byte("the data")})
	r.putFiles(r.liveID(), "/data", map[string][]byte{"now.txt": []byte("the current data")})
	before := r.dataFiles(r.liveID())
	var raw tartest.Raw
	raw.Dir("data/")
	raw.File("data/a.txt", "x")
	raw.Sparse("data/big", 4<<30)
	plantArchive(t, storeDir(store, r.project, m), m, raw.End())

	_, err := r.restore(r.configWithStore("v2", store, noDB), m.ID, executor.RestoreOptions{}, "")
	if err == nil || !strings.Contains(err.Error(), "expands past the") {
		t.Fatalf("restore: %v", err)
	}
	if got := r.dataFiles(r.liveID()); fmt.Sprint(got) != fmt.Sprint(before) {
		t.Errorf("the volume changed: %v, want %v", got, before)
	}
	if l := r.backups(store, noDB, ""); len(l.Complete) != 1 {
		t.Errorf("%d backups: a safety backup was taken before the refusal", len(l.Complete))
	}
	if got := r.get("/"); got != "version=v2" {
		t.Errorf("serving %q", got)
	}
}

// An archive of 2000 empty directories declares 1 MB (512 bytes each, as its tar takes) and
// takes 8 MB of 4 KiB blocks: the restore checks the volume's filesystem for the larger, and
// refuses a 4 MiB one in the deploy lock before anything is backed up or stopped: the live
// release was never stopped, and no safety backup was taken.
func TestRestoreChecksTheSpaceFilesTake(t *testing.T) {
	r := newRig(t)
	store := localStore(t)
	ctx := context.Background()
	m := r.deployWithBackup(store, noDB, map[string][]byte{"a.txt": []byte("x")})
	var raw tartest.Raw
	raw.Dir("data/")
	for i := 0; i < 2000; i++ {
		raw.Dir(fmt.Sprintf("data/d%d/", i))
	}
	plantArchive(t, storeDir(store, r.project, m), m, raw.End())

	small, p := r.onSmallVolume(store, "v3", "size=4m")
	r.putFiles(r.liveID(), "/data", map[string][]byte{"keep.txt": []byte("the data before the restore")})
	before := r.dataFiles(r.liveID())
	a := r.applier(p)
	a.SelfBinary = staticDeployer(t)
	rp, err := a.PrepareRestore(ctx, "app", m.ID, executor.RestoreOptions{Map: map[string]string{r.project + "-data": small}})
	if err != nil {
		t.Fatal(err)
	}
	if v := rp.Volumes[0]; v.Bytes > 2<<20 || v.Disk < 2000*4096 {
		t.Errorf("plan: %d bytes declared, %d on disk", v.Bytes, v.Disk)
	}
	live := r.liveID()
	r.forget()
	_, err = a.Restore(ctx, "app", rp)
	if err == nil || !strings.Contains(err.Error(), "nothing was changed: volume "+small+" needs 7.8 MiB") {
		t.Fatalf("restore: %v", err)
	}
	if got := r.dataFiles(r.liveID()); fmt.Sprint(got) != fmt.Sprint(before) {
		t.Errorf("after the refusal: %v, want %v", got, before)
	}
	if id := r.liveID(); id != live {
		t.Errorf("the live release changed: %s, was %s", id, live)
	}
	if ran := r.stepsRun(string(plan.StepBackup), string(plan.StepStop)); len(ran) != 0 {
		t.Errorf("the restore ran %v before it refused", ran)
	}
	if got := r.get("/"); got != "version=v3" {
		t.Errorf("serving %q", got)
	}
}

// onSmallVolume deploys version v with its data on a volume of a small tmpfs of the engine's
// host (mounted with opts, e.g. "size=4m"), and returns the volume's name and the configuration.
func (r *rig) onSmallVolume(store *config.Store, v, opts string) (string, *config.Project) {
	name, p, _ := r.onTmpfs(store, v, opts)
	return name, p
}

// onTmpfs is onSmallVolume, the volume a directory of the tmpfs, whose root it also returns:
// what is written there takes the volume's room without being in it.
func (r *rig) onTmpfs(store *config.Store, v, opts string) (string, *config.Project, string) {
	t := r.t
	small := r.project + "-small"
	dir := t.TempDir()
	if err := exec.Command("mount", "-t", "tmpfs", "-o", opts, "tmpfs", dir).Run(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI runs as root and must be able to mount a tmpfs: %v", err)
		}
		t.Skipf("cannot mount a tmpfs: %v", err)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	vol := filepath.Join(dir, "volume")
	if err := os.Mkdir(vol, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := r.eng.Client().VolumeCreate(context.Background(), volume.CreateOptions{Name: small, Driver: "local",
		DriverOpts: map[string]string{"type": "none", "o": "bind", "device": vol}}); err != nil {
		t.Fatal(err)
	}
	onSmall := func(s *config.Service) {
		s.SQLite = nil
		s.Volumes = []*config.Volume{{Name: small, Target: "/data"}}
		if s.Backup != nil {
			s.Backup.Volumes = []string{small}
		}
	}
	p := r.configWithStore(v, store, onSmall)
	if so := r.apply(p); so.Error != "" {
		t.Fatal(so.Error)
	}
	return small, p, dir
}
