package ingest

import (
	"encoding/json"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/aerostic/aerogate/internal/webhook"
)

// Dead-letter reasons, the values of a wa.webhooks.dlq record's reason (and of its
// reason header). Detail says more.
const (
	ReasonUnparsable    = "unparsable_body"      // the body is not a WhatsApp Business Account webhook
	ReasonInvalidItem   = "invalid_item"         // an entry, change or item that cannot be read
	ReasonUnknownNumber = "unknown_phone_number" // no connected account has the item's number
	ReasonRejected      = "rejected_by_database" // Postgres refused the item's values (e.g. \u0000 in text)
)

// DeadLetter is a wa.webhooks.dlq record: one item (or a whole body) ingest could not
// store, with why. The rest of its body was stored.
type DeadLetter struct {
	Reason        string          `json:"reason"`
	Detail        string          `json:"detail,omitempty"`
	ReceivedAt    time.Time       `json:"received_at"`
	Partition     int             `json:"partition"` // where the body is on wa.webhooks
	Offset        int64           `json:"offset"`
	WABAID        string          `json:"waba_id,omitempty"`
	Field         string          `json:"field,omitempty"`
	PhoneNumberID string          `json:"phone_number_id,omitempty"`
	Entry         *int            `json:"entry,omitempty"` // the item's place in the body
	Change        *int            `json:"change,omitempty"`
	Index         *int            `json:"index,omitempty"`
	Item          json.RawMessage `json:"item,omitempty"` // the item as JSON
	Body          []byte          `json:"body,omitempty"` // a whole unparsable body (base64)
}

// deadLetterItem builds the record of one item.
func deadLetterItem(b *body, it *webhook.Item, reason, detail string) kafka.Message {
	d := DeadLetter{
		Reason: reason, Detail: detail, ReceivedAt: b.receivedAt, Partition: b.partition, Offset: b.offset,
		WABAID: it.WABAID, Field: it.Field, PhoneNumberID: it.PhoneNumberID,
		Item: it.Raw,
	}
	if it.Entry >= 0 {
		d.Entry = &it.Entry
	}
	if it.Change >= 0 {
		d.Change = &it.Change
	}
	if it.Index >= 0 {
		d.Index = &it.Index
	}
	return encodeDeadLetter(&d, it.WABAID)
}

// deadLetterBody builds the record of a whole body that does not parse.
func deadLetterBody(b *body, detail string) kafka.Message {
	d := DeadLetter{Reason: ReasonUnparsable, Detail: detail, ReceivedAt: b.receivedAt,
		Partition: b.partition, Offset: b.offset, Body: b.raw}
	return encodeDeadLetter(&d, "")
}

func encodeDeadLetter(d *DeadLetter, key string) kafka.Message {
	if len(d.Item) > 0 && !json.Valid(d.Item) {
		d.Item = nil
	}
	v, err := json.Marshal(d)
	if err != nil {
		// Only Item could fail, and it was checked; keep the record without it.
		d.Item = nil
		v, _ = json.Marshal(d)
	}
	m := kafka.Message{Value: v, Headers: []kafka.Header{{Key: "reason", Value: []byte(d.Reason)}}}
	if key != "" {
		m.Key = []byte(key)
	}
	return m
}
