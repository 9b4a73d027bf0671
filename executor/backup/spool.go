package backup

import (
	"io"
	"os"
	"sync"
)

// spoolFile is a file being written by one goroutine and read, as it grows, by another: the
// copy out of a paused container fills it at disk speed while compression and upload follow
// behind, so the pause lasts only as long as the copy and the whole backup about as long as the
// slower of the two.
type spoolFile struct {
	path    string
	mu      sync.Mutex
	cond    *sync.Cond
	written int64
	done    bool
	err     error
}

func newSpoolFile(path string) *spoolFile {
	s := &spoolFile{path: path}
	s.cond = sync.NewCond(&s.mu)
	return s
}

// fill copies r into the file, publishing progress to readers; it records how it ended.
func (s *spoolFile) fill(r io.Reader, progress func(int64)) error {
	f, err := os.Create(s.path)
	if err != nil {
		s.finish(err)
		return err
	}
	buf := make([]byte, 1<<20)
	var total int64
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
			if _, err := f.Write(buf[:n]); err != nil {
				f.Close()
				s.finish(err)
				return err
			}
			total += int64(n)
			s.mu.Lock()
			s.written = total
			s.mu.Unlock()
			s.cond.Broadcast()
			if progress != nil {
				progress(total)
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			f.Close()
			s.finish(rerr)
			return rerr
		}
	}
	err = f.Close()
	s.finish(err)
	return err
}

func (s *spoolFile) finish(err error) {
	s.mu.Lock()
	s.done, s.err = true, err
	s.mu.Unlock()
	s.cond.Broadcast()
}

// fail ends the file with an error for its readers (the copy never started).
func (s *spoolFile) fail(err error) { s.finish(err) }

// reader reads the file as it grows, to its end once the writer is done.
func (s *spoolFile) reader() (io.ReadCloser, error) {
	s.mu.Lock()
	for s.written == 0 && !s.done {
		s.cond.Wait() // the file exists once the first bytes are published
	}
	err := s.err
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	f, err := os.Open(s.path)
	if err != nil {
		return nil, err
	}
	return &spoolReader{s: s, f: f}, nil
}

type spoolReader struct {
	s   *spoolFile
	f   *os.File
	off int64
}

func (r *spoolReader) Read(p []byte) (int, error) {
	r.s.mu.Lock()
	for r.off >= r.s.written && !r.s.done {
		r.s.cond.Wait()
	}
	avail, done, err := r.s.written-r.off, r.s.done, r.s.err
	r.s.mu.Unlock()
	if avail <= 0 {
		if err != nil {
			return 0, err
		}
		if done {
			return 0, io.EOF
		}
	}
	if int64(len(p)) > avail {
		p = p[:avail]
	}
	n, rerr := r.f.Read(p)
	r.off += int64(n)
	if rerr == io.EOF && n > 0 {
		rerr = nil
	}
	return n, rerr
}

func (r *spoolReader) Close() error { return r.f.Close() }
