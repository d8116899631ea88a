package sender

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/google/uuid"

	"github.com/aerostic/aerogate/internal/queue"
)

func TestDecodeSend(t *testing.T) {
	id := uuid.NewString()
	tests := []struct {
		name    string
		value   string
		wantErr bool
		wantTo  string
	}{
		{"valid", `{"id":"` + id + `","tenant_id":"t","phone_number_id":"1","to":"155","payload":{"to":"155"}}`, false, "155"},
		{"recipient from the payload", `{"id":"` + id + `","tenant_id":"t","phone_number_id":"1","payload":{"to":"166"}}`, false, "166"},
		{"id not a uuid", `{"id":"x","tenant_id":"t","phone_number_id":"1","to":"155","payload":{}}`, true, "155"},
		{"no tenant", `{"id":"` + id + `","phone_number_id":"1","to":"155","payload":{}}`, true, "155"},
		{"payload not an object", `{"id":"` + id + `","tenant_id":"t","phone_number_id":"1","to":"155","payload":[1]}`, true, "155"},
		{"not json", `{"id":`, true, ""},
		{"empty", ``, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, err := decodeSend([]byte(tt.value))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, queue.ErrInvalidEnvelope) {
				t.Fatalf("err %v is not ErrInvalidEnvelope", err)
			}
			if env == nil || env.Recipient != tt.wantTo {
				t.Fatalf("envelope %+v, want recipient %q", env, tt.wantTo)
			}
		})
	}
}

// FuzzDecodeSend: whatever arrives on wa.sends, decoding never panics, always yields an
// envelope (for the dead letter), and a value it accepts has what the sender relies on.
func FuzzDecodeSend(f *testing.F) {
	id := uuid.NewString()
	f.Add([]byte(`{"id":"` + id + `","tenant_id":"t","phone_number_id":"1","to":"155","payload":{"to":"155"}}`))
	f.Add([]byte(`{"id":"` + id + `","tenant_id":"t","phone_number_id":"1","payload":{"to":"1"},"attempt":3,"not_before":"2026-01-01T00:00:00Z","error":{"code":4,"title":"x"}}`))
	f.Add([]byte(`{"id":"` + id + `","tenant_id":"t","phone_number_id":"1","payload":{"to":1}}`))
	f.Add([]byte(`{"id":1}`))
	f.Add([]byte(`null`))
	f.Add([]byte{0xff, 0x00})
	f.Fuzz(func(t *testing.T, value []byte) {
		env, err := decodeSend(value)
		if env == nil {
			t.Fatal("nil envelope")
		}
		if err != nil {
			return
		}
		if _, perr := uuid.Parse(env.ID); perr != nil || env.TenantID == "" || env.PhoneNumberID == "" {
			t.Fatalf("accepted an envelope without a uuid id, tenant or number: %+v", env)
		}
		if len(env.Payload) == 0 || env.Payload[0] != '{' || !json.Valid(env.Payload) {
			t.Fatalf("accepted a payload that is not a JSON object: %q", env.Payload)
		}
		if env.Attempt < 0 {
			t.Fatalf("accepted a negative attempt")
		}
		// What the sender writes back to the retry topic decodes to the same message.
		b, err := queue.Encode(env)
		if err != nil {
			t.Fatalf("re-encoding an accepted envelope: %v", err)
		}
		again, err := decodeSend(b)
		if err != nil || again.ID != env.ID || again.Recipient != env.Recipient {
			t.Fatalf("round trip changed the envelope: %+v, %v", again, err)
		}
	})
}
