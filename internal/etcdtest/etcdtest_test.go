package etcdtest

import (
	"net/http"
	"testing"
	"time"
)

// TestStartKillRestart: the server answers once Start returns, stops
// answering when killed, and answers again on Restart.
func TestStartKillRestart(t *testing.T) {
	s := Start(t)
	c := &http.Client{Timeout: time.Second}
	if !healthy(c, s.Endpoint()) {
		t.Fatalf("etcd at %s not healthy after Start", s.Endpoint())
	}
	s.Kill()
	if healthy(c, s.Endpoint()) {
		t.Fatalf("etcd at %s still healthy after Kill", s.Endpoint())
	}
	s.Kill() // a second Kill does nothing
	s.Restart()
	if !healthy(c, s.Endpoint()) {
		t.Fatalf("etcd at %s not healthy after Restart", s.Endpoint())
	}
	s.Stop()
	if healthy(c, s.Endpoint()) {
		t.Fatalf("etcd at %s still healthy after Stop", s.Endpoint())
	}
}

// TestTwoServers: two servers in one test have their own ports.
func TestTwoServers(t *testing.T) {
	a, b := Start(t), Start(t)
	if a.Endpoint() == b.Endpoint() {
		t.Fatalf("both servers at %s", a.Endpoint())
	}
}
