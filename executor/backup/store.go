// Package backup takes, lists, verifies and restores backups of a service's volumes. A backup is
// a directory of objects in a Store (S3, or a local directory as the embedded default): one
// compressed tar archive per volume, the live release's logs, and a manifest written last, so a
// backup without a manifest is incomplete and never offered. It is the only package that
// imports the AWS SDK.
package backup

import (
	"context"
	"errors"
	"io"
	"time"
)

// Store is where backups live: a flat space of keys, like a bucket.
type Store interface {
	// Put streams r to key. On an error nothing is visible at key (a multipart upload is
	// aborted, a local temp file removed).
	Put(ctx context.Context, key string, r io.Reader) error
	// Get opens key; ErrNotFound when it does not exist.
	Get(ctx context.Context, key string) (io.ReadCloser, error)
	// List returns the objects whose keys start with prefix, sorted by key.
	List(ctx context.Context, prefix string) ([]Object, error)
	// Delete removes keys; missing ones are not an error.
	Delete(ctx context.Context, keys ...string) error
	// check fails when the store cannot be used (bucket missing, credentials refused, endpoint
	// down), before anything is paused or written.
	Check(ctx context.Context) error
	// String names the store for messages, e.g. s3://bucket/prefix or /srv/backups.
	String() string
}

// Object is one stored object.
type Object struct {
	Key      string
	Size     int64
	Modified time.Time
	// listed is where a local store found it (nil for other stores): a prune reads the
	// manifest and deletes the objects of a backup only there.
	listed *listedAt
}

// listedStore is a store that can read and delete an object where its listing found it, and
// refuses to when something else is at its key now (a local store, whose directories someone
// may rename between the listing and the delete).
type listedStore interface {
	getListed(ctx context.Context, o Object) (io.ReadCloser, error)
	deleteListed(ctx context.Context, objs []Object) error
}

// getObject opens a listed object: where it was listed, when the store can tell.
func getObject(ctx context.Context, store Store, o Object) (io.ReadCloser, error) {
	if ls, ok := store.(listedStore); ok {
		return ls.getListed(ctx, o)
	}
	return store.Get(ctx, o.Key)
}

// deleteObjects deletes listed objects: where they were listed, when the store can tell.
func deleteObjects(ctx context.Context, store Store, objs []Object) error {
	if ls, ok := store.(listedStore); ok {
		return ls.deleteListed(ctx, objs)
	}
	keys := make([]string, len(objs))
	for i, o := range objs {
		keys[i] = o.Key
	}
	return store.Delete(ctx, keys...)
}

// exposer is a store that can say which of its directories others can change.
type exposer interface {
	exposed(prefix string) []string
}

// identified is a store with an identity a signature binds (an S3 bucket and prefix): a
// backup signed for one store is not genuine in another that has the same signing key.
type identified interface {
	identity() string
}

// storeIdentity is what a manifest's signature binds of its store: an S3 bucket and prefix,
// "local" for a local directory (which may move with the project).
func storeIdentity(store Store) string {
	if s, ok := store.(identified); ok {
		return s.identity()
	}
	return ""
}

// ErrNotFound is returned for a key that does not exist.
var ErrNotFound = errors.New("not found")
