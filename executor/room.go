package executor

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/deployer-dev/deployer/config"
)

// VolumeRoom is what the helper (`deployer internal volume-room DIR...`) says of a volume
// mounted at DIR: its filesystem's free space and inodes, and what its current files take
// (freed when a restore empties it). It only looks.
type VolumeRoom struct {
	Dir string `json:"dir"`
	// Device is the filesystem the volume is on: volumes on one share its free space.
	Device     uint64 `json:"device"`
	FreeBytes  int64  `json:"free_bytes"`
	FreeInodes int64  `json:"free_inodes"` // -1: the filesystem sets no limit
	UsedBytes  int64  `json:"used_bytes"`
	UsedInodes int64  `json:"used_inodes"`
	Error      string `json:"error,omitempty"`
}

// MeasureVolumes measures each directory, touching nothing.
func MeasureVolumes(dirs []string) []VolumeRoom {
	out := []VolumeRoom{}
	for _, d := range dirs {
		out = append(out, MeasureVolume(d))
	}
	return out
}

// MeasureVolume is the room of the filesystem holding dir, and what dir's files take (each
// file with several names counted once).
func MeasureVolume(dir string) VolumeRoom {
	r := VolumeRoom{Dir: dir}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		r.Error = err.Error()
		return r
	}
	r.FreeBytes = int64(st.Bavail) * int64(st.Bsize)
	r.FreeInodes = -1
	if st.Files > 0 {
		r.FreeInodes = int64(st.Ffree)
	}
	var self syscall.Stat_t
	if err := syscall.Stat(dir, &self); err != nil {
		r.Error = err.Error()
		return r
	}
	r.Device = uint64(self.Dev)
	seen := map[uint64]bool{}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		if st.Nlink > 1 && !info.IsDir() {
			if seen[uint64(st.Ino)] {
				return nil
			}
			seen[uint64(st.Ino)] = true
		}
		r.UsedBytes += int64(st.Blocks) * 512
		r.UsedInodes++
		return nil
	})
	return r
}

// checkRoom asks the engine, in a helper container that mounts the volumes and only looks, whether
// each volume's filesystem has room for what the restore writes into it, counting what emptying
// it frees and, for volumes on the same filesystem, what the ones restored before it take. It
// runs before anything is backed up or stopped: a restore that cannot fit changes nothing.
func (rs restorer) checkRoom(ctx context.Context, s *config.Service, vols []RestoreVolume, helper string) error {
	var mounts []VolumeMount
	cmd := []string{"volume-room"}
	for i, v := range vols {
		dir := "/volumes/" + strconv.Itoa(i)
		mounts = append(mounts, VolumeMount{Name: v.To, Target: dir})
		cmd = append(cmd, dir)
	}
	// The name of the helper that reads the volumes when no release is live: the two never run
	// together, and it is one the deployer knows as its own.
	logs, err := rs.hp.runHelper(ctx, s, "restore-source", helper, mounts, cmd...)
	if err != nil {
		return fmt.Errorf("measuring the volumes: %w", err)
	}
	var rooms []VolumeRoom
	if err := json.Unmarshal([]byte(lastLineStarting(logs, "[")), &rooms); err != nil || len(rooms) != len(vols) {
		return fmt.Errorf("measuring the volumes: the helper said %q", firstLine(strings.TrimSpace(logs)))
	}
	return roomFor(vols, rooms)
}

// roomFor checks the volumes of a restore against what the helper measured of them, in the
// order the restore fills them: each is emptied (what its files take is freed), then filled,
// and volumes on one filesystem share its room.
func roomFor(vols []RestoreVolume, rooms []VolumeRoom) error {
	type fsUse struct{ bytes, inodes int64 }
	use := map[uint64]*fsUse{}
	var problems []string
	for i, v := range vols {
		r := rooms[i]
		if r.Error != "" {
			return fmt.Errorf("measuring volume %s: %s", v.To, r.Error)
		}
		u := use[r.Device]
		if u == nil {
			u = &fsUse{}
			use[r.Device] = u
		}
		need := max(v.Bytes, v.Disk)
		u.bytes += need - r.UsedBytes
		u.inodes += v.Inodes - r.UsedInodes
		if u.bytes > r.FreeBytes {
			problems = append(problems, fmt.Sprintf("volume %s needs %s for the files of %s, and its filesystem has %s free, and %s once its current files are removed%s",
				v.To, HumanBytes(need), v.From, HumanBytes(r.FreeBytes), HumanBytes(r.FreeBytes+r.UsedBytes), sharedNote(i, r.Device, rooms)))
		}
		if r.FreeInodes >= 0 && u.inodes > r.FreeInodes {
			problems = append(problems, fmt.Sprintf("volume %s needs %d inodes for the files of %s, and its filesystem has %d free, and %d once its current files are removed%s",
				v.To, v.Inodes, v.From, r.FreeInodes, r.FreeInodes+r.UsedInodes, sharedNote(i, r.Device, rooms)))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s: make room on the engine's disk", strings.Join(problems, "; "))
	}
	return nil
}

// sharedNote says when volumes restored before the i-th share its filesystem.
func sharedNote(i int, dev uint64, rooms []VolumeRoom) string {
	for _, r := range rooms[:i] {
		if r.Device == dev {
			return ", which the volumes restored before it share"
		}
	}
	return ""
}
