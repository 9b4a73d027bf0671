package backup

import (
	"archive/tar"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
)

// TameReport lists what Tame left out of an archive or changed in it.
type TameReport struct {
	Skipped []string // entry: reason
	Changed []string // entry: what was changed
	Files   int      // entries written
}

// Lines says what was skipped or changed, a line per kind, with the first few names.
func (r *TameReport) Lines() []string {
	var out []string
	group := func(list []string, verb string) {
		byWhy := map[string][]string{}
		for _, s := range list {
			name, why, _ := strings.Cut(s, ": ")
			byWhy[why] = append(byWhy[why], name)
		}
		var whys []string
		for w := range byWhy {
			whys = append(whys, w)
		}
		sort.Strings(whys)
		for _, w := range whys {
			names := byWhy[w]
			more := ""
			if len(names) > 5 {
				more = fmt.Sprintf(" and %d more", len(names)-5)
				names = names[:5]
			}
			out = append(out, fmt.Sprintf("%s %d (%s): %s%s", verb, len(byWhy[w]), w, strings.Join(names, ", "), more))
		}
	}
	group(r.Skipped, "skipped")
	group(r.Changed, "changed")
	return out
}

// Tame copies a volume's tar stream (entries named <anything>/<path>, as the engine's copy API
// writes them) to w with its entries under base, keeping only what is safe to recreate in a
// volume: regular files, directories, symbolic links, FIFOs and hard links to files seen
// before. Character and block devices are never recreated, setuid and setgid bits are cleared,
// and an entry whose path would leave the volume or pass through a symbolic link is skipped.
// The stream an archive holds is data from a store that others may write to.
func Tame(r io.Reader, w io.Writer, base string) (*TameReport, error) {
	rep := &TameReport{}
	tr := tar.NewReader(r)
	tw := tar.NewWriter(w)
	files := map[string]bool{}    // regular files written, for hard links
	symlinks := map[string]bool{} // symbolic links written: nothing goes through them
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return rep, tw.Close()
		}
		if err != nil {
			return rep, fmt.Errorf("read the archive: %w", err)
		}
		rel, ok := inVolume(hdr.Name)
		shown := Printable(hdr.Name)
		switch {
		case !ok:
			rep.Skipped = append(rep.Skipped, shown+": outside the volume")
			continue
		case throughSymlink(rel, symlinks):
			rep.Skipped = append(rep.Skipped, shown+": inside a symbolic link")
			continue
		}
		pax, dropped := xattrs(hdr.PAXRecords)
		if dropped {
			rep.Changed = append(rep.Changed, shown+": security extended attributes (file capabilities) dropped")
		}
		h := &tar.Header{Name: base, Mode: hdr.Mode, Uid: hdr.Uid, Gid: hdr.Gid, ModTime: hdr.ModTime, Typeflag: hdr.Typeflag,
			PAXRecords: pax, Format: tar.FormatPAX}
		if rel != "" {
			h.Name = base + "/" + rel
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			h.Name += "/"
		case tar.TypeReg, tar.TypeRegA:
			h.Typeflag, h.Size = tar.TypeReg, hdr.Size
			files[rel] = true
		case tar.TypeSymlink:
			h.Linkname = hdr.Linkname
			symlinks[rel] = true
		case tar.TypeLink:
			target, ok := inVolume(hdr.Linkname)
			if !ok || !files[target] {
				rep.Skipped = append(rep.Skipped, shown+": a hard link to a file the archive does not hold before it")
				continue
			}
			h.Linkname = base + "/" + target
			files[rel] = true
		case tar.TypeFifo:
		case tar.TypeChar, tar.TypeBlock:
			rep.Skipped = append(rep.Skipped, shown+": a device node")
			continue
		default:
			rep.Skipped = append(rep.Skipped, fmt.Sprintf("%s: entry type %q", shown, hdr.Typeflag))
			continue
		}
		if rel == "" && hdr.Typeflag != tar.TypeDir {
			rep.Skipped = append(rep.Skipped, shown+": the volume itself must be a directory")
			continue
		}
		if h.Mode&0o6000 != 0 {
			h.Mode &^= 0o6000
			rep.Changed = append(rep.Changed, shown+": setuid/setgid bit cleared")
		}
		if err := tw.WriteHeader(h); err != nil {
			return rep, err
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := io.Copy(tw, tr); err != nil {
				return rep, fmt.Errorf("read the archive: %w", err)
			}
		}
		rep.Files++
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

func throughSymlink(rel string, symlinks map[string]bool) bool {
	for p := path.Dir(rel); p != "." && p != "/" && p != ""; p = path.Dir(p) {
		if symlinks[p] {
			return true
		}
	}
	return false
}

// xattrs keeps the extended attributes an archive carries, except the security ones (file
// capabilities among them), which would raise what a file may do.
func xattrs(pax map[string]string) (out map[string]string, dropped bool) {
	for k, v := range pax {
		if !strings.HasPrefix(k, "SCHILY.xattr.") {
			continue
		}
		if strings.HasPrefix(k, "SCHILY.xattr.security.") {
			dropped = true
			continue
		}
		if out == nil {
			out = map[string]string{}
		}
		out[k] = v
	}
	return out, dropped
}
