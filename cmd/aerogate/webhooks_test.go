package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/aerostic/aerogate/config"
	"github.com/aerostic/aerogate/gateway"
	"github.com/aerostic/aerogate/ingest"
	"github.com/aerostic/aerogate/internal/account"
	"github.com/aerostic/aerogate/internal/auth"
	"github.com/aerostic/aerogate/internal/fakemeta"
	"github.com/aerostic/aerogate/internal/message"
	"github.com/aerostic/aerogate/internal/queue"
	"github.com/aerostic/aerogate/internal/secret"
	"github.com/aerostic/aerogate/internal/store/storetest"
	"github.com/aerostic/aerogate/webhooks"
)

// TestWebhooksReadBack runs the gateway, the standalone webhook edge and ingest from one
// Config, posts signed webhooks to both edges, and reads the result back through the
// tenant API: GET /v1/inbound pages each tenant's own inbound messages in arrival order,
// and GET /v1/messages/{id} shows delivered and read with their times.
func TestWebhooksReadBack(t *testing.T) {
	dbURL, pool := storetest.New(t)
	broker, err := queue.StartEmbedded(queue.EmbeddedConfig{Addr: "127.0.0.1:0", Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(broker.Close)
	spec, _ := secret.GenerateKeySpec("k1")
	keys, _ := secret.ParseKeyRing([]string{spec})
	repo := account.NewRepository(pool, keys)
	ctx := context.Background()
	a, err := repo.Upsert(ctx, account.UpsertInput{TenantID: "acme", WABAID: "1111", PhoneNumberID: "2222", AccessToken: "t-a"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := repo.Upsert(ctx, account.UpsertInput{TenantID: "globex", WABAID: "3333", PhoneNumberID: "4444", AccessToken: "t-b"})
	if err != nil {
		t.Fatal(err)
	}
	msgID := uuid.NewString()
	claim := message.Claim{ID: msgID, TenantID: a.TenantID, AccountID: a.ID, PhoneNumberID: a.PhoneNumberID, Recipient: "919876543210"}
	if err := message.NewRepository(pool).MarkSentMany(ctx, []message.Sent{{Claim: claim, WAMID: "wamid.out", SentAt: time.Now()}}); err != nil {
		t.Fatal(err)
	}

	cfg := config.Default()
	cfg.HTTP.Addr, cfg.Webhooks.Addr, cfg.Admin.Addr = freeAddr(t), freeAddr(t), ""
	cfg.Database.URL = dbURL
	cfg.Kafka.Brokers = broker.Addrs()
	cfg.Kafka.Partitions = 2
	cfg.JWT.Secret = "webhooks-test-secret-at-least-32-bytes!"
	cfg.Secrets.TokenKeys = []string{spec}
	cfg.Meta.AppSecret, cfg.Meta.AppSecrets = "new-app-secret", []string{"old-app-secret"}
	cfg.Meta.VerifyToken = "verify-me"
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 3)
	go func() { done <- gateway.Run(rctx, cfg) }()
	go func() { done <- webhooks.Run(rctx, cfg) }()
	go func() {
		done <- ingest.Run(rctx, cfg, func(o *ingest.Options) {
			o.SessionTimeout, o.HeartbeatInterval, o.CommitInterval = 2*time.Second, 200*time.Millisecond, 50*time.Millisecond
			o.OutboxPoll = 100 * time.Millisecond
		})
	}()
	t.Cleanup(func() {
		cancel()
		for range 3 {
			if err := <-done; err != nil {
				t.Errorf("role: %v", err)
			}
		}
	})
	gw, edge := "http://"+cfg.HTTP.Addr, "http://"+cfg.Webhooks.Addr
	for _, base := range []string{gw, edge} {
		waitFor(t, 30*time.Second, func() bool {
			resp, err := http.Get(base + "/readyz")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		})
	}
	// The handshake, on both.
	for _, base := range []string{gw, edge} {
		code, body := get(t, base+"/webhooks/meta?hub.mode=subscribe&hub.verify_token=verify-me&hub.challenge=42", "")
		if code != 200 || body != "42" {
			t.Errorf("handshake on %s = %d %q", base, code, body)
		}
	}

	inboundBody := func(acct *account.Account, wamids ...string) []byte {
		var msgs []fakemeta.WebhookMessage
		for _, w := range wamids {
			msgs = append(msgs, fakemeta.WebhookMessage{ID: w, From: "919800000000", Name: "Asha", Text: "hi " + w, Timestamp: time.Now()})
		}
		return fakemeta.WebhookBody(fakemeta.WebhookEntry{WABAID: acct.WABAID, Changes: []fakemeta.WebhookChange{{PhoneNumberID: acct.PhoneNumberID, Messages: msgs}}})
	}
	post := func(base, secret string, body []byte) int {
		p := &fakemeta.WebhookPoster{URL: base + "/webhooks/meta", Secret: secret}
		code, err := p.Post(ctx, body)
		if err != nil {
			t.Fatal(err)
		}
		return code
	}
	// In arrival order: acme 1 and 2 through the gateway, globex's through the edge, acme
	// 3 signed with the rotated-out secret; a forged one is refused.
	for _, p := range []struct {
		base, secret string
		body         []byte
		want         int
	}{
		{gw, "new-app-secret", inboundBody(a, "wamid.a1", "wamid.a2"), 200},
		{edge, "new-app-secret", inboundBody(b, "wamid.b1"), 200},
		{gw, "old-app-secret", inboundBody(a, "wamid.a3"), 200},
		{edge, "forged", inboundBody(a, "wamid.forged"), 401},
		{edge, "new-app-secret", fakemeta.WebhookBody(fakemeta.WebhookEntry{WABAID: a.WABAID, Changes: []fakemeta.WebhookChange{{
			PhoneNumberID: a.PhoneNumberID, Statuses: []fakemeta.WebhookStatus{
				{ID: "wamid.out", Status: "read", RecipientID: "919876543210", Timestamp: time.Unix(1_800_000_020, 0)},
				{ID: "wamid.out", Status: "delivered", RecipientID: "919876543210", Timestamp: time.Unix(1_800_000_010, 0)},
			}}}}), 200},
	} {
		if code := post(p.base, p.secret, p.body); code != p.want {
			t.Fatalf("POST to %s = %d, want %d", p.base, code, p.want)
		}
		time.Sleep(300 * time.Millisecond) // arrival order across the two edges
	}

	acme := issue(t, cfg, "acme")
	type page struct {
		Messages []struct {
			WAMID   string          `json:"wamid"`
			From    string          `json:"from"`
			Message json.RawMessage `json:"message"`
			Contact json.RawMessage `json:"contact"`
		} `json:"messages"`
		Next string `json:"next"`
	}
	list := func(tok, query string) (int, page) {
		code, body := get(t, gw+"/v1/inbound"+query, tok)
		var p page
		_ = json.Unmarshal([]byte(body), &p)
		return code, p
	}
	waitFor(t, 30*time.Second, func() bool { _, p := list(acme, "?limit=10"); return len(p.Messages) == 3 })
	var seen []string
	cursor := ""
	for range 4 {
		code, p := list(acme, "?limit=2&after="+cursor)
		if code != 200 {
			t.Fatalf("GET /v1/inbound = %d", code)
		}
		for _, m := range p.Messages {
			seen = append(seen, m.WAMID)
			if !strings.Contains(string(m.Message), "hi "+m.WAMID) || !strings.Contains(string(m.Contact), "Asha") {
				t.Errorf("inbound %s = %s %s", m.WAMID, m.Message, m.Contact)
			}
		}
		if len(p.Messages) == 0 && p.Next != cursor {
			t.Errorf("an empty page moved the cursor from %q to %q", cursor, p.Next)
		}
		cursor = p.Next
	}
	if got := strings.Join(seen, ","); got != "wamid.a1,wamid.a2,wamid.a3" {
		t.Errorf("acme's pages = %s, want a1,a2,a3 in arrival order", got)
	}
	if _, p := list(issue(t, cfg, "globex"), ""); len(p.Messages) != 1 || p.Messages[0].WAMID != "wamid.b1" {
		t.Errorf("globex sees %+v, want only its own message", p.Messages)
	}
	if code, _ := list(acme, "?after=not-a-cursor"); code != 400 {
		t.Errorf("bad cursor = %d, want 400", code)
	}
	if code, _ := list(acme, "?limit=100000"); code != 400 {
		t.Errorf("limit over the maximum = %d, want 400", code)
	}
	if code, _ := list("", ""); code != 401 {
		t.Errorf("no token = %d, want 401", code)
	}

	var m struct {
		Status      string     `json:"status"`
		DeliveredAt *time.Time `json:"delivered_at"`
		ReadAt      *time.Time `json:"read_at"`
	}
	waitFor(t, 20*time.Second, func() bool {
		_, body := get(t, gw+"/v1/messages/"+msgID, acme)
		_ = json.Unmarshal([]byte(body), &m)
		return m.Status == "read"
	})
	if m.DeliveredAt == nil || m.DeliveredAt.Unix() != 1_800_000_010 || m.ReadAt == nil || m.ReadAt.Unix() != 1_800_000_020 {
		t.Errorf("message = %+v, want delivered and read at Meta's times", m)
	}
}

func issue(t *testing.T, cfg config.Config, tenant string) string {
	t.Helper()
	tok, err := auth.IssueHS256([]byte(cfg.JWT.Secret), cfg.JWT.TenantClaim, tenant, time.Hour, "", "")
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func get(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(fmt.Errorf("GET %s: %w", url, err))
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
