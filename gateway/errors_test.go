package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/valyala/fasthttp"

	"github.com/aerostic/aerogate/internal/account"
	"github.com/aerostic/aerogate/internal/queue"
)

// erroringResolver fails every lookup as a down Postgres would.
type erroringResolver struct{}

func (erroringResolver) Resolve(context.Context, string, string) (*account.Account, error) {
	return nil, errors.New("connection refused")
}

const okText = `{"messaging_product":"whatsapp","to":"+91 98765 43210","type":"text","text":{"body":"hi"}}`

// TestMetaErrorShape pins down the errors of POST /{version}/{phone_number_id}/messages:
// Meta's shape, Meta's code, subcode, type and HTTP status, fbtrace_id = the request id.
// /v1 keeps its own shape for the same failures.
func TestMetaErrorShape(t *testing.T) {
	expired := testAccount()
	past := time.Now().Add(-time.Hour)
	expired.TokenExpiresAt = &past
	reconnect := testAccount()
	reconnect.TokenStatus = account.StatusNeedsReconnect

	tests := []struct {
		name     string
		resolver AccountResolver
		sink     Publisher
		uri      string
		token    string // "" means the test tenant's valid token
		body     string
		maxBody  int

		status    int
		code      int
		subcode   int
		typ       string
		stable    string // error_data.aerogate_code, and the /v1 code
		v1Status  int    // 0: the same request is not tried on /v1
		messageID bool   // error_data.message_id names the message
	}{
		{name: "bad token", uri: "/v22.0/1001/messages", token: "not-a-jwt", body: okText,
			status: 401, code: 190, typ: "OAuthException", stable: "unauthorized", v1Status: 401},
		{name: "phone number id Meta never issues", uri: "/v22.0/dev-1/messages", body: okText,
			status: 400, code: 100, subcode: 33, typ: "GraphMethodException", stable: "invalid_phone_number_id"},
		{name: "phone number id in the body", uri: "/v22.0/1001/messages",
			body:   `{"messaging_product":"whatsapp","phone_number_id":"dev-1","to":"15551234567","type":"text","text":{"body":"hi"}}`,
			status: 400, code: 100, subcode: 33, typ: "GraphMethodException", stable: "invalid_phone_number_id", v1Status: 400},
		{name: "unknown account", uri: "/v22.0/9999/messages", body: okText,
			status: 400, code: 100, subcode: 33, typ: "GraphMethodException", stable: "account_not_found"},
		{name: "bad version", uri: "/v22/1001/messages", body: okText,
			status: 400, code: 100, subcode: 33, typ: "GraphMethodException", stable: "invalid_version"},
		{name: "body too large", uri: "/v22.0/1001/messages", body: okText, maxBody: 16,
			status: 413, code: 100, typ: "OAuthException", stable: "body_too_large", v1Status: 413},
		{name: "not JSON", uri: "/v22.0/1001/messages", body: `{`,
			status: 400, code: 100, typ: "OAuthException", stable: "invalid_json", v1Status: 400},
		{name: "bad recipient", uri: "/v22.0/1001/messages",
			body:   `{"messaging_product":"whatsapp","to":"call me","type":"text","text":{"body":"hi"}}`,
			status: 400, code: 131009, typ: "OAuthException", stable: "invalid_to", v1Status: 400},
		{name: "text of 4,097 characters", uri: "/v22.0/1001/messages",
			body:   `{"messaging_product":"whatsapp","to":"15551234567","type":"text","text":{"body":"` + strings.Repeat("a", 4097) + `"}}`,
			status: 400, code: 131009, typ: "OAuthException", stable: "invalid_text_body", v1Status: 400},
		{name: "unknown type", uri: "/v22.0/1001/messages",
			body:   `{"messaging_product":"whatsapp","to":"15551234567","type":"fax","fax":{}}`,
			status: 400, code: 131051, typ: "OAuthException", stable: "invalid_type", v1Status: 400},
		{name: "other tenant", uri: "/v22.0/1001/messages?tenantId=t2", body: okText,
			status: 403, code: 200, typ: "OAuthException", stable: "tenant_mismatch"},
		{name: "account token expired", resolver: &fixedResolver{acct: expired}, uri: "/v22.0/1001/messages", body: okText,
			status: 401, code: 190, subcode: 463, typ: "OAuthException", stable: "account_token_expired", v1Status: 409},
		{name: "account needs reconnecting", resolver: &fixedResolver{acct: reconnect}, uri: "/v22.0/1001/messages", body: okText,
			status: 403, code: 131005, typ: "OAuthException", stable: "account_needs_reconnect", v1Status: 409},
		{name: "Postgres unavailable", resolver: erroringResolver{}, uri: "/v22.0/1001/messages", body: okText,
			status: 503, code: 2, typ: "OAuthException", stable: "unavailable", v1Status: 503},
		{name: "Kafka unavailable", sink: failingSink{fmt.Errorf("%w: %w", queue.ErrUnavailable, queue.ErrNotWritten)}, uri: "/v22.0/1001/messages", body: okText,
			status: 503, code: 2, typ: "OAuthException", stable: "queue_unavailable", v1Status: 503},
		{name: "Kafka timed out", sink: failingSink{fmt.Errorf("%w: %w", queue.ErrUnavailable, queue.ErrOutcomeUnknown)}, uri: "/v22.0/1001/messages", body: okText,
			status: 504, code: 2, typ: "OAuthException", stable: "queue_timeout", v1Status: 504, messageID: true},
		{name: "panic", resolver: &fixedResolver{acct: testAccount(), panic: true}, uri: "/v22.0/1001/messages", body: okText,
			status: 500, code: 1, typ: "OAuthException", stable: "internal_error", v1Status: 500},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, sink := tc.resolver, tc.sink
			if res == nil {
				res = &fixedResolver{acct: testAccount()}
			}
			if sink == nil {
				sink = nopSink{}
			}
			s, tok := unitServer(t, res, sink)
			if tc.maxBody > 0 {
				s.opts.MaxSendBodyBytes = tc.maxBody
			}
			if tc.token != "" {
				tok = tc.token
			}
			ctx := sendCtx(tok, tc.body)
			ctx.Request.SetRequestURI(tc.uri)
			s.Handler()(ctx)

			if got := ctx.Response.StatusCode(); got != tc.status {
				t.Fatalf("status %d, want %d: %s", got, tc.status, ctx.Response.Body())
			}
			var top map[string]map[string]json.RawMessage
			if err := json.Unmarshal(ctx.Response.Body(), &top); err != nil || len(top) != 1 || top["error"] == nil {
				t.Fatalf("body %s is not {\"error\":{…}} (%v)", ctx.Response.Body(), err)
			}
			keys := make([]string, 0, len(top["error"]))
			for k := range top["error"] {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			want := []string{"code", "error_data", "fbtrace_id", "message", "type"}
			if tc.subcode != 0 {
				want = append(want, "error_subcode")
			}
			if tc.status >= 500 {
				want = append(want, "is_transient")
			}
			slices.Sort(want)
			var data map[string]json.RawMessage
			if err := json.Unmarshal(top["error"]["error_data"], &data); err != nil {
				t.Fatal(err)
			}
			if _, ok := data["message_id"]; ok != tc.messageID {
				t.Errorf("error_data %s: message_id present %v, want %v", top["error"]["error_data"], ok, tc.messageID)
			}
			if !slices.Equal(keys, want) {
				t.Errorf("error fields %v, want %v", keys, want)
			}
			var e struct {
				Error struct {
					Message      string `json:"message"`
					Type         string `json:"type"`
					Code         int    `json:"code"`
					ErrorSubcode int    `json:"error_subcode"`
					IsTransient  bool   `json:"is_transient"`
					ErrorData    struct {
						MessagingProduct string `json:"messaging_product"`
						Details          string `json:"details"`
						AerogateCode     string `json:"aerogate_code"`
						MessageID        string `json:"message_id"`
					} `json:"error_data"`
					FBTraceID string `json:"fbtrace_id"`
				} `json:"error"`
			}
			if err := json.Unmarshal(ctx.Response.Body(), &e); err != nil {
				t.Fatal(err)
			}
			got := e.Error
			if got.Code != tc.code || got.ErrorSubcode != tc.subcode || got.Type != tc.typ || got.ErrorData.AerogateCode != tc.stable {
				t.Errorf("code %d subcode %d type %s aerogate_code %s, want %d %d %s %s",
					got.Code, got.ErrorSubcode, got.Type, got.ErrorData.AerogateCode, tc.code, tc.subcode, tc.typ, tc.stable)
			}
			if got.Message == "" || got.ErrorData.Details != got.Message || got.ErrorData.MessagingProduct != "whatsapp" {
				t.Errorf("message %q, error_data %+v", got.Message, got.ErrorData)
			}
			if rid := string(ctx.Response.Header.Peek(headerRequestID)); got.FBTraceID == "" || got.FBTraceID != rid {
				t.Errorf("fbtrace_id %q, X-Request-Id %q", got.FBTraceID, rid)
			}
			if _, err := uuid.Parse(got.ErrorData.MessageID); tc.messageID && err != nil {
				t.Errorf("message_id %q is not a message id", got.ErrorData.MessageID)
			}
			if got.IsTransient != (tc.status >= 500) {
				t.Errorf("is_transient = %v at %d", got.IsTransient, tc.status)
			}
			if strings.Contains(string(ctx.Response.Body()), tok) || strings.Contains(string(ctx.Response.Body()), "secret-meta-token") {
				t.Errorf("a token leaked: %s", ctx.Response.Body())
			}

			if tc.v1Status == 0 {
				return
			}
			// The same failure on /v1 keeps aerogate's shape.
			v1 := sendCtx(tok, tc.body)
			s.Handler()(v1)
			var v struct {
				Error map[string]string `json:"error"`
			}
			wantFields := 3
			if tc.messageID {
				wantFields = 4 // and "id"
			}
			if err := json.Unmarshal(v1.Response.Body(), &v); err != nil || v1.Response.StatusCode() != tc.v1Status ||
				v.Error["code"] != tc.stable || v.Error["message"] == "" || v.Error["request_id"] == "" || len(v.Error) != wantFields {
				t.Errorf("/v1 answered %d %s (%v), want %d with code %s", v1.Response.StatusCode(), v1.Response.Body(), err, tc.v1Status, tc.stable)
			}
		})
	}
}

// Codes the gateway does not name itself map by their status, so a new code is Meta-shaped
// from its first use.
func TestMetaErrorOfUnlistedCodes(t *testing.T) {
	for _, tc := range []struct {
		status     int
		wantStatus int
		wantCode   int
	}{
		{422, 400, 100},
		{409, 400, 100},
		{404, 400, 100},
		{429, 429, 4},
		{408, 408, 100},
		{431, 431, 100},
		{500, 500, 1},
		{503, 503, 2},
		{504, 504, 2},
	} {
		m := metaErrorOf(&apiError{status: tc.status, code: "some_new_code"})
		if m.status != tc.wantStatus || m.code != tc.wantCode || m.typ != "OAuthException" {
			t.Errorf("status %d → %+v, want status %d code %d", tc.status, m, tc.wantStatus, tc.wantCode)
		}
	}
}

func TestOnGraphPath(t *testing.T) {
	for _, tc := range []struct {
		path string
		want bool
	}{
		{"/v22.0/106540352242922/messages", true},
		{"/v22/dev-1/messages", true},
		{"/v1/messages", false},
		{"/v1/messages/messages", false},
		{"/v1/messages/7c9e6679-7425-40de-944b-e07cc9f1f5a1", false},
		{"/v22.0/1/messages/", false},
		{"/v22.0//messages", false},
		{"//1/messages", false},
		{"/v22.0/1/2/messages", false},
		{"/healthz", false},
		{"", false},
	} {
		if got := onGraphPath([]byte(tc.path)); got != tc.want {
			t.Errorf("onGraphPath(%q) = %v", tc.path, got)
		}
	}
	var ctx fasthttp.RequestCtx
	ctx.Request.SetRequestURI("/v22.0/1/messages?tenantId=x")
	if !onGraphPath(ctx.Path()) {
		t.Error("the query string hides the route")
	}
}
