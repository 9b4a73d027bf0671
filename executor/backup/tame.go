package backup

import (
	"archive/tar"
	"fmt"
	"hash/maphash"
	"io"
	"path"
	"sort"
	"strings"
)

// TameReport says what Tame left out of an archive or changed in it: per reason, how many
// entries and the first few names (an archive may hold millions of entries; the report stays
// small).
type TameReport struct {
	Files int // entries written
	// Inodes is how many files the entries make (hard links make none; directories the
	// archive needs but did not hold count): what the volume's filesystem must have free.
	Inodes int64
	// DiskBytes is what the entries take once made, in 4 KiB blocks: every directory, every
	// file's size rounded up, a long symbolic link, extended attributes. An archive of
	// directories declares 512 bytes for each, and takes 4 KiB: the space a restore checks is
	// the larger of the two.
	DiskBytes int64
	skipped   map[string]*tally
	changed   map[string]*tally
}

type tally struct {
	n     int
	names []string
}

// reportNames is how many names a report keeps per reason; reportNameLen how much of each.
const (
	reportNames   = 5
	reportNameLen = 200
)

func (r *TameReport) note(m *map[string]*tally, name, why string) {
	if *m == nil {
		*m = map[string]*tally{}
	}
	t := (*m)[why]
	if t == nil {
		t = &tally{}
		(*m)[why] = t
	}
	t.n++
	if len(t.names) < reportNames {
		if len(name) > reportNameLen {
			name = name[:reportNameLen] + "..."
		}
		t.names = append(t.names, Printable(name))
	}
}

func (r *TameReport) skip(name, why string)   { r.note(&r.skipped, name, why) }
func (r *TameReport) change(name, why string) { r.note(&r.changed, name, why) }

// Skipped counts the entries left out, all reasons together.
func (r *TameReport) Skipped() int { return total(r.skipped) }

// Changed counts the entries changed, all reasons together.
func (r *TameReport) Changed() int { return total(r.changed) }

func total(m map[string]*tally) int {
	n := 0
	for _, t := range m {
		n += t.n
	}
	return n
}

// Lines says what was skipped or changed, a line per reason, with the first few names.
func (r *TameReport) Lines() []string {
	var out []string
	group := func(m map[string]*tally, verb string) {
		var whys []string
		for w := range m {
			whys = append(whys, w)
		}
		sort.Strings(whys)
		for _, w := range whys {
			t := m[w]
			more := ""
			if t.n > len(t.names) {
				more = fmt.Sprintf(" and %d more", t.n-len(t.names))
			}
			out = append(out, fmt.Sprintf("%s %d (%s): %s%s", verb, t.n, w, strings.Join(t.names, ", "), more))
		}
	}
	group(r.skipped, "skipped")
	group(r.changed, "changed")
	return out
}

// Tame copies a volume's tar stream (entries named <anything>/<path>, as the engine's copy API
// writes them) to w with its entries under base, keeping only what is safe to recreate in a
// volume: regular files, directories, symbolic links, FIFOs and hard links to files seen
// before. Character and block devices are never recreated, setuid and setgid bits are cleared,
// and an entry whose path would leave the volume or pass through a symbolic link is skipped.
// The stream an archive holds is data from a store that others may write to.
//
// Extended attributes are dropped: the engine's copy of a volume carries none but file
// capabilities (dropped above), and one Linux would refuse (too long, malformed) would fail
// the restore after the live release was stopped. Names Linux cannot make (a path of 4096
// bytes or more, a name over 255) are skipped.
//
// What it writes is bounded by limit, the uncompressed size the manifest declares, counted as
// logical sizes: every entry costs 512 bytes (its header) plus its file's size (a sparse
// file's full size), the part of a name or link target beyond 256 bytes and its extended
// attributes. An archive of the deployer's fits in its own size; one that expands past limit
// fails with ErrTooLarge once the entry that would cross it is reached, before that entry is
// written.
func Tame(r io.Reader, w io.Writer, base string, limit int64) (*TameReport, error) {
	return tameTo(r, w, base, limit, false)
}

// Replay writes back an archive the deployer made itself in this run, from the engine, and
// kept on its own disk (a restore's safety copy, never read from a store): as Tame, but what
// the volume held is kept as it was: setuid and setgid bits, device nodes, extended attributes.
// Paths are checked as in Tame.
func Replay(r io.Reader, w io.Writer, base string, limit int64) (*TameReport, error) {
	return tameTo(r, w, base, limit, true)
}

func tameTo(r io.Reader, w io.Writer, base string, limit int64, own bool) (*TameReport, error) {
	tw := tar.NewWriter(w)
	rep, err := tameEntries(r, base, limit, own, func(h *tar.Header, rel string, data io.Reader, made bool) error {
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if data != nil {
			if _, err := io.Copy(tw, data); err != nil {
				return fmt.Errorf("read the archive: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return rep, err
	}
	return rep, tw.Close()
}

// tameEntries reads a volume's tar stream and calls emit, in order, for each entry Tame keeps,
// its header rewritten under base (rel is its path in the volume). data is the file's contents
// for a regular file (exactly h.Size bytes), nil otherwise. Directories an entry needs that the
// archive did not hold before it are emitted first (with made set), counted like entries, so
// that nothing creates directories the count does not see. Restore and verify both read
// archives through it: verify refuses what restore would.
func tameEntries(r io.Reader, base string, limit int64, own bool, emit func(h *tar.Header, rel string, data io.Reader, made bool) error) (*TameReport, error) {
	t := &tamer{rep: &TameReport{}, base: base, left: limit, limit: limit, seed: maphash.MakeSeed(), own: own,
		files: map[uint64]struct{}{}, symlinks: map[uint64]struct{}{}, dirs: map[uint64]struct{}{}}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return t.rep, nil
		}
		if err != nil {
			return t.rep, fmt.Errorf("read the archive: %w", err)
		}
		if err := t.count(); err != nil {
			return t.rep, err
		}
		h, a, ok := t.header(hdr)
		if !ok {
			continue
		}
		if err := t.parents(a, emit); err != nil {
			return t.rep, err
		}
		cost := int64(512) + over(hdr.Name) + over(hdr.Linkname)
		for k, v := range h.PAXRecords {
			cost += int64(len(k) + len(v))
		}
		if h.Typeflag == tar.TypeReg {
			cost += h.Size
		}
		if err := t.charge(cost, hdr.Name); err != nil {
			return t.rep, err
		}
		var data io.Reader
		if h.Typeflag == tar.TypeReg {
			data = io.LimitReader(tr, h.Size)
		}
		if err := emit(h, a.rel, data, false); err != nil {
			return t.rep, err
		}
		t.rep.DiskBytes += onDisk(h)
		if h.Typeflag != tar.TypeLink && a.rel != "" {
			t.rep.Inodes++
		}
		t.record(h.Typeflag, a.key)
		t.rep.Files++
	}
}

// tamer is the state of one archive being tamed. The paths it remembers are kept as 64-bit
// keyed hashes, so its memory is a few tens of bytes an entry whatever the names' length.
type tamer struct {
	rep         *TameReport
	base        string
	left, limit int64
	entries     int64
	seed        maphash.Seed
	files       map[uint64]struct{} // regular files (and hard links to them) written
	symlinks    map[uint64]struct{} // symbolic links written: nothing goes through them
	dirs        map[uint64]struct{} // directories written
	own         bool                // the deployer's own archive (Replay): modes, devices, xattrs kept
}

func (t *tamer) key(rel string) uint64 { return maphash.String(t.seed, rel) }

func (t *tamer) has(m map[uint64]struct{}, rel string) bool {
	_, ok := m[t.key(rel)]
	return ok
}

// count counts one more entry made, failing past maxArchiveEntries.
func (t *tamer) count() error {
	if t.entries++; t.entries > maxArchiveEntries {
		return fmt.Errorf("the archive holds more than %d entries, the most the deployer restores: %w", maxArchiveEntries, ErrTooLarge)
	}
	return nil
}

// block is the filesystem block onDisk counts in.
const block = 4096

// onDisk is about what an entry takes on a filesystem of 4 KiB blocks (ext4's and xfs's).
func onDisk(h *tar.Header) int64 {
	var n int64
	switch h.Typeflag {
	case tar.TypeDir:
		n = block
	case tar.TypeReg:
		n = (h.Size + block - 1) / block * block
	case tar.TypeSymlink:
		if len(h.Linkname) >= 60 { // shorter targets live in the inode
			n = block
		}
	}
	if len(h.PAXRecords) > 0 {
		n += block
	}
	return n
}

// over is how much of a name is counted beyond what an archive's header holds.
func over(name string) int64 {
	if len(name) > 256 {
		return int64(len(name) - 256)
	}
	return 0
}

func (t *tamer) charge(cost int64, name string) error {
	if cost > t.left {
		return fmt.Errorf("the archive expands past the %d bytes it declares (at %s): %w", t.limit, Printable(truncate(name)), ErrTooLarge)
	}
	t.left -= cost
	return nil
}

func truncate(s string) string {
	if len(s) > reportNameLen {
		return s[:reportNameLen] + "..."
	}
	return s
}

// header decides what becomes of an entry: the header to write and its path in the volume, or
// !ok when it is skipped (and reported).
func (t *tamer) header(hdr *tar.Header) (*tar.Header, *ancestry, bool) {
	if len(hdr.Name) > maxNameBytes || len(hdr.Linkname) > maxNameBytes {
		t.rep.skip(hdr.Name, fmt.Sprintf("a name or link target of %d bytes or more", maxNameBytes+1))
		return nil, nil, false
	}
	rel, ok := inVolume(hdr.Name)
	if !ok {
		t.rep.skip(hdr.Name, "outside the volume")
		return nil, nil, false
	}
	if len(t.base)+1+len(rel)+1 > maxNameBytes || longComponent(rel) || hdr.Typeflag == tar.TypeLink && longComponent(hdr.Linkname) {
		t.rep.skip(hdr.Name, fmt.Sprintf("a path of %d bytes or more, or a name over %d bytes, which Linux does not make", maxNameBytes+1, maxComponent))
		return nil, nil, false
	}
	if hdr.Uid < 0 || hdr.Gid < 0 || int64(hdr.Uid) > maxID || int64(hdr.Gid) > maxID {
		t.rep.skip(hdr.Name, "an owner that is not a user or group ID")
		return nil, nil, false
	}
	a := t.ancestors(rel)
	_, isDir := t.dirs[a.key]
	_, isFile := t.files[a.key]
	_, isLink := t.symlinks[a.key]
	switch {
	case a.bad != "":
		t.rep.skip(hdr.Name, a.bad)
		return nil, nil, false
	case rel != "" && hdr.Typeflag != tar.TypeDir && isDir:
		t.rep.skip(hdr.Name, "it would replace a directory of the archive")
		return nil, nil, false
	case hdr.Typeflag == tar.TypeDir && (isFile || isLink):
		t.rep.skip(hdr.Name, "a directory where the archive made a file")
		return nil, nil, false
	}
	pax, dropped := xattrs(hdr.PAXRecords, t.own)
	switch dropped {
	case "security":
		t.rep.change(hdr.Name, "security extended attributes (file capabilities) dropped")
	case "other":
		t.rep.change(hdr.Name, "extended attributes dropped")
	}
	h := &tar.Header{Name: t.base, Mode: hdr.Mode & 0o7777, Uid: hdr.Uid, Gid: hdr.Gid, ModTime: hdr.ModTime, Typeflag: hdr.Typeflag,
		PAXRecords: pax, Format: tar.FormatPAX}
	if rel != "" {
		h.Name = t.base + "/" + rel
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		h.Name += "/"
	case tar.TypeReg, tar.TypeRegA:
		h.Typeflag, h.Size = tar.TypeReg, hdr.Size
	case tar.TypeSymlink:
		h.Linkname = hdr.Linkname
	case tar.TypeLink:
		target, ok := inVolume(hdr.Linkname)
		if !ok || !t.has(t.files, target) {
			t.rep.skip(hdr.Name, "a hard link to a file the archive does not hold before it")
			return nil, nil, false
		}
		h.Linkname = t.base + "/" + target
	case tar.TypeFifo:
	case tar.TypeChar, tar.TypeBlock:
		if !t.own {
			t.rep.skip(hdr.Name, "a device node")
			return nil, nil, false
		}
		h.Devmajor, h.Devminor = hdr.Devmajor, hdr.Devminor
	default:
		t.rep.skip(hdr.Name, fmt.Sprintf("entry type %q", hdr.Typeflag))
		return nil, nil, false
	}
	if rel == "" && hdr.Typeflag != tar.TypeDir {
		t.rep.skip(hdr.Name, "the volume itself must be a directory")
		return nil, nil, false
	}
	if h.Mode&0o6000 != 0 && !t.own {
		h.Mode &^= 0o6000
		t.rep.change(hdr.Name, "setuid/setgid bit cleared")
	}
	a.rel = rel
	return h, &a, true
}

// ancestry is what an entry's path meets on its way down from the volume: the key of the path
// itself, the directories the archive has not made (to be made first), or why the entry cannot
// be made.
type ancestry struct {
	rel     string
	key     uint64
	missing []string
	keys    []uint64
	bad     string
}

// ancestors walks rel from the volume down, in one pass whatever its depth: a directory made
// from the archive only ever holds directories made from it above it (a directory is never
// replaced, and nothing is made inside a file or a symbolic link), so the walk ends at the
// first path that is not such a directory.
func (t *tamer) ancestors(rel string) ancestry {
	var a ancestry
	var h maphash.Hash
	h.SetSeed(t.seed)
	start := 0
	for i := 0; i <= len(rel); i++ {
		if i < len(rel) && rel[i] != '/' {
			continue
		}
		h.WriteString(rel[start:i])
		start = i
		k := h.Sum64()
		if i == len(rel) {
			a.key = k
			break
		}
		if len(a.missing) == 0 {
			if _, ok := t.dirs[k]; ok {
				continue
			}
			if _, ok := t.symlinks[k]; ok {
				a.bad = "inside a symbolic link"
				return a
			}
			if _, ok := t.files[k]; ok {
				a.bad = "inside a file of the archive"
				return a
			}
		}
		a.missing = append(a.missing, rel[:i])
		a.keys = append(a.keys, k)
	}
	return a
}

// parents emits the directories on the way to an entry that the archive has not made,
// outermost first, each counted as an entry.
func (t *tamer) parents(a *ancestry, emit func(*tar.Header, string, io.Reader, bool) error) error {
	for i, p := range a.missing {
		if err := t.count(); err != nil {
			return err
		}
		if err := t.charge(512, p); err != nil {
			return err
		}
		h := &tar.Header{Name: t.base + "/" + p + "/", Typeflag: tar.TypeDir, Mode: 0o755, Format: tar.FormatPAX}
		if err := emit(h, p, nil, true); err != nil {
			return err
		}
		t.rep.DiskBytes += onDisk(h)
		t.dirs[a.keys[i]] = struct{}{}
	}
	return nil
}

// record remembers what an entry made (and forgets what it replaced).
func (t *tamer) record(typ byte, k uint64) {
	delete(t.files, k)
	delete(t.symlinks, k)
	switch typ {
	case tar.TypeDir:
		t.dirs[k] = struct{}{}
	case tar.TypeReg, tar.TypeRegA, tar.TypeLink:
		t.files[k] = struct{}{}
	case tar.TypeSymlink:
		t.symlinks[k] = struct{}{}
	}
}

// inVolume turns an archive entry's name into a path relative to the volume ("" for the volume
// itself), or reports that it would leave it.
func inVolume(name string) (string, bool) {
	name = strings.TrimPrefix(name, "./")
	if strings.HasPrefix(name, "/") {
		return "", false
	}
	_, rest, _ := strings.Cut(strings.TrimSuffix(name, "/"), "/")
	if rest == "" {
		return "", true
	}
	for _, part := range strings.Split(rest, "/") {
		if part == ".." {
			return "", false
		}
	}
	clean := path.Clean(rest)
	if clean == "." {
		return "", true
	}
	return clean, !strings.HasPrefix(clean, "../") && clean != ".."
}

// maxID is the largest user or group ID an entry may name.
const maxID = 1<<31 - 1

// longComponent reports whether a path has a name Linux does not make (over NAME_MAX).
func longComponent(p string) bool {
	for _, c := range strings.Split(p, "/") {
		if len(c) > maxComponent {
			return true
		}
	}
	return false
}

// xattrs is the extended attributes an entry keeps: all of them in the deployer's own archive
// (own), none otherwise. dropped says what was dropped: "security" when file capabilities (or
// another security attribute) were among them, "other" for the rest.
func xattrs(pax map[string]string, own bool) (out map[string]string, dropped string) {
	for k, v := range pax {
		if !strings.HasPrefix(k, "SCHILY.xattr.") {
			continue
		}
		if own {
			if out == nil {
				out = map[string]string{}
			}
			out[k] = v
			continue
		}
		if strings.HasPrefix(k, "SCHILY.xattr.security.") {
			dropped = "security"
		} else if dropped == "" {
			dropped = "other"
		}
	}
	return out, dropped
}
