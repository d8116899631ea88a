package sender_test

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aerostic/aerogate/config"
	"github.com/aerostic/aerogate/sender"
)

// runConfig is the configuration `aerogate sender` would run with against e: no
// jwt.secret (the sender never uses it) and an admin listener.
func (e *testEnv) runConfig(t *testing.T) config.Config {
	cfg := config.Default()
	cfg.Database.URL = e.dbURL
	cfg.Kafka.Brokers = e.broker.Addrs()
	cfg.Kafka.Partitions = testPartitions
	cfg.Graph.BaseURL = e.fake.URL()
	cfg.Graph.Timeout = 2 * time.Second
	cfg.Secrets.TokenKeys = []string{e.keySpec}
	cfg.Sender = testSenderConfig()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Admin.Addr = ln.Addr().String()
	ln.Close()
	return cfg
}

// TestRunWithoutJWTSecret: the sender starts, and is ready on admin.addr, with no
// jwt.secret configured.
func TestRunWithoutJWTSecret(t *testing.T) {
	e := newTestEnv(t)
	cfg := e.runConfig(t)
	if cfg.JWT.Secret != "" {
		t.Fatal("the test config has a jwt.secret")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sender.Run(ctx, cfg, tuneForTests) }()

	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + cfg.Admin.Addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case err := <-done:
			t.Fatalf("sender.Run returned before it was ready: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("sender never became ready on admin.addr (last error %v)", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("sender.Run after cancel: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("sender.Run did not return after cancel")
	}
}

// TestRunRefusesBadGraphBaseURL: a Graph base URL the client would refuse stops the
// sender at start, naming the key, instead of dead-lettering every message.
func TestRunRefusesBadGraphBaseURL(t *testing.T) {
	e := newTestEnv(t)
	for _, u := range []string{"https://user@graph.facebook.com", "https://user:hunter2@graph.facebook.com", "https://graph.facebook.com/?v=1"} {
		cfg := e.runConfig(t)
		cfg.Graph.BaseURL = u
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := sender.Run(ctx, cfg, tuneForTests)
		cancel()
		if err == nil || !strings.Contains(err.Error(), "graph.base_url: ") {
			t.Errorf("sender.Run with graph.base_url %s = %v, want an error naming graph.base_url", u, err)
		}
		if err != nil && (strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "//user")) {
			t.Errorf("error shows the URL's user info: %v", err)
		}
	}
}
