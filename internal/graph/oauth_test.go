package graph

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/aerostic/aerogate/internal/fakemeta"
)

const (
	appID     = "1234"
	appSecret = "app-secret"
)

func TestAppSecretProof(t *testing.T) {
	// hmac.new(b"app-secret", b"EAAG-token", sha256).hexdigest()
	const want = "d402b447efc46005b36c8e1f71fb619235c471fc7a8348fa3529923d2f42f4d4"
	if got := AppSecretProof(appSecret, "EAAG-token"); got != want {
		t.Fatalf("AppSecretProof = %s, want %s", got, want)
	}
	a := newAppCredentials(appID, appSecret)
	for range 3 { // the pooled, reset HMAC gives the same answer every time
		if got := string(a.appendProofQuery([]byte("x"), '?', "EAAG-token")); got != "x?appsecret_proof="+want {
			t.Fatalf("appendProofQuery = %s", got)
		}
	}
	if got := string((&appCredentials{}).appendProofQuery([]byte("x"), '?', "t")); got != "x" {
		t.Fatalf("without a secret: %s", got)
	}
}

func TestSendMessageCarriesAppSecretProof(t *testing.T) {
	s := fake(t, fakemeta.Options{AppID: appID, AppSecret: appSecret, RequireAppSecretProof: true})
	with, err := New(Config{BaseURL: s.URL(), Timeout: 2 * time.Second, AppSecret: appSecret})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := with.SendMessage(context.Background(), phone, token, []byte(body)); err != nil {
		t.Fatalf("send with proof: %v", err)
	}
	if r := s.Received(); len(r) != 1 || r[0].AppSecretProof != AppSecretProof(appSecret, token) {
		t.Fatalf("received %+v", r)
	}
	// Without the app secret there is no proof, which an app requiring one refuses.
	_, err = client(t, s.URL(), 2*time.Second).SendMessage(context.Background(), phone, token, []byte(body))
	if e := asError(t, err); e.Code != CodeInvalidParameter || !strings.Contains(e.Title, "appsecret_proof") {
		t.Fatalf("send without proof: %v", err)
	}
	// A wrong secret makes a wrong proof.
	wrong, _ := New(Config{BaseURL: s.URL(), Timeout: 2 * time.Second, AppSecret: "other"})
	if _, err := wrong.SendMessage(context.Background(), phone, token, []byte(body)); asError(t, err).Code != CodeInvalidParameter {
		t.Fatalf("send with a wrong proof: %v", err)
	}
}

func TestEmbeddedSignupCalls(t *testing.T) {
	s := fake(t, fakemeta.Options{AppID: appID, AppSecret: appSecret, RequireAppSecretProof: true})
	c, err := New(Config{BaseURL: s.URL(), Timeout: 2 * time.Second, AppID: appID, AppSecret: appSecret})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	code := s.MintCode(fakemeta.Grant{WABAID: "42", TokenExpiresIn: 24 * time.Hour,
		PhoneNumbers: []fakemeta.Phone{{ID: "4201", VerifiedName: "A", ThroughputLevel: "HIGH"}, {ID: "4202", Registered: true}}})
	tok, err := c.ExchangeCode(ctx, code, "")
	if err != nil || tok == "" {
		t.Fatalf("ExchangeCode: %q, %v", tok, err)
	}
	// A second exchange is refused, and the error never holds the code.
	_, err = c.ExchangeCode(ctx, code, "")
	if e := asError(t, err); e.Code != CodeInvalidParameter || e.Subcode != 36009 || strings.Contains(err.Error(), code) {
		t.Fatalf("second exchange: %v", err)
	}
	info, err := c.DebugToken(ctx, tok)
	if err != nil || !info.IsValid || info.AppID != appID || info.ExpiresAt.IsZero() || !info.HasScope(ScopeMessaging) ||
		len(info.Targets[ScopeMessaging]) != 1 || info.Targets[ScopeMessaging][0] != "42" {
		t.Fatalf("DebugToken: %+v, %v", info, err)
	}
	phones, err := c.PhoneNumbers(ctx, tok, "42")
	if err != nil || len(phones) != 2 || phones[0].Throughput.Level != "HIGH" || ThroughputMPS(phones[0].Throughput.Level) != 1000 ||
		phones[1].PlatformType != "CLOUD_API" || ThroughputMPS(phones[1].Throughput.Level) != 80 {
		t.Fatalf("PhoneNumbers: %+v, %v", phones, err)
	}
	if err := c.SubscribeApp(ctx, tok, "42"); err != nil {
		t.Fatal(err)
	}
	if err := c.Register(ctx, tok, "4201", "012345"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PhoneNumbers(ctx, tok, "42/../x"); asError(t, err).Code != CodeInvalidParameter {
		t.Fatalf("a WABA id that is not an id: %v", err)
	}
	// An answer echoing a secret is redacted before it is kept.
	s.FailStep(fakemeta.StepRegister, 1, fakemeta.ErrorSpec{HTTPStatus: 400, Code: 100, Title: "bad pin 654321 for " + tok})
	err = c.Register(ctx, tok, "4201", "654321")
	if err == nil || strings.Contains(err.Error(), "654321") || strings.Contains(err.Error(), tok) {
		t.Fatalf("register error %v holds the pin or token", err)
	}
	// Without the app, the Embedded Signup calls are refused up front.
	bare := client(t, s.URL(), time.Second)
	if _, err := bare.ExchangeCode(ctx, "x", ""); err != ErrNotConfigured {
		t.Fatalf("ExchangeCode without the app: %v", err)
	}
}

// BenchmarkSendMessageWithProof is BenchmarkSendMessage with an app secret: every send
// computes its appsecret_proof (and the fake checks it).
func BenchmarkSendMessageWithProof(b *testing.B) {
	s := fake(b, fakemeta.Options{MaxReceived: 10000, AppID: appID, AppSecret: appSecret})
	c, err := New(Config{BaseURL: s.URL(), Timeout: 5 * time.Second, AppSecret: appSecret})
	if err != nil {
		b.Fatal(err)
	}
	payload := []byte(body)
	b.ReportAllocs()
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.SendMessage(context.Background(), phone, token, payload); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkAppSecretProof is the client's own cost of a proof.
func BenchmarkAppSecretProof(b *testing.B) {
	a := newAppCredentials(appID, appSecret)
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = a.appendProofQuery(buf[:0], '?', "EAAGm0PX4ZCpsBAKZAZCEXAMPLETOKENWITHSOMELENGTH1234567890")
	}
}

// TestExchangeToken renews a token the fake knows, and is refused (code 190, no token in
// the error) for an unknown, expired or revoked one.
func TestExchangeToken(t *testing.T) {
	s := fake(t, fakemeta.Options{AppID: appID, AppSecret: appSecret, RequireAppSecretProof: true})
	c, err := New(Config{BaseURL: s.URL(), Timeout: 2 * time.Second, AppID: appID, AppSecret: appSecret})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s.KnowToken("EAAG-good-token-0001", fakemeta.KnownToken{WABAID: "1", ExpiresAt: time.Now().Add(time.Hour)})
	s.KnowToken("EAAG-expired-token-01", fakemeta.KnownToken{WABAID: "1", ExpiresAt: time.Now().Add(-time.Hour)})
	s.KnowToken("EAAG-revoked-token-01", fakemeta.KnownToken{WABAID: "1"})
	s.RevokeToken("EAAG-revoked-token-01")

	ex, err := c.ExchangeToken(ctx, "EAAG-good-token-0001")
	if err != nil || ex.AccessToken == "" || ex.AccessToken == "EAAG-good-token-0001" || ex.ExpiresIn != fakemeta.RenewedLifetime {
		t.Fatalf("ExchangeToken = %+v, %v", ex, err)
	}
	if st := s.Token(ex.AccessToken); st.RenewedFrom != "EAAG-good-token-0001" || s.Exchanges("EAAG-good-token-0001") != 1 {
		t.Errorf("the fake's record: %+v", st)
	}
	for _, tok := range []string{"EAAG-unknown-token-1", "EAAG-expired-token-01", "EAAG-revoked-token-01"} {
		_, err := c.ExchangeToken(ctx, tok)
		var ge *Error
		if !errors.As(err, &ge) || ge.Code != CodeAccessToken || ge.Action() != ActionStopAccount {
			t.Errorf("ExchangeToken(%s): %v, want code 190", tok, err)
		}
		if err != nil && (strings.Contains(err.Error(), tok) || strings.Contains(err.Error(), appSecret)) {
			t.Errorf("error holds a secret: %v", err)
		}
	}
	if _, err := c.ExchangeToken(ctx, "bad token"); err == nil {
		t.Error("a malformed token was sent")
	}
}
