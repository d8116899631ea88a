package gateway_test

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aerostic/aerogate/config"
	"github.com/aerostic/aerogate/gateway"
	"github.com/aerostic/aerogate/internal/account"
	"github.com/aerostic/aerogate/internal/auth"
	"github.com/aerostic/aerogate/internal/queue"
	"github.com/aerostic/aerogate/internal/store/storetest"
)

// TestRun starts the gateway the way `aerogate gateway` does, from a Config, sends
// through it, and checks that cancelling the context shuts it down cleanly.
func TestRun(t *testing.T) {
	dbURL, pool := storetest.New(t)
	broker, err := queue.StartEmbedded(queue.EmbeddedConfig{Addr: "127.0.0.1:0", Partitions: 2, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(broker.Close)
	spec, keys := testKeys(t)
	if _, err := account.NewRepository(pool, keys).Upsert(context.Background(), account.UpsertInput{
		TenantID: tenantA, WABAID: "102290129340398", PhoneNumberID: "1001", AccessToken: accessTokenA, IsDefault: true,
	}); err != nil {
		t.Fatal(err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	cfg := config.Default()
	cfg.HTTP.Addr = addr
	cfg.Database.URL = dbURL
	cfg.Kafka.Brokers = broker.Addrs()
	cfg.JWT.Secret = string(jwtSecret)
	cfg.Secrets.TokenKeys = []string{spec}
	// Without a Meta app, Embedded Signup answers 503 and the sends still flow.

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- gateway.Run(ctx, cfg) }()

	e := &env{base: "http://" + addr, client: &http.Client{Timeout: 10 * time.Second}}
	defer e.client.CloseIdleConnections()
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := e.client.Get(e.base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		select {
		case err := <-done:
			t.Fatalf("Run returned before serving: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway never became ready (last error %v)", err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	tok, err := auth.IssueHS256(jwtSecret, "tenantId", tenantA, time.Hour, "", "")
	if err != nil {
		t.Fatal(err)
	}
	r := e.do(t, "POST", "/v1/messages", tok, textBody(""), nil)
	if r.status != 202 || !strings.Contains(string(r.body), `"status":"accepted"`) {
		t.Fatalf("send through Run: %d %s", r.status, r.body)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after cancel: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Error("still listening after Run returned")
	}
}
