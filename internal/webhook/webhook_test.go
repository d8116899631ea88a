package webhook_test

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aerostic/aerogate/internal/webhook"
)

func TestVerify(t *testing.T) {
	body := []byte(`{"object":"whatsapp_business_account","entry":[]}`)
	v, err := webhook.NewVerifier("new-secret", "", "old-secret")
	if err != nil {
		t.Fatal(err)
	}
	good := webhook.Sign("new-secret", body)
	tests := []struct {
		name   string
		body   []byte
		header string
		want   error
	}{
		{"valid", body, good, nil},
		{"valid with the rotated-out secret", body, webhook.Sign("old-secret", body), nil},
		{"forged: another secret", body, webhook.Sign("attacker", body), webhook.ErrSignatureInvalid},
		{"forged: body changed", append([]byte(" "), body...), good, webhook.ErrSignatureInvalid},
		{"missing", body, "", webhook.ErrSignatureMissing},
		{"sha1 scheme", body, "sha1=" + strings.Repeat("a", 40), webhook.ErrSignatureMissing},
		{"not hex", body, "sha256=" + strings.Repeat("z", 64), webhook.ErrSignatureMissing},
		{"truncated", body, good[:len(good)-2], webhook.ErrSignatureMissing},
		{"uppercase hex of the right digest", body, "sha256=" + strings.ToUpper(good[len("sha256="):]), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := v.Verify(tt.body, []byte(tt.header)); !errors.Is(err, tt.want) {
				t.Fatalf("Verify = %v, want %v", err, tt.want)
			}
		})
	}
	if _, err := webhook.NewVerifier("", ""); !errors.Is(err, webhook.ErrNoSecret) {
		t.Fatalf("NewVerifier without secrets = %v, want ErrNoSecret", err)
	}
}

// TestWalkEveryItem: every entry, change and item of a batch is reported on its own, in
// body order, and an unreadable one is reported as invalid without stopping the walk.
func TestWalkEveryItem(t *testing.T) {
	body, err := os.ReadFile("testdata/batch.json")
	if err != nil {
		t.Fatal(err)
	}
	var got []webhook.Item
	if err := webhook.Walk(body, func(it *webhook.Item) { got = append(got, *it) }); err != nil {
		t.Fatal(err)
	}
	type want struct {
		kind                 webhook.Kind
		entry, change, index int
		id, reason           string
	}
	wants := []want{
		{webhook.KindMessage, 0, 0, 0, "wamid.in.1", ""},
		{webhook.KindMessage, 0, 0, 1, "wamid.in.2", ""},
		{webhook.KindInvalid, 0, 0, 2, "", "message has no id"},
		{webhook.KindStatus, 0, 1, 0, "wamid.out.1", ""},
		{webhook.KindStatus, 0, 1, 1, "wamid.out.2", ""},
		{webhook.KindInvalid, 0, 1, 2, "wamid.out.3", "status is not sent, delivered, read or failed"},
		{webhook.KindQuality, 1, 0, -1, "", ""},
		{webhook.KindOther, 1, 1, -1, "", ""},
		{webhook.KindInvalid, 1, 2, 0, "", "change has no metadata.phone_number_id"},
		{webhook.KindInvalid, 1, 3, -1, "", "change is not an object"},
		{webhook.KindInvalid, 2, -1, -1, "", "entry is not an object"},
	}
	if len(got) != len(wants) {
		for _, g := range got {
			t.Logf("%v e%d c%d i%d %s %s", g.Kind, g.Entry, g.Change, g.Index, g.ID, g.Reason)
		}
		t.Fatalf("got %d items, want %d", len(got), len(wants))
	}
	for i, w := range wants {
		g := got[i]
		if g.Kind != w.kind || g.Entry != w.entry || g.Change != w.change || g.Index != w.index || g.ID != w.id || g.Reason != w.reason {
			t.Errorf("item %d = %v e%d c%d i%d id %q reason %q; want %v e%d c%d i%d id %q reason %q", i,
				g.Kind, g.Entry, g.Change, g.Index, g.ID, g.Reason, w.kind, w.entry, w.change, w.index, w.id, w.reason)
		}
	}
	m := got[0]
	if m.WABAID != "102290129340398" || m.PhoneNumberID != "106540352242922" || m.From != "919876543210" ||
		m.Type != "text" || !m.Timestamp.Equal(time.Unix(1700000001, 0)) || !strings.Contains(string(m.Contact), "Asha") {
		t.Errorf("first message read as %+v", m)
	}
	if got[1].Timestamp.Unix() != 1700000002 || !strings.Contains(string(got[1].Contact), "Ravi") {
		t.Errorf("second message (numeric timestamp) read as %+v", got[1])
	}
	if s := got[4]; s.Status != "failed" || s.ErrorCode != 131026 || s.ErrorTitle != "Message undeliverable" {
		t.Errorf("failed status read as %+v", s)
	}
	if s := got[3]; !strings.Contains(string(s.Meta), `"pricing"`) || strings.Contains(string(s.Meta), "wamid") {
		t.Errorf("delivered status meta = %s", s.Meta)
	}
	if q := got[6]; q.Event != "THROUGHPUT_UPGRADE" || q.Limit != "TIER_UNLIMITED" || q.DisplayPhoneNumber != "15550001111" || q.WABAID != "204400000000001" {
		t.Errorf("quality update read as %+v", q)
	}
	if id := webhook.FirstWABAID(body); id != "102290129340398" {
		t.Errorf("FirstWABAID = %q", id)
	}
}

func TestWalkUnparsable(t *testing.T) {
	for _, body := range []string{
		``, `not json`, `[]`, `{"object":"page","entry":[]}`, `{"object":"whatsapp_business_account"}`,
		`{"object":"whatsapp_business_account","entry":{}}`, `{"object":"whatsapp_business_account","entry":[]`,
		`{"object":"whatsapp_business_account","entry":[]} trailing`, "{\"object\":\"whatsapp_business_account\",\"entry\":[],\"x\":\"\xff\"}",
		`{"object":"whatsapp_business_account","entry":[` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `]}`,
	} {
		called := false
		err := webhook.Walk([]byte(body), func(*webhook.Item) { called = true })
		if !errors.Is(err, webhook.ErrUnparsable) || called {
			t.Errorf("Walk(%q) = %v (visited %v), want ErrUnparsable and no visit", body, err, called)
		}
	}
}

// FuzzWalk: any input is walked without panicking, every item is placed in the body,
// and a body that parses as JSON reports each item at most once.
func FuzzWalk(f *testing.F) {
	if b, err := os.ReadFile("testdata/batch.json"); err == nil {
		f.Add(b)
	}
	f.Add([]byte(`{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"metadata":{"phone_number_id":"2"},"messages":[{"id":"a","from":"b","type":"text","timestamp":"1"}]}}]}]}`))
	f.Add([]byte(`{"object":"whatsapp_business_account","entry":[[[[[[[[[[]]]]]]]]]]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		seen := map[[4]int]bool{}
		_ = webhook.Walk(body, func(it *webhook.Item) {
			if it.Entry < 0 || (it.Change < -1) || it.Index < -1 {
				t.Fatalf("item placed at %d/%d/%d", it.Entry, it.Change, it.Index)
			}
			k := [4]int{int(it.Kind), it.Entry, it.Change, it.Index}
			if seen[k] && it.Kind != webhook.KindInvalid && it.Kind != webhook.KindOther {
				t.Fatalf("item %v reported twice", k)
			}
			seen[k] = true
			if it.Kind == webhook.KindInvalid && it.Reason == "" {
				t.Fatal("invalid item without a reason")
			}
			if (it.Kind == webhook.KindMessage || it.Kind == webhook.KindStatus) && (it.ID == "" || it.PhoneNumberID == "" || it.Timestamp.IsZero()) {
				t.Fatalf("%v without id, number or time: %+v", it.Kind, it)
			}
		})
		_ = webhook.FirstWABAID(body)
	})
}
