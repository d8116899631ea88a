package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aerostic/aerogate/config"
	"github.com/aerostic/aerogate/gateway"
	"github.com/aerostic/aerogate/internal/account"
	"github.com/aerostic/aerogate/internal/auth"
	"github.com/aerostic/aerogate/internal/fakemeta"
	"github.com/aerostic/aerogate/internal/queue"
	"github.com/aerostic/aerogate/internal/secret"
	"github.com/aerostic/aerogate/internal/store/storetest"
	"github.com/aerostic/aerogate/sender"
)

// TestRecipientNormalizedEndToEnd sends to "+91 98765 43210" on both send paths, through
// the gateway, the embedded broker and the sender, and checks what the fake Graph API
// receives: `to` as the digits 919876543210. A 4,096-character text arrives whole.
func TestRecipientNormalizedEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the gateway and the sender")
	}
	const (
		tenant    = "acme"
		pnid      = "106540352242922"
		metaToken = "EAAG-e2e-token-of-acme"
	)
	dbURL, pool := storetest.New(t)
	broker, err := queue.StartEmbedded(queue.EmbeddedConfig{Addr: "127.0.0.1:0", Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(broker.Close)
	fake := fakemeta.New(fakemeta.Options{})
	if err := fake.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fake.Close() })
	fake.SetToken(pnid, metaToken)

	spec, err := secret.GenerateKeySpec("k1")
	if err != nil {
		t.Fatal(err)
	}
	keys, err := secret.ParseKeyRing([]string{spec})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := account.NewRepository(pool, keys).Upsert(context.Background(), account.UpsertInput{
		TenantID: tenant, WABAID: "102290129340398", PhoneNumberID: pnid, AccessToken: metaToken, IsDefault: true,
	}); err != nil {
		t.Fatal(err)
	}

	cfg := config.Default()
	cfg.HTTP.Addr = freeAddr(t)
	cfg.Database.URL = dbURL
	cfg.Kafka.Brokers = broker.Addrs()
	cfg.Kafka.Partitions = 2
	cfg.JWT.Secret = "e2e-secret-e2e-secret-e2e-secret-0123456789"
	cfg.Secrets.TokenKeys = []string{spec}
	cfg.Graph.BaseURL = fake.URL()
	cfg.Log.Level = "warn"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	go func() { done <- gateway.Run(ctx, cfg) }()
	go func() {
		done <- sender.Run(ctx, cfg, func(o *sender.Options) {
			o.SessionTimeout = 2 * time.Second
			o.RebalanceTimeout = 3 * time.Second
			o.HeartbeatInterval = 200 * time.Millisecond
		})
	}()
	t.Cleanup(func() {
		cancel()
		for range 2 {
			if err := <-done; err != nil {
				t.Errorf("role returned %v", err)
			}
		}
	})

	base := "http://" + cfg.HTTP.Addr
	waitFor(t, 30*time.Second, func() bool {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	jwt, err := auth.IssueHS256([]byte(cfg.JWT.Secret), cfg.JWT.TenantClaim, tenant, time.Hour, "", "")
	if err != nil {
		t.Fatal(err)
	}
	post := func(path, body string) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+jwt)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}

	long := strings.Repeat("é", 4096) // 4,096 characters, 8,192 bytes
	status, b := post("/v22.0/"+pnid+"/messages",
		`{"messaging_product":"whatsapp","to":"+91 98765 43210","type":"text","text":{"body":"`+long+`"}}`)
	if status != http.StatusOK {
		t.Fatalf("Cloud API path: %d %s", status, b)
	}
	var answer struct {
		Contacts []struct {
			Input string `json:"input"`
			WaID  string `json:"wa_id"`
		}
		Messages []struct{ ID string }
	}
	if err := json.Unmarshal(b, &answer); err != nil || len(answer.Contacts) != 1 || len(answer.Messages) != 1 {
		t.Fatalf("Cloud API answer %s (%v)", b, err)
	}
	if c := answer.Contacts[0]; c.Input != "+91 98765 43210" || c.WaID != "919876543210" {
		t.Errorf("contacts = %+v, want input %q and wa_id %q", c, "+91 98765 43210", "919876543210")
	}
	if status, b := post("/v1/messages", `{"messaging_product":"whatsapp","to":"+91 (98765) 43-210","type":"text","text":{"body":"hi"}}`); status != http.StatusAccepted {
		t.Fatalf("/v1: %d %s", status, b)
	}

	var got []fakemeta.Received
	waitFor(t, 30*time.Second, func() bool {
		got = fake.Received()
		return len(got) >= 2
	})
	if len(got) != 2 {
		t.Fatalf("fake received %d sends, want 2", len(got))
	}
	for _, r := range got {
		var body struct {
			To   string `json:"to"`
			Text struct {
				Body string `json:"body"`
			} `json:"text"`
		}
		if err := json.Unmarshal(r.Body, &body); err != nil {
			t.Fatalf("fake received %s: %v", r.Body, err)
		}
		if r.To != "919876543210" || body.To != "919876543210" || r.PhoneNumberID != pnid {
			t.Errorf("fake received to %q for %s, want 919876543210: %.120s", r.To, r.PhoneNumberID, r.Body)
		}
		if body.Text.Body != "hi" && body.Text.Body != long {
			t.Errorf("text body changed on the way: %.40q…", body.Text.Body)
		}
	}
}
