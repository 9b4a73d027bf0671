package executor

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor/backup"
	"github.com/deployer-dev/deployer/executor/plan"
)

// checkSQLite runs one sqlite check of the candidate.
func (ck *checks) checkSQLite(ctx context.Context, step *plan.Step) error {
	d := ck.d
	var db *config.SQLite
	for _, x := range d.s.SQLite {
		if x.Name == step.Arg {
			db = x
		}
	}
	if db == nil {
		return notConfigured(d.s, step)
	}
	err := d.rn.step(d.s.Name, step.Kind, step.Arg, step.Detail, func() error {
		if d.hd.heldCheck != nil && db == d.s.MigrationDB() {
			return d.hd.awaitCheck() // checked on the engine after the held migration
		}
		return ck.sqlite(ctx, db)
	})
	if err != nil {
		return fmt.Errorf("candidate %q: sqlite %q: %s; %s", d.cand.Name, db.Name, err, d.stillServing())
	}
	return nil
}

// sqlite seeds the candidate's database when it is empty, then runs quick_check on a copy of
// it, taken while the candidate is paused so that the copy is consistent.
func (ck *checks) sqlite(ctx context.Context, db *config.SQLite) error {
	d := ck.d
	rn, cand := d.rn, d.cand
	file := path.Join(d.s.Volume(db.Volume).Target, db.Path)
	dir, err := os.MkdirTemp(rn.TempDir, "deployer-sqlite-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	copyOut := func() (string, error) {
		if err := rn.Runtime.Pause(ctx, cand.ID); err != nil {
			return "", err
		}
		defer rn.Runtime.Unpause(context.WithoutCancel(ctx), cand.ID)
		local := filepath.Join(dir, "db")
		found, err := rn.hp.copyFile(ctx, cand.ID, file, local)
		if err != nil || !found {
			return "", err
		}
		if _, err := rn.hp.copyFile(ctx, cand.ID, file+"-wal", local+"-wal"); err != nil {
			return "", err
		}
		return local, nil
	}
	local, err := copyOut()
	if err != nil {
		return err
	}
	empty := local == ""
	if !empty {
		// A database that cannot be read is not empty: quick_check says what is wrong with it.
		empty, _ = backup.Empty(ctx, local)
	}
	if empty {
		if len(db.SeedIfEmpty) == 0 {
			if local == "" {
				return fmt.Errorf("%s does not exist in the candidate: check sqlite.path, or set seed_if_empty to create it", file)
			}
			return nil // empty and nothing to seed it with: a new database is ok
		}
		seed := config.SQLiteAttr(db.Name, config.SQLiteSeedIfEmpty)
		rn.log(d.s.Name, plan.StepKind(plan.StepName(plan.StepSQLite, db.Name)), "%s is empty: seeding with `%s`", file, rn.red.Command(d.s.Name, seed, db.SeedIfEmpty))
		if _, err := ck.oneOff(ctx, plan.StepKind(plan.StepName(plan.StepHook, "seed")), "seed", seed, db.SeedIfEmpty, hookTimeout); err != nil {
			return fmt.Errorf("seed_if_empty: %w", err)
		}
		os.Remove(filepath.Join(dir, "db-wal"))
		if local, err = copyOut(); err != nil {
			return err
		}
		if local == "" {
			return fmt.Errorf("seed_if_empty `%s` exited 0 but %s still does not exist", rn.red.Command(d.s.Name, seed, db.SeedIfEmpty), file)
		}
	}
	if !db.QuickCheck {
		return nil
	}
	if err := backup.QuickCheck(ctx, local); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	return nil
}

// openFile streams one regular file out of a container (the engine's copy API sends a tar of
// it); ErrNotFound when it does not exist.
func (hp *helpers) openFile(ctx context.Context, id, file string) (io.ReadCloser, error) {
	rn := hp.rn
	rc, err := rn.Runtime.CopyFrom(ctx, id, file)
	if err != nil {
		return nil, err
	}
	tr := tar.NewReader(rc)
	hdr, err := tr.Next()
	if err != nil {
		rc.Close()
		return nil, fmt.Errorf("copy %s: %w", file, err)
	}
	if hdr.Typeflag != tar.TypeReg {
		rc.Close()
		return nil, fmt.Errorf("%s is not a regular file", file)
	}
	return struct {
		io.Reader
		io.Closer
	}{io.LimitReader(tr, hdr.Size), rc}, nil
}

// copyFile copies one file out of a container; found is false when it does not exist.
func (hp *helpers) copyFile(ctx context.Context, id, file, local string) (bool, error) {
	rc, err := hp.openFile(ctx, id, file)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer rc.Close()
	f, err := os.Create(local)
	if err != nil {
		return false, err
	}
	_, err = io.Copy(f, rc)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err == nil, err
}
