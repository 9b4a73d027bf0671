package executor

import (
	"strings"
	"testing"
)

// A restore needs, on each filesystem, what the volumes restored there take, less what
// emptying them frees, counted in the order they are filled: two volumes that each fit alone
// but not together on one filesystem are refused, naming the second; on two filesystems they
// fit. Inodes are counted the same way, and a filesystem without an inode limit has none.
func TestRoomFor(t *testing.T) {
	vols := []RestoreVolume{
		{From: "a", To: "a", Bytes: 600, Disk: 700, Inodes: 50},
		{From: "b", To: "b", Bytes: 600, Disk: 500, Inodes: 50},
	}
	room := func(dev uint64, free, inodes, used, usedInodes int64) VolumeRoom {
		return VolumeRoom{Device: dev, FreeBytes: free, FreeInodes: inodes, UsedBytes: used, UsedInodes: usedInodes}
	}
	cases := []struct {
		name  string
		rooms []VolumeRoom
		want  string
	}{
		{"each fits alone, not both on one filesystem", []VolumeRoom{room(1, 1000, 1000, 0, 0), room(1, 1000, 1000, 0, 0)},
			"volume b needs 600 B for the files of b, and its filesystem has 1000 B free, and 1000 B once its current files are removed, which the volumes restored before it share"},
		{"what emptying frees counts", []VolumeRoom{room(1, 1000, 1000, 200, 0), room(1, 1000, 1000, 200, 0)}, ""},
		{"two filesystems", []VolumeRoom{room(1, 1000, 1000, 0, 0), room(2, 1000, 1000, 0, 0)}, ""},
		{"the larger of declared and on disk", []VolumeRoom{room(1, 650, 1000, 0, 0), room(2, 1000, 1000, 0, 0)}, "volume a needs 700 B"},
		{"inodes", []VolumeRoom{room(1, 10000, 80, 0, 0), room(1, 10000, 80, 0, 0)}, "volume b needs 50 inodes for the files of b, and its filesystem has 80 free"},
		{"inodes freed by emptying", []VolumeRoom{room(1, 10000, 80, 0, 10), room(1, 10000, 80, 0, 10)}, ""},
		{"no inode limit", []VolumeRoom{room(1, 10000, -1, 0, 0), room(1, 10000, -1, 0, 0)}, ""},
		{"the helper could not measure", []VolumeRoom{{Error: "no such file"}, room(1, 1000, 1000, 0, 0)}, "measuring volume a: no such file"},
	}
	for _, c := range cases {
		err := roomFor(vols, c.rooms)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
}
