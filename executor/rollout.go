package executor

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/deployer-dev/deployer/config"
)

// A rollout is one service's deploy on several engines, all or nothing. Each engine runs its
// own sequence; the rollout is where they wait for each other:
//   - no engine switches before every engine's candidate passed its checks;
//   - the engines switch in batches, in the order the service lists them, a batch only once
//     every earlier one was verified and watched for rollout.wait;
//   - an engine that fails anywhere makes every engine that switched in this apply go back to
//     its previous release, and the ones that did not switch never do;
//   - the clean-up (retiring the old releases) waits until every engine has verified.
//
// Engines with nothing to do for the service (the release already runs there) are not part of
// it. An engine whose sequence ends without reaching a point counts as failed there.
type rollout struct {
	order []string // the engines that deploy, in the service's order
	batch int
	wait  time.Duration

	// The image: built (or found) on one engine and sent to the others that lack it.
	imageFrom string

	mu       sync.Mutex
	changed  chan struct{} // closed and replaced at every change
	ready    map[string]bool
	verified map[string]bool
	ended    map[string]bool
	abort    error // the first failure, named with its engine
	img      *sharedImage
}

// gate is what a service's deployment on one engine asks of the other engines that deploy it
// in the same apply, at the points where a rollout makes them wait for each other. A rollout
// answers as one of its engines (rolloutOn); a service that deploys on this engine alone has
// the solo gate, which answers at once.
type gate interface {
	// receivesFrom is the engine whose image this one receives, "" when it resolves its own.
	receivesFrom() string
	awaitImage(ctx context.Context) (*sharedImage, error)
	publishImage(id, contextHash string, err error)
	mayCutover(ctx context.Context) error
	// watchFor is how long a switched release is watched before the rollout goes on.
	watchFor() time.Duration
	verified(ctx context.Context, verr error) error
	ended(err error)
	settled(ctx context.Context) error
}

// gateOf is the gate of a service's deployment on this engine: its rollout, or solo (never a
// nil *rollout, which in a gate would not be nil).
func (a *Applier) gateOf(service string) gate {
	if ro := a.rollouts[service]; ro != nil {
		return rolloutOn{ro, a.engine}
	}
	return solo{}
}

// solo is the gate of a service that deploys on this engine alone: nothing to wait for.
type solo struct{}

func (solo) receivesFrom() string { return "" }
func (solo) awaitImage(context.Context) (*sharedImage, error) {
	return nil, errors.New("no other engine deploys the service")
}
func (solo) publishImage(string, string, error)    {}
func (solo) mayCutover(context.Context) error      { return nil }
func (solo) watchFor() time.Duration               { return 0 }
func (solo) verified(context.Context, error) error { return nil }
func (solo) ended(error)                           {}
func (solo) settled(context.Context) error         { return nil }

// rolloutOn is a rollout as one of its engines asks it.
type rolloutOn struct {
	ro     *rollout
	engine string
}

func (g rolloutOn) receivesFrom() string {
	if g.ro.imageFrom == g.engine {
		return ""
	}
	return g.ro.imageFrom
}

func (g rolloutOn) watchFor() time.Duration { return g.ro.wait }

// sharedImage is the image the source engine resolved.
type sharedImage struct {
	id, contextHash string
	err             error
}

func newRollout(s *config.Service, order []string, imageFrom string) *rollout {
	return &rollout{order: order, batch: s.Rollout.BatchSize(len(order)), wait: s.Rollout.Wait, imageFrom: imageFrom,
		changed: make(chan struct{}), ready: map[string]bool{}, verified: map[string]bool{}, ended: map[string]bool{}}
}

// batchOf is the batch an engine switches in (0 first).
func (ro *rollout) batchOf(engine string) int {
	for i, e := range ro.order {
		if e == engine {
			return i / ro.batch
		}
	}
	return 0
}

// Batches are the engines in the batches they switch in.
func (ro *rollout) batches() [][]string {
	var out [][]string
	for i, e := range ro.order {
		if i%ro.batch == 0 {
			out = append(out, nil)
		}
		out[len(out)-1] = append(out[len(out)-1], e)
	}
	return out
}

// broadcast wakes every waiter; called with ro.mu held.
func (ro *rollout) broadcast() {
	close(ro.changed)
	ro.changed = make(chan struct{})
}

// await waits until cond holds or ctx ends; cond is called with ro.mu held.
func (ro *rollout) await(ctx context.Context, cond func() bool) error {
	for {
		ro.mu.Lock()
		if cond() {
			ro.mu.Unlock()
			return nil
		}
		ch := ro.changed
		ro.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// until waits until ok holds for every engine of the rollout, or the rollout fails: it returns
// the failure (abort), or ctx's error. ok is called with ro.mu held.
func (ro *rollout) until(ctx context.Context, ok func(engine string) bool) (abort, err error) {
	err = ro.await(ctx, func() bool {
		if ro.abort != nil {
			abort = ro.abort
			return true
		}
		for _, e := range ro.order {
			if !ok(e) {
				return false
			}
		}
		return true
	})
	return abort, err
}

// fail records the first failure; called with ro.mu held.
func (ro *rollout) fail(engine, what string, err error) {
	if ro.abort == nil {
		ro.abort = fmt.Errorf("%s on engine %s: %v", what, engine, err)
	}
	ro.broadcast()
}

// mayCutover blocks until the engine's batch may switch: every candidate is checked and every
// earlier batch verified. An error means it must not switch.
func (g rolloutOn) mayCutover(ctx context.Context) error {
	ro, engine := g.ro, g.engine
	ro.mu.Lock()
	ro.ready[engine] = true
	ro.broadcast()
	ro.mu.Unlock()
	b := ro.batchOf(engine)
	abort, err := ro.until(ctx, func(e string) bool { return ro.ready[e] && (ro.batchOf(e) >= b || ro.verified[e]) })
	if err != nil {
		return fmt.Errorf("interrupted while waiting for the other engines: %w", err)
	}
	if abort != nil {
		return fmt.Errorf("not switched, all or nothing: %w", abort)
	}
	return nil
}

// verified reports an engine's verification (and watch); when it passed, it blocks until every
// engine has verified, and returns an error when another failed meanwhile: this engine must
// go back to its previous release.
func (g rolloutOn) verified(ctx context.Context, verr error) error {
	ro, engine := g.ro, g.engine
	ro.mu.Lock()
	if verr != nil {
		ro.fail(engine, "release failed after cutover", verr)
		ro.mu.Unlock()
		return nil
	}
	ro.verified[engine] = true
	ro.broadcast()
	ro.mu.Unlock()
	abort, err := ro.until(ctx, func(e string) bool { return ro.verified[e] })
	if err != nil {
		return fmt.Errorf("interrupted while the other engines switched: %w", err)
	}
	return abort
}

// settled waits until every engine of the rollout has verified: nil then, else the failure.
func (g rolloutOn) settled(ctx context.Context) error {
	ro := g.ro
	abort, err := ro.until(ctx, func(e string) bool { return ro.verified[e] || ro.ended[e] })
	if err != nil {
		return err
	}
	return abort
}

// ended records the end of an engine's sequence for the service: one that ends with an error
// before its cutover fails the rollout; one that ends well without reaching it had nothing to
// deploy, and counts as switched and verified.
func (g rolloutOn) ended(err error) {
	ro, engine := g.ro, g.engine
	ro.mu.Lock()
	defer ro.mu.Unlock()
	if ro.ended[engine] || !slices.Contains(ro.order, engine) {
		return // done already, or not part of the rollout (nothing to deploy there)
	}
	ro.ended[engine] = true
	if engine == ro.imageFrom && ro.img == nil {
		e := err
		if e == nil {
			e = fmt.Errorf("engine %s ended without an image", engine)
		}
		ro.img = &sharedImage{err: e}
	}
	switch {
	case err != nil && !ro.verified[engine]:
		what := "the candidate failed"
		if ro.ready[engine] {
			what = "the cutover failed"
		}
		ro.fail(engine, what, errors.New(firstLine(err.Error()))) // the others' messages: one line
	case err == nil && !ro.ready[engine]:
		ro.ready[engine], ro.verified[engine] = true, true
	}
	ro.broadcast()
}

// publishImage is the source engine's image, for the others (nothing on another engine).
func (g rolloutOn) publishImage(id, contextHash string, err error) {
	ro := g.ro
	if g.engine != ro.imageFrom {
		return
	}
	ro.mu.Lock()
	defer ro.mu.Unlock()
	if ro.img == nil {
		ro.img = &sharedImage{id: id, contextHash: contextHash, err: err}
		ro.broadcast()
	}
}

// awaitImage waits for the source engine's image.
func (g rolloutOn) awaitImage(ctx context.Context) (*sharedImage, error) {
	ro := g.ro
	var img *sharedImage
	err := ro.await(ctx, func() bool {
		img = ro.img
		return img != nil
	})
	return img, err
}

// engineDone ends what an engine did not end itself: its whole apply stopped (an error outside
// the service, an interruption).
func (ro *rollout) engineDone(engine string, err error) {
	if err == nil {
		err = fmt.Errorf("its apply ended before the service")
	}
	rolloutOn{ro, engine}.ended(err) // nothing when the engine's sequence ended itself
}
