package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/aerostic/aerogate/config"
	"github.com/aerostic/aerogate/gateway"
	"github.com/aerostic/aerogate/ingest"
	"github.com/aerostic/aerogate/internal/account"
	"github.com/aerostic/aerogate/internal/fakemeta"
	"github.com/aerostic/aerogate/internal/queue"
	"github.com/aerostic/aerogate/internal/secret"
	"github.com/aerostic/aerogate/internal/store/storetest"
	"github.com/aerostic/aerogate/sender"
)

// TestGraphPassthroughEndToEnd runs the gateway, the sender and ingest from one Config
// on Postgres, the embedded broker and the fake Graph API (which requires
// appsecret_proof). A backend holding only tenant JWTs uploads an image and sends it by
// media id, creates and pages through templates, reads its number's throughput and
// downloads a customer's inbound media; every call reaches Meta with exactly the owning
// tenant's token and a valid proof, another tenant's ids answer as unknown ones, and no
// token shows in any answer or log line.
func TestGraphPassthroughEndToEnd(t *testing.T) {
	const (
		appSecret = "passthrough-e2e-app-secret"
		version   = "v22.0"
		wabaA     = "301000000000001"
		numberA   = "302000000000001"
		tokenA    = "EAAG-acme-meta-token-SECRET-e2e"
		wabaB     = "401000000000001"
		numberB   = "402000000000001"
		tokenB    = "EAAG-globex-meta-token-SECRET-e2e"
		unknown   = "999999999999999"
	)
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
	for _, in := range []account.UpsertInput{
		{TenantID: "acme", WABAID: wabaA, PhoneNumberID: numberA, AccessToken: tokenA, IsDefault: true},
		{TenantID: "globex", WABAID: wabaB, PhoneNumberID: numberB, AccessToken: tokenB, IsDefault: true},
	} {
		if _, err := repo.Upsert(ctx, in); err != nil {
			t.Fatal(err)
		}
	}

	var logs syncBuffer
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	t.Cleanup(func() { slog.SetDefault(prev) })

	fake := fakemeta.New(fakemeta.Options{AppID: "900000000000001", AppSecret: appSecret, RequireAppSecretProof: true,
		Logger: slog.New(slog.DiscardHandler)})
	if err := fake.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fake.Close() })
	fake.SetToken(numberA, tokenA)
	fake.SetToken(numberB, tokenB)
	fake.SetWABANumbers(wabaA, fakemeta.Phone{ID: numberA, DisplayPhoneNumber: "+1 555-010-0001", VerifiedName: "Acme", ThroughputLevel: "HIGH"})
	fake.SetWABANumbers(wabaB, fakemeta.Phone{ID: numberB, DisplayPhoneNumber: "+1 555-010-0002", VerifiedName: "Globex"})

	cfg := config.Default()
	cfg.HTTP.Addr, cfg.Admin.Addr = freeAddr(t), ""
	cfg.PublicBaseURL = "http://" + cfg.HTTP.Addr
	cfg.Database.URL = dbURL
	cfg.Kafka.Brokers = broker.Addrs()
	cfg.Kafka.Partitions = 2
	cfg.JWT.Secret = "passthrough-e2e-jwt-secret-at-least-32-bytes"
	cfg.Secrets.TokenKeys = []string{spec}
	cfg.Graph.BaseURL, cfg.Graph.Version = fake.URL(), version
	cfg.Meta.AppID, cfg.Meta.AppSecret = "900000000000001", appSecret
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 3)
	go func() { done <- gateway.Run(rctx, cfg) }()
	go func() {
		done <- sender.Run(rctx, cfg)
	}()
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
	base := "http://" + cfg.HTTP.Addr
	waitFor(t, 30*time.Second, func() bool {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})

	mint := func(tenant string) string {
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
			"tenantId": tenant, "exp": time.Now().Add(time.Hour).Unix(),
		}).SignedString([]byte(cfg.JWT.Secret))
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	jwtA, jwtB := mint("acme"), mint("globex")

	var answers bytes.Buffer
	client := &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	call := func(method, path, bearer, contentType string, body []byte) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+bearer)
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Header.Write(&answers)
		answers.Write(b)
		return resp.StatusCode, b
	}
	v := "/" + version + "/"

	// 1. Upload an image, send it by media id; the sender delivers it.
	var form bytes.Buffer
	w := multipart.NewWriter(&form)
	_ = w.WriteField("messaging_product", "whatsapp")
	_ = w.WriteField("type", "image/jpeg")
	h := textproto.MIMEHeader{}
	h.Set("Content-Disposition", `form-data; name="file"; filename="shoes.jpg"`)
	h.Set("Content-Type", "image/jpeg")
	fw, _ := w.CreatePart(h)
	image := bytes.Repeat([]byte("\xff\xd8JPEG"), 50_000)
	_, _ = fw.Write(image)
	_ = w.Close()
	code, body := call("POST", v+numberA+"/media", jwtA, w.FormDataContentType(), form.Bytes())
	var up struct{ ID string }
	if code != 200 || json.Unmarshal(body, &up) != nil || up.ID == "" {
		t.Fatalf("upload: %d %s", code, body)
	}
	send := fmt.Sprintf(`{"messaging_product":"whatsapp","to":"919876543210","type":"image","image":{"id":%q,"caption":"New shoes"}}`, up.ID)
	if code, body := call("POST", v+numberA+"/messages", jwtA, "application/json", []byte(send)); code != 200 {
		t.Fatalf("send by media id: %d %s", code, body)
	}
	waitFor(t, 30*time.Second, func() bool {
		for _, r := range fake.Received() {
			if bytes.Contains(r.Body, []byte(up.ID)) && r.WAMID != "" {
				return true
			}
		}
		return false
	})
	for _, r := range fake.Received() {
		if r.Token != tokenA || r.AppSecretProof == "" {
			t.Errorf("a send reached the fake with another token or no proof")
		}
	}

	// 2. Create templates and list them a page at a time through the gateway's links.
	for _, name := range []string{"shipping_update", "order_ready"} {
		tpl := fmt.Sprintf(`{"name":%q,"language":"en_US","category":"UTILITY","components":[{"type":"BODY","text":"Hi {{1}}"}]}`, name)
		if code, body := call("POST", v+wabaA+"/message_templates", jwtA, "application/json", []byte(tpl)); code != 200 {
			t.Fatalf("template create: %d %s", code, body)
		}
	}
	var listed []string
	next := v + wabaA + "/message_templates?limit=1"
	for i := 0; next != "" && i < 4; i++ {
		code, body := call("GET", next, jwtA, "", nil)
		var page struct {
			Data []struct {
				Name string `json:"name"`
			} `json:"data"`
			Paging struct {
				Next string `json:"next"`
			} `json:"paging"`
		}
		if code != 200 || json.Unmarshal(body, &page) != nil {
			t.Fatalf("template list: %d %s", code, body)
		}
		for _, d := range page.Data {
			listed = append(listed, d.Name)
		}
		next = ""
		if page.Paging.Next != "" {
			u, err := url.Parse(page.Paging.Next)
			if err != nil || "http://"+u.Host != base {
				t.Fatalf("paging.next is not the gateway's: %s", page.Paging.Next)
			}
			next = u.RequestURI()
		}
	}
	if strings.Join(listed, ",") != "shipping_update,order_ready" {
		t.Errorf("templates listed: %v", listed)
	}

	// 3. The number's throughput.
	code, body = call("GET", v+numberA+"?fields=throughput,quality_rating", jwtA, "", nil)
	if code != 200 || !bytes.Contains(body, []byte(`"level":"HIGH"`)) {
		t.Fatalf("number throughput: %d %s", code, body)
	}

	// 4. A customer sends a photo: Meta's webhook names its media id; once ingest stored
	// the message, the tenant downloads the photo.
	photo := bytes.Repeat([]byte("customer-photo"), 1000)
	inboundID, err := fake.AddMedia(numberA, "image/jpeg", photo)
	if err != nil {
		t.Fatal(err)
	}
	hook := fakemeta.WebhookBody(fakemeta.WebhookEntry{WABAID: wabaA, Changes: []fakemeta.WebhookChange{{
		PhoneNumberID: numberA, Messages: []fakemeta.WebhookMessage{{
			ID: "wamid.inbound.photo", From: "919800000000", Name: "Asha", Timestamp: time.Now(),
			MediaType: "image", MediaID: inboundID, MimeType: "image/jpeg",
		}},
	}}})
	poster := &fakemeta.WebhookPoster{URL: base + "/webhooks/meta", Secret: appSecret}
	if code, err := poster.Post(ctx, hook); err != nil || code != 200 {
		t.Fatalf("webhook: %d %v", code, err)
	}
	var got []byte
	waitFor(t, 30*time.Second, func() bool {
		code, body := call("GET", "/v1/media/"+inboundID+"/content", jwtA, "", nil)
		got = body
		return code == 200
	})
	if !bytes.Equal(got, photo) {
		t.Fatalf("inbound media content differs: %d bytes", len(got))
	}

	// 5. Another tenant's number, WABA and media ids answer as unknown ones.
	for _, pair := range [][2]string{
		{v + numberA, v + unknown},
		{v + wabaA + "/message_templates", v + unknown + "/message_templates"},
		{v + up.ID, v + unknown},
		{v + inboundID, v + unknown},
		{"/v1/media/" + inboundID + "/content", "/v1/media/" + unknown + "/content"},
	} {
		c1, b1 := call("GET", pair[0], jwtB, "", nil)
		c2, b2 := call("GET", pair[1], jwtB, "", nil)
		if c1 < 400 || c1 != c2 || errorCode(b1) != errorCode(b2) {
			t.Errorf("globex on %s: %d %s; on an unknown id: %d %s", pair[0], c1, b1, c2, b2)
		}
	}

	// Every Graph call was acme's, with a valid proof (the media download goes to Meta's
	// CDN with the token alone, as Meta documents); no secret left aerogate.
	for _, c := range fake.Calls() {
		if c.Token != tokenA {
			t.Errorf("%s %s reached the fake with another token", c.Method, c.Path)
		}
		if !strings.HasPrefix(c.Path, "/whatsapp_business/") && !c.ProofValid {
			t.Errorf("%s %s reached the fake without a valid appsecret_proof", c.Method, c.Path)
		}
	}
	for _, s := range []string{tokenA, tokenB, appSecret} {
		if strings.Contains(answers.String(), s) {
			t.Errorf("an answer holds a secret (%.10s…)", s)
		}
		if strings.Contains(logs.String(), s) {
			t.Errorf("a log line holds a secret (%.10s…)", s)
		}
	}
}

// errorCode is an error answer's code and subcode, with the message left out (it may
// name the id asked for).
func errorCode(b []byte) string {
	var m struct {
		Error struct {
			Code    any `json:"code"`
			Subcode any `json:"error_subcode"`
			Data    struct {
				Code string `json:"aerogate_code"`
			} `json:"error_data"`
		} `json:"error"`
	}
	_ = json.Unmarshal(b, &m)
	return fmt.Sprint(m.Error.Code, "/", m.Error.Subcode, "/", m.Error.Data.Code)
}
