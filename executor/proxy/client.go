// The control client: requests to a proxy container's control, sent over the engine (docker exec).

package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/deployer-dev/deployer/executor/engine"
)

// ctlSessions are the open `deployer proxy ctl -` execs into one proxy container. Each docker
// exec costs the engine a process start in the container (tens of milliseconds of CPU, more
// on a busy host); a session pays it once per run. A request takes an idle session, or opens
// one, and gives it back once answered; one that failed or was interrupted is closed.
type Sessions struct {
	mu     sync.Mutex
	id     string // the proxy container the idle sessions run in
	idle   []*ctlSession
	none   bool // that proxy's deployer is too old for sessions: one exec per request
	closed bool // the run has ended: no more sessions
}

// ctlSession is one `deployer proxy ctl -` in the proxy container: a request per line written,
// an answer per line read.
type ctlSession struct {
	io.ReadWriteCloser
	lines chan ctlLine // the answers, read as they come; closed when the exec ends
	done  chan struct{}
	once  sync.Once
}

type ctlLine struct {
	b   []byte
	err error
}

// openCtlSession starts a session and waits for its ready line. A proxy's deployer too old for
// sessions exits without one: nil, and no error.
func openCtlSession(ctx context.Context, rt engine.Runtime, id string) (*ctlSession, error) {
	rw, err := rt.ExecSession(ctx, id, []string{"/deployer", "proxy", "ctl", SessionArg})
	if err != nil {
		return nil, err
	}
	s := &ctlSession{ReadWriteCloser: rw, lines: make(chan ctlLine, 1), done: make(chan struct{})}
	go func() {
		defer close(s.lines)
		r := bufio.NewReader(rw)
		for {
			b, err := r.ReadBytes('\n')
			select {
			case s.lines <- ctlLine{b: b, err: err}:
			case <-s.done:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	resp, err := s.answer(ctx)
	if err != nil || !resp.OK {
		s.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, nil
	}
	return s, nil
}

// Exec sends one request to the control of the proxy in container id through a docker exec of
// its own: for a proxy whose deployer has no sessions, and for one-off requests.
func Exec(ctx context.Context, rt engine.Runtime, id string, req Request) (*Response, error) {
	b, _ := json.Marshal(req)
	out, code, err := rt.Exec(ctx, id, []string{"/deployer", "proxy", "ctl", string(b)})
	if err != nil {
		return nil, err
	}
	if code != 0 {
		return nil, fmt.Errorf("proxy: %s", strings.TrimSpace(out))
	}
	resp, err := decodeAnswer([]byte(out))
	if err != nil {
		return nil, err
	}
	return failed(resp)
}

// decodeAnswer reads the proxy's answer to one request, from an exec or a session.
func decodeAnswer(b []byte) (*Response, error) {
	var resp Response
	if err := json.Unmarshal(b, &resp); err != nil {
		return nil, fmt.Errorf("proxy answered %q: %w", strings.TrimSpace(string(b)), err)
	}
	return &resp, nil
}

// failed returns an answer that says its request failed with that as the error.
func failed(resp *Response) (*Response, error) {
	if !resp.OK && resp.Error != "" {
		return resp, errors.New(resp.Error)
	}
	return resp, nil
}

// send sends one request to the proxy in container id: on a session, or, to a proxy whose
// deployer has none, through one docker exec of its own.
func (cs *Sessions) Send(ctx context.Context, rt engine.Runtime, id string, req Request) (*Response, error) {
	s, err := cs.take(ctx, rt, id)
	if err != nil {
		return nil, err
	}
	if s == nil {
		return Exec(ctx, rt, id, req)
	}
	resp, err := s.do(ctx, req)
	if err != nil {
		s.Close()
		return nil, err
	}
	cs.put(id, s)
	return failed(resp)
}

// close ends the sessions; a request after it has an exec of its own.
func (cs *Sessions) Close() {
	cs.Reset("")
	cs.mu.Lock()
	cs.closed = true
	cs.mu.Unlock()
}

// reset closes the idle sessions, and makes the next ones for container id.
func (cs *Sessions) Reset(id string) {
	cs.mu.Lock()
	idle := cs.idle
	cs.id, cs.idle, cs.none = id, nil, false
	cs.mu.Unlock()
	for _, s := range idle {
		s.Close()
	}
}

// take returns an idle session into container id or a new one; nil (and no error) when that
// proxy has no sessions.
func (cs *Sessions) take(ctx context.Context, rt engine.Runtime, id string) (*ctlSession, error) {
	cs.mu.Lock()
	if cs.id != id {
		cs.mu.Unlock()
		cs.Reset(id)
		cs.mu.Lock()
	}
	if cs.none || cs.closed {
		cs.mu.Unlock()
		return nil, nil
	}
	if n := len(cs.idle); n > 0 {
		s := cs.idle[n-1]
		cs.idle = cs.idle[:n-1]
		cs.mu.Unlock()
		if !s.ended() {
			return s, nil
		}
		s.Close()
		return cs.take(ctx, rt, id)
	}
	cs.mu.Unlock()
	s, err := openCtlSession(ctx, rt, id)
	if err != nil {
		return nil, err
	}
	if s == nil {
		cs.mu.Lock()
		if cs.id == id {
			cs.none = true
		}
		cs.mu.Unlock()
	}
	return s, nil
}

// put gives a session back for the next request (take checks it is still of use); one into
// another container than the sessions' now is closed.
func (cs *Sessions) put(id string, s *ctlSession) {
	cs.mu.Lock()
	if cs.id == id {
		cs.idle = append(cs.idle, s)
		s = nil
	}
	cs.mu.Unlock()
	if s != nil {
		s.Close()
	}
}

// Close ends the exec's stdin (the proxy's side then exits) and the reading.
func (s *ctlSession) Close() error {
	s.once.Do(func() {
		close(s.done)
		s.ReadWriteCloser.Close()
	})
	return nil
}

// do sends one request and waits for its answer.
func (s *ctlSession) do(ctx context.Context, req Request) (*Response, error) {
	b, _ := json.Marshal(req)
	if _, err := s.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	return s.answer(ctx)
}

func (s *ctlSession) answer(ctx context.Context) (*Response, error) {
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case l, ok := <-s.lines:
		if !ok || l.err != nil {
			if !ok || l.err == io.EOF {
				return nil, errors.New("proxy: the control session ended")
			}
			return nil, fmt.Errorf("proxy: %w", l.err)
		}
		return decodeAnswer(l.b)
	}
}

// ended reports whether an idle session is of no more use: its exec has ended, or (which a
// session used in turn never sees) it holds an answer nobody asked for.
func (s *ctlSession) ended() bool {
	select {
	case <-s.lines:
		return true
	default:
		return false
	}
}
