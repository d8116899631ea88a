package fakemeta

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	testAppID     = "1234"
	testAppSecret = "fake-secret"
)

type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func get(t *testing.T, u, auth string) answer {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if loc := resp.Header.Get("Location"); loc != "" {
		return answer{resp.StatusCode, []byte(loc)} // a redirect: its Location
	}
	return answer{resp.StatusCode, b}
}

func metaCode(a answer) (code, subcode int) {
	var v struct {
		Error struct {
			Code    int `json:"code"`
			Subcode int `json:"error_subcode"`
		} `json:"error"`
	}
	_ = json.Unmarshal(a.body, &v)
	return v.Error.Code, v.Error.Subcode
}

func exchange(t *testing.T, s *Server, code, redirect string) answer {
	q := url.Values{"client_id": {testAppID}, "client_secret": {testAppSecret}, "code": {code}}
	if redirect != "" {
		q.Set("redirect_uri", redirect)
	}
	return get(t, s.URL()+"/v22.0/oauth/access_token?"+q.Encode(), "")
}

func proofQuery(token string) string {
	return "appsecret_proof=" + hmacHex(testAppSecret, token)
}

func TestEmbeddedSignupSide(t *testing.T) {
	clk := &testClock{t: time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)}
	s := start(t, Options{AppID: testAppID, AppSecret: testAppSecret, RequireAppSecretProof: true, Now: clk.Now})
	appToken := "Bearer " + testAppID + "|" + testAppSecret

	// A code lives 30 seconds and exchanges once.
	old := s.MintCode(Grant{})
	clk.Advance(31 * time.Second)
	if c, sc := metaCode(exchange(t, s, old, "")); c != 100 || sc != 36007 {
		t.Fatalf("code of 31 s: %d/%d, want 100/36007", c, sc)
	}
	code := s.MintCode(Grant{TokenExpiresIn: 60 * 24 * time.Hour})
	clk.Advance(30 * time.Second)
	if c, sc := metaCode(exchange(t, s, code, "https://elsewhere.example/cb")); c != 100 || sc != 36008 {
		t.Fatalf("an SDK code with a redirect_uri: %d/%d, want 100/36008", c, sc)
	}
	a := exchange(t, s, code, "")
	var tok struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
	}
	if a.status != 200 || json.Unmarshal(a.body, &tok) != nil || tok.AccessToken == "" || tok.ExpiresIn != 60*24*3600 {
		t.Fatalf("exchange: %d %s", a.status, a.body)
	}
	if c, sc := metaCode(exchange(t, s, code, "")); c != 100 || sc != 36009 {
		t.Fatalf("a used code: %d/%d, want 100/36009", c, sc)
	}
	if bad := get(t, s.URL()+"/v22.0/oauth/access_token?client_id=1234&client_secret=wrong&code="+code, ""); bad.status != 400 {
		t.Fatalf("wrong client_secret: %d %s", bad.status, bad.body)
	}

	// debug_token needs the app token and its proof.
	dbg := func(input, auth, proof string) answer {
		return get(t, s.URL()+"/v22.0/debug_token?input_token="+url.QueryEscape(input)+"&"+proof, auth)
	}
	if c, _ := metaCode(dbg(tok.AccessToken, appToken, "")); c != 100 {
		t.Fatalf("debug_token without appsecret_proof: code %d, want 100", c)
	}
	if c, _ := metaCode(dbg(tok.AccessToken, appToken, "appsecret_proof=00")); c != 100 {
		t.Fatalf("debug_token with a wrong proof: code %d, want 100", c)
	}
	if c, _ := metaCode(dbg(tok.AccessToken, "Bearer "+tok.AccessToken, proofQuery(tok.AccessToken))); c != 190 {
		t.Fatalf("debug_token without the app token: code %d, want 190", c)
	}
	var info struct {
		Data struct {
			AppID          string   `json:"app_id"`
			IsValid        bool     `json:"is_valid"`
			ExpiresAt      int64    `json:"expires_at"`
			Scopes         []string `json:"scopes"`
			GranularScopes []struct {
				Scope     string   `json:"scope"`
				TargetIDs []string `json:"target_ids"`
			} `json:"granular_scopes"`
		} `json:"data"`
	}
	a = dbg(tok.AccessToken, appToken, proofQuery(testAppID+"|"+testAppSecret))
	if err := json.Unmarshal(a.body, &info); err != nil || !info.Data.IsValid || info.Data.AppID != testAppID ||
		info.Data.ExpiresAt != clk.Now().Add(60*24*time.Hour).Unix() || len(info.Data.GranularScopes) != 2 ||
		info.Data.GranularScopes[1].Scope != "whatsapp_business_messaging" || info.Data.GranularScopes[1].TargetIDs[0] != DefaultWABAID {
		t.Fatalf("debug_token: %d %s", a.status, a.body)
	}

	// A never-expiring token with the management scope only.
	code = s.MintCode(Grant{WABAID: "555", PhoneNumbers: []Phone{{ID: "777", Registered: true}}, Scopes: []string{"whatsapp_business_management"}})
	_ = json.Unmarshal(exchange(t, s, code, "").body, &tok)
	info.Data.GranularScopes = nil
	_ = json.Unmarshal(dbg(tok.AccessToken, appToken, proofQuery(testAppID+"|"+testAppSecret)).body, &info)
	if info.Data.ExpiresAt != 0 || len(info.Data.GranularScopes) != 1 || info.Data.GranularScopes[0].Scope != "whatsapp_business_management" {
		t.Fatalf("never-expiring management-only token: %+v", info.Data)
	}

	// The WABA's numbers, subscription and registration, each with the token's proof.
	bearer := "Bearer " + tok.AccessToken
	a = get(t, s.URL()+"/v22.0/555/phone_numbers?"+proofQuery(tok.AccessToken), bearer)
	if a.status != 200 || !strings.Contains(string(a.body), `"platform_type":"CLOUD_API"`) || !strings.Contains(string(a.body), `"id":"777"`) {
		t.Fatalf("phone_numbers: %d %s", a.status, a.body)
	}
	if a := get(t, s.URL()+"/v22.0/556/phone_numbers?"+proofQuery(tok.AccessToken), bearer); a.status != 400 {
		t.Fatalf("another WABA's numbers: %d %s", a.status, a.body)
	}
	if a := post(t, s.URL()+"/v22.0/555/subscribed_apps?"+proofQuery(tok.AccessToken), bearer, ""); a.status != 200 || s.Subscriptions("555") != 1 {
		t.Fatalf("subscribed_apps: %d %s", a.status, a.body)
	}
	if a := post(t, s.URL()+"/v22.0/777/register?"+proofQuery(tok.AccessToken), bearer, `{"messaging_product":"whatsapp","pin":"12345"}`); a.status != 400 {
		t.Fatalf("register with a 5-digit pin: %d %s", a.status, a.body)
	}
	if a := post(t, s.URL()+"/v22.0/777/register?"+proofQuery(tok.AccessToken), bearer, `{"messaging_product":"whatsapp","pin":"123456"}`); a.status != 200 {
		t.Fatalf("register: %d %s", a.status, a.body)
	}
	if r := s.Registrations(); len(r) != 1 || r[0].PhoneNumberID != "777" || r[0].PIN != "123456" {
		t.Fatalf("registrations %+v", r)
	}

	// Sends with the issued token need its proof too; hello_world is the one template.
	tmpl := `{"messaging_product":"whatsapp","to":"15551234567","type":"template","template":{"name":"%s","language":{"code":"en_US"}}}`
	if a := post(t, s.URL()+"/v22.0/777/messages", bearer, strings.Replace(tmpl, "%s", "hello_world", 1)); a.status != 400 {
		t.Fatalf("send without proof: %d %s", a.status, a.body)
	}
	if a := post(t, s.URL()+"/v22.0/777/messages?"+proofQuery(tok.AccessToken), bearer, strings.Replace(tmpl, "%s", "hello_world", 1)); a.status != 200 {
		t.Fatalf("hello_world: %d %s", a.status, a.body)
	}
	if a := post(t, s.URL()+"/v22.0/777/messages?"+proofQuery(tok.AccessToken), bearer, strings.Replace(tmpl, "%s", "order_update", 1)); a.status != 404 {
		t.Fatalf("unknown template: %d %s", a.status, a.body)
	}

	// Injected failures, per step and per object.
	s.FailStep(StepRegister+":777", 1, ErrorSpec{HTTPStatus: 500, Code: 2, Title: "down"})
	if a := post(t, s.URL()+"/v22.0/777/register?"+proofQuery(tok.AccessToken), bearer, `{"messaging_product":"whatsapp","pin":"123456"}`); a.status != 500 {
		t.Fatalf("injected register failure: %d %s", a.status, a.body)
	}
	s.FailStep(StepExchange, 1, ErrorSpec{HTTPStatus: 503, Code: 2, Title: "down"})
	if a := exchange(t, s, s.MintCode(Grant{}), ""); a.status != 503 {
		t.Fatalf("injected exchange failure: %d %s", a.status, a.body)
	}
}

func TestDialogRedirectsBackWithACode(t *testing.T) {
	s := start(t, Options{AppID: testAppID, AppSecret: testAppSecret})
	q := url.Values{"client_id": {testAppID}, "config_id": {"c"}, "redirect_uri": {"http://127.0.0.1:8080/meta/callback?x=1"},
		"state": {"st-1"}, "response_type": {"code"}, "override_default_response_type": {"true"}}
	a := get(t, s.URL()+"/v22.0/dialog/oauth?"+q.Encode(), "")
	u, err := url.Parse(string(a.body))
	if a.status != 302 || err != nil || u.Host != "127.0.0.1:8080" || u.Query().Get("state") != "st-1" || u.Query().Get("x") != "1" {
		t.Fatalf("dialog: %d %s", a.status, a.body)
	}
	// The code is bound to that redirect_uri.
	if c, sc := metaCode(exchange(t, s, u.Query().Get("code"), "")); c != 100 || sc != 36008 {
		t.Fatalf("dialog code without its redirect_uri: %d/%d", c, sc)
	}
	if a := exchange(t, s, u.Query().Get("code"), q.Get("redirect_uri")); a.status != 200 {
		t.Fatalf("dialog code: %d %s", a.status, a.body)
	}
	q.Set("client_id", "999")
	if a := get(t, s.URL()+"/v22.0/dialog/oauth?"+q.Encode(), ""); a.status != 400 {
		t.Fatalf("dialog of another app: %d", a.status)
	}

	// POST /_fake/codes, for the SDK flow.
	a = post(t, s.URL()+"/_fake/codes", "", `{"waba_id":"42","phone_numbers":[{"id":"4242"}],"token_expires_in_days":60}`)
	var v struct {
		Code   string   `json:"code"`
		WABAID string   `json:"waba_id"`
		IDs    []string `json:"phone_number_ids"`
	}
	if a.status != 200 || json.Unmarshal(a.body, &v) != nil || v.Code == "" || v.WABAID != "42" || len(v.IDs) != 1 {
		t.Fatalf("/_fake/codes: %d %s", a.status, a.body)
	}
	if a := post(t, s.URL()+"/_fake/codes", "", `{"phone_numbers":[{"id":"x"}]}`); a.status != 400 {
		t.Fatalf("/_fake/codes with a bad number: %d", a.status)
	}
}

func hmacHex(secret, msg string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(msg))
	return hex.EncodeToString(m.Sum(nil))
}
