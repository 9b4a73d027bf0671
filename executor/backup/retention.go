package backup

import (
	"context"
	"crypto/hmac"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
)

// incompleteAge is how old an incomplete backup (no manifest) must be before pruning deletes
// it: a younger one may be a backup still being written by another deployer.
const incompleteAge = 24 * time.Hour

// Dir is the directory of a service's backups in a store.
func Dir(project, service string) string { return project + "/" + service + "/" }

// PruneReport is what a prune deleted, and what it neither counted nor deleted.
type PruneReport struct {
	Deleted []string
	// Ignored are the entries of the service's directory that are not its genuine backups
	// (refused manifests, IDs dated in the future, unsigned ones when the store has a signing
	// key, names that are not backup IDs): never counted, never deleted.
	Ignored []Refused
	// Warnings are what the operator should know about the store (directories others can
	// change, a backup renamed while the prune ran).
	Warnings []string
}

// Summary says in one line what a prune left alone, for the operator ("" when nothing), and
// what it warns about, a line each.
func (r *PruneReport) Summary() string {
	if r == nil {
		return ""
	}
	lines := append([]string(nil), r.Warnings...)
	if len(r.Ignored) > 0 {
		var ids []string
		for _, x := range r.Ignored {
			if len(ids) == 3 {
				ids = append(ids, fmt.Sprintf("and %d more", len(r.Ignored)-3))
				break
			}
			ids = append(ids, x.ID)
		}
		lines = append(lines, fmt.Sprintf("retention ignored %d entries of the backup store that are not genuine backups of this service (%s): they were neither counted nor deleted; `deployer backups list` says why",
			len(r.Ignored), strings.Join(ids, ", ")))
	}
	return strings.Join(lines, "\n")
}

// Prune deletes the genuine complete backups beyond keep (oldest first) and incomplete ones
// older than a day, never current. A genuine backup is one List offers: its manifest reads,
// names this project and service, is signed when the store has a signing key, is not dated in
// the future, and its objects are in the store with the sizes it declares. Nothing else is
// counted or deleted: junk, forged or future-dated "backups" written by someone else never push
// a genuine backup out, and anything not named like a backup ID directly under the service's
// directory (another store nested inside this one, files an operator put there) is not the
// deployer's to delete. In a local store, a backup's objects are deleted only from the very
// directory the listing read (renamed since, it is left, with a warning).
func Prune(ctx context.Context, store Store, want Expect, keys *Keys, keep int, current string) (*PruneReport, error) {
	sc, err := scan(ctx, store, want, keys, time.Now())
	if err != nil {
		return nil, err
	}
	rep := &PruneReport{Ignored: sc.listing.Refused, Warnings: sc.listing.Warnings}
	var drop []string
	kept := 0
	for _, m := range sc.listing.Complete { // newest first
		if keys.signingKey() != nil && !m.Signed.Trusted() {
			rep.Ignored = append(rep.Ignored, Refused{ID: m.ID, Reason: fmt.Sprintf("%s, and the store has a signing key: not counted by retention, never deleted by it", m.Signed)})
			continue
		}
		if kept++; kept > keep {
			drop = append(drop, m.ID)
		}
	}
	for _, id := range sc.listing.Incomplete {
		if time.Since(sc.dirs[id].newest) > incompleteAge {
			drop = append(drop, id)
		}
	}
	for _, id := range drop {
		if id == current {
			continue
		}
		objs := append([]Object(nil), sc.dirs[id].objects...)
		// The manifest goes first, so a half-deleted backup is never offered.
		sort.SliceStable(objs, func(i, j int) bool { return strings.HasSuffix(objs[i].Key, "/"+ManifestName) })
		if err := deleteObjects(ctx, store, objs); errors.Is(err, errChanged) {
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("backup %s was not deleted: %v", id, err))
			continue
		} else if err != nil {
			return rep, err
		}
		rep.Deleted = append(rep.Deleted, id)
	}
	return rep, nil
}

type backupDir struct {
	complete bool
	manifest Object // when complete
	objects  []Object
	newest   time.Time
	tags     []string // objects named like a signing tag
}

// holds checks that the objects a manifest names are in its directory with the sizes it
// declares: a manifest whose archives are missing is not a backup.
func (d *backupDir) holds(m *Manifest) error {
	sizes := map[string]int64{}
	for _, o := range d.objects {
		sizes[o.Key[strings.LastIndex(o.Key, "/")+1:]] = o.Size
	}
	files := []File{}
	for _, v := range m.Volumes {
		files = append(files, v.File)
	}
	if m.Logs != nil {
		files = append(files, *m.Logs)
	}
	for _, f := range files {
		n, ok := sizes[f.Key]
		switch {
		case !ok:
			return fmt.Errorf("backup %s: %s is not in the store; it is refused", m.ID, f.Key)
		case n != f.Size:
			return fmt.Errorf("backup %s: %s holds %d bytes, and its manifest says %d; it is refused", m.ID, f.Key, n, f.Size)
		}
	}
	return nil
}

// maxIgnoredNames is how many names that are not backups a listing names; the rest are counted.
const maxIgnoredNames = 20

// listDirs groups the objects directly inside each backup directory of a service, and names
// what else is in the service's directory (never read, counted or deleted).
func listDirs(ctx context.Context, store Store, project, service string) (map[string]*backupDir, []Refused, error) {
	prefix := Dir(project, service)
	objs, err := store.List(ctx, prefix)
	if err != nil {
		return nil, nil, err
	}
	out := map[string]*backupDir{}
	other := map[string]bool{}
	for _, o := range objs {
		if !strings.HasPrefix(o.Key, prefix) {
			continue // a store that answers with keys it was not asked for
		}
		rest := strings.TrimPrefix(o.Key, prefix)
		id, name, ok := strings.Cut(rest, "/")
		if !ok || !ValidID(id) || name == "" || strings.Contains(name, "/") {
			if !ok || !ValidID(id) {
				other[id] = true
			}
			continue
		}
		d := out[id]
		if d == nil {
			d = &backupDir{}
			out[id] = d
		}
		d.add(o, name)
	}
	var names []string
	for n := range other {
		names = append(names, n)
	}
	sort.Strings(names)
	var ignored []Refused
	for i, n := range names {
		if i == maxIgnoredNames {
			ignored = append(ignored, Refused{ID: fmt.Sprintf("(%d more)", len(names)-i), Reason: "not backups either"})
			break
		}
		ignored = append(ignored, Refused{ID: Printable(truncate(n)), Reason: "not a backup: its name is not a backup ID; never read, counted or deleted"})
	}
	return out, ignored, nil
}

// add files an object directly inside the backup's directory.
func (d *backupDir) add(o Object, name string) {
	d.objects = append(d.objects, o)
	if o.Modified.After(d.newest) {
		d.newest = o.Modified
	}
	switch {
	case name == ManifestName:
		d.complete = true
		d.manifest = o
	case strings.HasPrefix(name, tagPrefix):
		d.tags = append(d.tags, name)
	}
}

// tagged reports whether the backup's directory holds the object that only a holder of the
// signing key can name (tagName).
func (d *backupDir) tagged(key []byte, store string, want Expect, id string) bool {
	if key == nil {
		return false
	}
	t := tagName(key, store, want.Project, want.Service, id)
	for _, x := range d.tags {
		if hmac.Equal([]byte(x), []byte(t)) {
			return true
		}
	}
	return false
}

// sortedIDs orders backup IDs newest first (they start with a UTC timestamp).
func sortedIDs(m map[string]*backupDir) []string {
	ids := make([]string, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	sort.Sort(sort.Reverse(sort.StringSlice(ids)))
	return ids
}

// idTime is when a backup ID says it was taken.
func idTime(id string) (time.Time, bool) {
	ts, _, ok := strings.Cut(id, "-")
	if !ok {
		return time.Time{}, false
	}
	t, err := time.Parse("20060102T150405.000Z", ts)
	return t, err == nil
}

// scanned is a service's directory in a store with every backup in it classified.
type scanned struct {
	dirs    map[string]*backupDir
	listing *Listing
}

// errNotRead marks a manifest left unread because the listing's budget was spent.
var errNotRead = errors.New("not read")

// scan lists a service's backups and reads their manifests within the bounds the deployer
// sets: the keys listed, the manifest bytes read, the IDs dated no later than now and a small
// skew. With a signing key, the backups whose directory holds the tag only the key's holder can
// name (tagName) are read first, newest first, within a budget of their own; then the others,
// newest first, within the listing's budget. Junk someone writes into the store can use up the
// second budget, never the first: it never keeps a signed backup from being read. A manifest
// that cannot be read refuses its backup, not the listing (unless none could be read at all:
// then the store is what fails).
func scan(ctx context.Context, store Store, want Expect, keys *Keys, now time.Time) (*scanned, error) {
	dirs, ignored, err := listDirs(ctx, store, want.Project, want.Service)
	if err != nil {
		return nil, err
	}
	out := &Listing{}
	if ex, ok := store.(exposer); ok {
		out.Warnings = ex.exposed(Dir(want.Project, want.Service))
	}
	identity := storeIdentity(store)
	key := keys.signingKey()
	type result struct {
		m          *Manifest
		incomplete bool
		refused    string
		storeErr   error
	}
	results := map[string]result{}
	ids := sortedIDs(dirs)
	var first, rest []string
	for _, id := range ids {
		if dirs[id].tagged(key, identity, want, id) {
			first = append(first, id)
		} else {
			rest = append(rest, id)
		}
	}
	read, failed := 0, 0
	var firstErr error
	for _, group := range [][]string{first, rest} {
		left := maxManifestsBytes
		for _, id := range group {
			m, n, err := examine(ctx, store, want, keys, id, dirs[id], now, left)
			left -= n
			if cerr := ctx.Err(); cerr != nil {
				return nil, cerr
			}
			var r result
			var se *storeError
			switch {
			case err == nil:
				r.m = m
			case errors.Is(err, ErrNotFound):
				r.incomplete = true
			case errors.As(err, &se):
				r.storeErr = err
				r.refused = fmt.Sprintf("backup %s: its manifest could not be read (%v); it is not offered, counted or deleted", id, Printable(truncate(err.Error())))
				failed++
				if firstErr == nil {
					firstErr = err
				}
			default:
				r.refused = err.Error()
			}
			if n > 0 && r.storeErr == nil {
				read++
			}
			results[id] = r
		}
	}
	if failed > 0 && read == 0 {
		return nil, firstErr // nothing could be read: the store fails, not every backup in it
	}
	for _, id := range ids {
		r := results[id]
		switch {
		case r.m != nil:
			out.Complete = append(out.Complete, r.m)
		case r.incomplete:
			out.Incomplete = append(out.Incomplete, id)
		default:
			out.Refused = append(out.Refused, Refused{ID: id, Reason: r.refused})
		}
	}
	out.Refused = append(out.Refused, ignored...)
	return &scanned{dirs: dirs, listing: out}, nil
}

// examine classifies one backup's directory: its manifest read (no more than left bytes, and
// how many it read) and checked, or why it is not offered (ErrNotFound: it has no manifest).
func examine(ctx context.Context, store Store, want Expect, keys *Keys, id string, d *backupDir, now time.Time, left int64) (*Manifest, int64, error) {
	if !d.complete {
		return nil, 0, ErrNotFound
	}
	t, ok := idTime(id)
	if !ok {
		return nil, 0, fmt.Errorf("backup %s: its ID is not a date the deployer writes; it is not offered, counted or deleted", id)
	}
	if t.After(now.Add(futureSkew)) {
		return nil, 0, fmt.Errorf("backup %s is dated in the future (this machine's clock says %s): a clock far ahead, or not the deployer's; it is not offered, counted or deleted before then",
			id, now.UTC().Format("2006-01-02 15:04:05Z"))
	}
	if d.manifest.Size > maxManifestBytes {
		return nil, 0, fmt.Errorf("backup %s: the manifest is larger than %d bytes: it was not written by the deployer; it is refused", id, maxManifestBytes)
	}
	m, n, err := readManifest(ctx, store, want, keys, id, d.manifest, left)
	if errors.Is(err, errNotRead) {
		return nil, n, fmt.Errorf("backup %s was not read: the manifests listed before it add up to %s, the most one listing reads; it is not offered, counted or deleted: %w",
			id, HumanBytes(maxManifestsBytes), errNotRead)
	}
	if err != nil {
		return nil, n, err
	}
	return m, n, d.holds(m)
}
