package docker

import (
	"reflect"
	"testing"
)

// DEPLOYER_SSH_COMMAND is split as a shell splits words: a key path with a space can be quoted.
func TestSSHCommandWords(t *testing.T) {
	cases := []struct {
		in   string
		want []string
		bad  bool
	}{
		{"ssh -i key", []string{"ssh", "-i", "key"}, false},
		{`ssh -i '/home/ci/deploy key' -o "UserKnownHostsFile=/tmp/known hosts"`, []string{"ssh", "-i", "/home/ci/deploy key", "-o", "UserKnownHostsFile=/tmp/known hosts"}, false},
		{`ssh -i /keys/my\ key`, []string{"ssh", "-i", "/keys/my key"}, false},
		{`ssh -o "ProxyCommand=nc -X 5 \"a b\" %h %p"`, []string{"ssh", "-o", `ProxyCommand=nc -X 5 "a b" %h %p`}, false},
		{`ssh -i ''`, []string{"ssh", "-i", ""}, false},
		{"", nil, false},
		{`ssh -i 'unclosed`, nil, true},
	}
	for _, c := range cases {
		got, err := shellWords(c.in)
		if (err != nil) != c.bad || !reflect.DeepEqual(got, c.want) {
			t.Errorf("%q: %q %v, want %q", c.in, got, err, c.want)
		}
	}
	t.Setenv("DEPLOYER_SSH_COMMAND", `ssh -i '/home/ci/deploy key'`)
	args, err := (&sshTarget{user: "deploy", host: "203.0.113.10"}).command()
	want := []string{"ssh", "-i", "/home/ci/deploy key", "-o", "BatchMode=yes", "-o", "ConnectTimeout=15", "-o", "ServerAliveInterval=10", "-o", "ServerAliveCountMax=3",
		"-l", "deploy", "--", "203.0.113.10", "docker", "system", "dial-stdio"}
	if err != nil || !reflect.DeepEqual(args, want) {
		t.Errorf("command: %q %v", args, err)
	}
}
