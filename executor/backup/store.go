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
	// Check fails when the store cannot be used (bucket missing, credentials refused, endpoint
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
}

// ErrNotFound is returned for a key that does not exist.
var ErrNotFound = errors.New("not found")
