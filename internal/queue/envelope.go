package queue

import (
	"encoding/json"
	"errors"
	"fmt"
)

// ErrInvalidEnvelope is returned by Decode for anything that is not a usable envelope.
var ErrInvalidEnvelope = errors.New("invalid envelope")

// Encode marshals e for a topic value.
func Encode(e *Envelope) ([]byte, error) {
	if e == nil {
		return nil, fmt.Errorf("encoding envelope: %w: nil", ErrInvalidEnvelope)
	}
	if err := e.validate(); err != nil {
		return nil, fmt.Errorf("encoding envelope %s: %w", e.ID, err)
	}
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("encoding envelope %s: %w", e.ID, err)
	}
	return b, nil
}

// Decode parses a topic value into an envelope. It rejects malformed JSON, trailing
// data, and envelopes without id, tenant, phone number id or a JSON object payload.
// Unknown fields are ignored so that older consumers read newer envelopes.
func Decode(b []byte) (*Envelope, error) {
	var e Envelope
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("decoding envelope: %w: %w", ErrInvalidEnvelope, err)
	}
	if err := e.validate(); err != nil {
		return nil, fmt.Errorf("decoding envelope: %w", err)
	}
	return &e, nil
}

func (e *Envelope) validate() error {
	switch {
	case e.ID == "":
		return fmt.Errorf("%w: missing id", ErrInvalidEnvelope)
	case e.TenantID == "":
		return fmt.Errorf("%w: missing tenant_id", ErrInvalidEnvelope)
	case e.PhoneNumberID == "":
		return fmt.Errorf("%w: missing phone_number_id", ErrInvalidEnvelope)
	// Only the shape: Unmarshal (Decode) and Marshal (Encode) already reject a RawMessage
	// that is not valid JSON; a second pass cost ~0.5 µs a message (BenchmarkDecode).
	case len(e.Payload) == 0 || e.Payload[0] != '{':
		return fmt.Errorf("%w: payload is not a JSON object", ErrInvalidEnvelope)
	case e.Attempt < 0:
		return fmt.Errorf("%w: negative attempt", ErrInvalidEnvelope)
	}
	return nil
}
