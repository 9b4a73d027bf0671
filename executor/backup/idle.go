package backup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// storeIdle is how long a request to an S3 store may go without a byte moving either way
// (the request's body read, the response's headers or body received) before it is cut: a
// variable for tests.
var storeIdle = 60 * time.Second

// ErrStoreSilent is the cause of a request cut because the store stopped answering.
var ErrStoreSilent = errors.New("the store sent nothing")

// idleClient cuts a request that makes no progress for idle: an endpoint that sends part of
// an object and then nothing (or never reads an upload) fails the call instead of hanging it.
type idleClient struct {
	inner aws.HTTPClient
	idle  time.Duration
}

func (c *idleClient) Do(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancelCause(req.Context())
	w := &watchdog{cancel: cancel, idle: c.idle}
	w.timer = time.AfterFunc(c.idle, w.fire)
	req = req.WithContext(ctx)
	if req.Body != nil && req.Body != http.NoBody {
		req.Body = &watchedBody{ReadCloser: req.Body, w: w}
	}
	resp, err := c.inner.Do(req)
	if err != nil {
		w.stop()
		cancel(nil)
		return nil, w.explain(err)
	}
	w.touch()
	resp.Body = &watchedBody{ReadCloser: resp.Body, w: w, done: func() { w.stop(); cancel(nil) }}
	return resp, nil
}

// watchdog cancels a request once it has been idle for its duration.
type watchdog struct {
	mu     sync.Mutex
	timer  *time.Timer
	idle   time.Duration
	fired  bool
	cancel context.CancelCauseFunc
}

func (w *watchdog) fire() {
	w.mu.Lock()
	w.fired = true
	w.mu.Unlock()
	w.cancel(fmt.Errorf("%w for %s", ErrStoreSilent, w.idle))
}

func (w *watchdog) touch() {
	w.mu.Lock()
	if !w.fired {
		w.timer.Reset(w.idle)
	}
	w.mu.Unlock()
}

func (w *watchdog) stop() { w.timer.Stop() }

// explain names the silence as the cause of an error it provoked.
func (w *watchdog) explain(err error) error {
	w.mu.Lock()
	fired := w.fired
	w.mu.Unlock()
	if fired && err != nil {
		return fmt.Errorf("%w for %s (%v)", ErrStoreSilent, w.idle, err)
	}
	return err
}

// watchedBody is a request's or a response's body: each read that moves bytes resets the
// watchdog; the end of a response's body stops it.
type watchedBody struct {
	io.ReadCloser
	w    *watchdog
	done func()
	once sync.Once
}

func (b *watchedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.w.touch()
	}
	if err != nil && err != io.EOF {
		err = b.w.explain(err)
	}
	return n, err
}

func (b *watchedBody) Close() error {
	err := b.ReadCloser.Close()
	if b.done != nil {
		b.once.Do(b.done)
	}
	return err
}
