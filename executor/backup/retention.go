package backup

import (
	"context"
	"sort"
	"strings"
	"time"
)

// incompleteAge is how old an incomplete backup (no manifest) must be before pruning deletes
// it: a younger one may be a backup still being written by another deployer.
const incompleteAge = 24 * time.Hour

// Dir is the directory of a service's backups in a store.
func Dir(project, service string) string { return project + "/" + service + "/" }

// Prune deletes complete backups beyond keep (oldest first) and incomplete ones older than a
// day, never current. Only directories named like a backup ID directly under the service's
// directory count: anything else (another store nested inside this one, files an operator put
// there) is not the deployer's to delete.
func Prune(ctx context.Context, store Store, project, service string, keep int, current string) error {
	list, err := listDirs(ctx, store, project, service)
	if err != nil {
		return err
	}
	drop := map[string]bool{}
	kept := 0
	for _, id := range sortedIDs(list) { // newest first
		d := list[id]
		switch {
		case d.complete:
			kept++
			if kept > keep {
				drop[id] = true
			}
		case time.Since(d.newest) > incompleteAge:
			drop[id] = true
		}
	}
	for id := range drop {
		if id == current {
			continue
		}
		var keys []string
		for _, o := range list[id].objects {
			keys = append(keys, o.Key)
		}
		// The manifest goes first, so a half-deleted backup is never offered.
		sort.SliceStable(keys, func(i, j int) bool { return strings.HasSuffix(keys[i], "/"+ManifestName) })
		if err := store.Delete(ctx, keys...); err != nil {
			return err
		}
	}
	return nil
}

type backupDir struct {
	complete bool
	objects  []Object
	newest   time.Time
}

// listDirs groups the objects directly inside each backup directory of a service.
func listDirs(ctx context.Context, store Store, project, service string) (map[string]*backupDir, error) {
	prefix := Dir(project, service)
	objs, err := store.List(ctx, prefix)
	if err != nil {
		return nil, err
	}
	out := map[string]*backupDir{}
	for _, o := range objs {
		rest := strings.TrimPrefix(o.Key, prefix)
		id, name, ok := strings.Cut(rest, "/")
		if !ok || !ValidID(id) || name == "" || strings.Contains(name, "/") {
			continue
		}
		d := out[id]
		if d == nil {
			d = &backupDir{}
			out[id] = d
		}
		d.objects = append(d.objects, o)
		if o.Modified.After(d.newest) {
			d.newest = o.Modified
		}
		if name == ManifestName {
			d.complete = true
		}
	}
	return out, nil
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
