package docker

import (
	"net/netip"
	"testing"
)

func TestHalves(t *testing.T) {
	for _, c := range []struct{ subnet, lower, upper string }{
		{"172.19.0.0/16", "172.19.0.0/17", "172.19.128.0/17"},
		{"192.168.96.0/20", "192.168.96.0/21", "192.168.104.0/21"},
		{"10.1.2.0/24", "10.1.2.0/25", "10.1.2.128/25"},
	} {
		lo, up, err := halves(netip.MustParsePrefix(c.subnet))
		if err != nil || lo.String() != c.lower || up.String() != c.upper {
			t.Errorf("%s: %s %s %v, want %s %s", c.subnet, lo, up, err, c.lower, c.upper)
		}
	}
	if _, _, err := halves(netip.MustParsePrefix("10.1.2.0/30")); err == nil {
		t.Error("a /30 was split")
	}
}
