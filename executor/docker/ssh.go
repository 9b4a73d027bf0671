package docker

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// An engine at ssh://[user@]host[:port] is reached as the docker CLI reaches it: each connection
// is `ssh ... host docker system dial-stdio`, whose standard input and output carry the API. The
// host needs the docker CLI and the user access to the engine; nothing listens on the network
// but sshd. DEPLOYER_SSH_COMMAND replaces `ssh` (e.g. "ssh -i deploy_key -o
// StrictHostKeyChecking=accept-new"), as GIT_SSH_COMMAND does for git. A host that stops
// answering ends its connections within the engine bound (DEPLOYER_ENGINE_TIMEOUT, 30s, by
// ServerAliveInterval), so a call fails instead of hanging, as a tcp:// engine's (watchdog.go).

// sshTarget is where an ssh:// engine address leads.
type sshTarget struct {
	user, host, port string
}

func parseSSH(host string) (*sshTarget, error) {
	u, err := url.Parse(host)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "ssh" {
		return nil, fmt.Errorf("not an ssh:// address: %s", host)
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("%s names no host: write ssh://user@host", host)
	}
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" {
		return nil, fmt.Errorf("%s: an ssh:// engine address is ssh://[user@]host[:port], without a path", host)
	}
	if _, hasPass := u.User.Password(); hasPass {
		return nil, fmt.Errorf("%s: no password in the address; use a key (ssh-agent, or -i in DEPLOYER_SSH_COMMAND)", redactURL(u))
	}
	return &sshTarget{user: u.User.Username(), host: u.Hostname(), port: u.Port()}, nil
}

func redactURL(u *url.URL) string {
	c := *u
	c.User = url.User(u.User.Username())
	return c.String()
}

// command is the ssh command line that opens one connection to the engine.
// DEPLOYER_SSH_COMMAND is split as a shell splits words, so a key path with a space can be
// quoted ("ssh -i '/home/ci/deploy key'").
func (t *sshTarget) command() ([]string, error) {
	args, err := shellWords(os.Getenv("DEPLOYER_SSH_COMMAND"))
	if err != nil {
		return nil, fmt.Errorf("DEPLOYER_SSH_COMMAND: %v", err)
	}
	if len(args) == 0 {
		args = []string{"ssh"}
	}
	// Never wait for a password prompt; give up on a host that does not answer within half the
	// engine bound (DEPLOYER_ENGINE_TIMEOUT, 30s: 15s), and on a connection whose host has
	// stopped answering for the bound (10s x 3; a host that hangs, a network cut mid-apply:
	// without these an API call waits for TCP, many minutes). Options in DEPLOYER_SSH_COMMAND
	// come first, and so win.
	bound, err := EngineTimeout()
	if err != nil {
		return nil, err
	}
	secs := func(d time.Duration) string { return strconv.Itoa(max(int(d/time.Second), 1)) }
	args = append(args, "-o", "BatchMode=yes", "-o", "ConnectTimeout="+secs(bound/2), "-o", "ServerAliveInterval="+secs(bound/3), "-o", "ServerAliveCountMax=3")
	if t.user != "" {
		args = append(args, "-l", t.user)
	}
	if t.port != "" {
		args = append(args, "-p", t.port)
	}
	return append(args, "--", t.host, "docker", "system", "dial-stdio"), nil
}

// dial starts one ssh process and returns its standard input and output as a connection.
func (t *sshTarget) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	args, err := t.command()
	if err != nil {
		return nil, err
	}
	// Not CommandContext: the connection outlives the dial's context (the client pools it).
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	// Not StdoutPipe: Wait closes that pipe, racing the reads of what ssh wrote last (a read
	// then fails with "file already closed" instead of ending with what ssh said). Wait
	// returns once all of its output is copied into this one.
	stdout, stdoutW := io.Pipe()
	cmd.Stdout = stdoutW
	c := &cmdConn{cmd: cmd, stdin: stdin, stdout: stdout, target: t}
	cmd.Stderr = &c.stderr
	c.exited = make(chan struct{})
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("ssh to the engine: %w", err)
	}
	go func() {
		c.waitErr = cmd.Wait()
		close(c.exited)
		stdoutW.Close()
	}()
	return c, nil
}

// cmdConn is a connection over a process's standard input and output.
type cmdConn struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	stdout  io.ReadCloser
	stderr  tailBuffer
	target  *sshTarget
	exited  chan struct{}
	waitErr error
	once    sync.Once
}

func (c *cmdConn) Read(p []byte) (int, error) {
	n, err := c.stdout.Read(p)
	if err == io.EOF && n == 0 {
		// What ssh said is copied from its stderr until the process is waited for: wait, so
		// that the reason it gave up is there.
		select {
		case <-c.exited:
		case <-time.After(time.Second):
		}
		if msg := strings.TrimSpace(c.stderr.String()); msg != "" {
			return 0, fmt.Errorf("ssh %s: %s", c.target.host, msg)
		}
	}
	return n, err
}

func (c *cmdConn) Write(p []byte) (int, error) { return c.stdin.Write(p) }

// CloseWrite ends the request stream (an attach or exec that is done sending).
func (c *cmdConn) CloseWrite() error { return c.stdin.Close() }

// Close ends the ssh process at once, as the docker CLI does, rather than trusting the remote
// `docker system dial-stdio` to exit when its input ends (it does, in about 5 ms here; a hung
// host would otherwise hold the deployer's exit).
func (c *cmdConn) Close() error {
	c.once.Do(func() {
		c.stdin.Close()
		c.cmd.Process.Kill()
		select {
		case <-c.exited:
		case <-time.After(2 * time.Second):
		}
	})
	return nil
}

func (c *cmdConn) LocalAddr() net.Addr                { return sshAddr("local") }
func (c *cmdConn) RemoteAddr() net.Addr               { return sshAddr(c.target.host) }
func (c *cmdConn) SetDeadline(t time.Time) error      { return nil }
func (c *cmdConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *cmdConn) SetWriteDeadline(t time.Time) error { return nil }

type sshAddr string

func (a sshAddr) Network() string { return "ssh" }
func (a sshAddr) String() string  { return string(a) }

// tailBuffer keeps the last 2 KiB written to it: what ssh said before it gave up, what an
// exec session said on stderr before it ended.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) > 2048 {
		b.buf = b.buf[len(b.buf)-2048:]
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

// shellWords splits a command line as a POSIX shell splits words: blanks separate them, single
// quotes keep everything, double quotes keep everything but \ before " \ $ and `, and a
// backslash outside quotes keeps the next character. Nothing is expanded.
func shellWords(s string) ([]string, error) {
	var out []string
	var cur strings.Builder
	inWord := false
	const (
		none = iota
		single
		double
	)
	quote := none
	rs := []rune(s)
	for i := 0; i < len(rs); i++ {
		r := rs[i]
		switch {
		case quote == single:
			if r == '\'' {
				quote = none
			} else {
				cur.WriteRune(r)
			}
		case quote == double:
			switch {
			case r == '"':
				quote = none
			case r == '\\' && i+1 < len(rs) && strings.ContainsRune(`"\\$`+"`", rs[i+1]):
				i++
				cur.WriteRune(rs[i])
			default:
				cur.WriteRune(r)
			}
		case r == '\'':
			quote, inWord = single, true
		case r == '"':
			quote, inWord = double, true
		case r == '\\':
			if i+1 < len(rs) {
				i++
				cur.WriteRune(rs[i])
			}
			inWord = true
		case r == ' ' || r == '\t' || r == '\n':
			if inWord {
				out = append(out, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quote != none {
		return nil, fmt.Errorf("a quote is not closed in %q", s)
	}
	if inWord {
		out = append(out, cur.String())
	}
	return out, nil
}
