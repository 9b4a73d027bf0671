package dockertest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// SSHD runs an sshd on 127.0.0.1 that lets the current user in with a key made for the test,
// and returns the engine address that reaches this machine's engine through it and the ssh
// command (for DEPLOYER_SSH_COMMAND) that uses the key. Without sshd the test fails when CI is
// set (.ci/run installs openssh-server) and is skipped otherwise.
func SSHD(t testing.TB) (host, sshCommand string) {
	t.Helper()
	host, sshCommand, _ = startSSHD(t, "127.0.0.1", nil, "")
	return host, sshCommand
}

// FreezableSSHD is SSHD, and freeze stops (SIGSTOP) the sshd and every process under it, its
// sessions and the `docker system dial-stdio` they run: a host that hangs, neither answering
// nor closing its connections. thaw (also run at the test's end) lets them go on.
func FreezableSSHD(t testing.TB) (host, sshCommand string, freeze func() (thaw func())) {
	t.Helper()
	host, sshCommand, pid := startSSHD(t, "127.0.0.1", nil, "")
	return host, sshCommand, freezer(t, pid)
}

// freezer stops the process pid and everything under it, when called; what it returns (also
// run at the test's end) lets them go on.
func freezer(t testing.TB, pid int) func() (thaw func()) {
	return func() func() {
		var stopped []int
		thaw := func() {
			for _, p := range stopped {
				syscall.Kill(p, syscall.SIGCONT)
			}
			stopped = nil
		}
		t.Cleanup(thaw)
		for _, p := range processTree(pid) {
			if syscall.Kill(p, syscall.SIGSTOP) == nil {
				stopped = append(stopped, p)
			}
		}
		return thaw
	}
}

// processTree is pid and every process under it.
func processTree(pid int) []int {
	children := map[int][]int{}
	for _, p := range Processes() {
		children[p.Parent] = append(children[p.Parent], p.PID)
	}
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

// Process is one process of this machine, as /proc/PID/stat shows it.
type Process struct {
	PID, Parent int
	Name        string
	CPU         float64 // seconds: its user and system time, and its waited-for children's
}

// Processes lists this machine's processes.
func Processes() []Process {
	var out []Process
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // exited meanwhile
		}
		s := string(b)
		i, j := strings.Index(s, "("), strings.LastIndex(s, ")")
		if i < 0 || j < i {
			continue
		}
		f := strings.Fields(s[j+1:]) // state, ppid, ...: utime is the 12th
		if len(f) < 15 {
			continue
		}
		p := Process{PID: pid, Name: s[i+1 : j]}
		p.Parent, _ = strconv.Atoi(f[1])
		for _, k := range []int{11, 12, 13, 14} { // utime, stime, cutime, cstime
			n, _ := strconv.ParseFloat(f[k], 64)
			p.CPU += n / 100 // USER_HZ
		}
		out = append(out, p)
	}
	return out
}

// startSSHD runs an sshd listening on ip, its command line after prefix (nsenter into a
// namespace), with DOCKER_HOST set to dockerHost in its sessions when given; pid is its
// process's.
func startSSHD(t testing.TB, ip string, prefix []string, dockerHost string) (host, sshCommand string, pid int) {
	t.Helper()
	sshd, err := exec.LookPath("sshd")
	if err != nil {
		sshd = "/usr/sbin/sshd"
		if _, err := os.Stat(sshd); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatal("no sshd: .ci/run installs openssh-server for the ssh:// engine tests")
			}
			t.Skip("no sshd (install openssh-server)")
		}
	}
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	if u.Uid == "0" {
		os.MkdirAll("/run/sshd", 0o755) // sshd's privilege separation directory
	}
	dir := t.TempDir()
	for _, k := range []string{"host_key", "client_key"} {
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, k)).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v: %s", err, out)
		}
	}
	pub, _ := os.ReadFile(filepath.Join(dir, "client_key.pub"))
	os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600)
	port := FreePort(t)
	cfg := fmt.Sprintf(`Port %d
ListenAddress %s
HostKey %[3]s/host_key
AuthorizedKeysFile %[3]s/authorized_keys
PidFile %[3]s/sshd.pid
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
`, port, ip, dir)
	if dockerHost != "" {
		cfg += "SetEnv DOCKER_HOST=" + dockerHost + "\n"
	}
	os.WriteFile(filepath.Join(dir, "sshd_config"), []byte(cfg), 0o600)
	client := fmt.Sprintf(`Host *
  IdentityFile %[1]s/client_key
  IdentitiesOnly yes
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  LogLevel ERROR
`, dir)
	os.WriteFile(filepath.Join(dir, "ssh_config"), []byte(client), 0o600)

	args := append(append([]string{}, prefix...), sshd, "-D", "-e", "-f", filepath.Join(dir, "sshd_config"))
	cmd := exec.Command(args[0], args[1:]...)
	logPath := filepath.Join(dir, "sshd.log")
	log, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("sshd: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := net.JoinHostPort(ip, fmt.Sprint(port))
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		if i == 50 {
			out, _ := os.ReadFile(logPath)
			t.Fatalf("sshd does not listen on %s: %s", addr, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Sprintf("ssh://%s@%s", u.Username, addr), "ssh -F " + filepath.Join(dir, "ssh_config"), cmd.Process.Pid
}
