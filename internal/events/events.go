// Package events is wa.events, the normalized stream of what ingest stored from Meta's
// webhooks: inbound messages, message status changes and account updates, one record per
// stored change, keyed by tenant. The record format is versioned and described by a JSON
// schema (wa.events.v1.schema.json beside this file, embedded as Schema).
//
// # Published once, through an outbox
//
// A change and its record are written in one Postgres transaction: the change's row (an
// inbound message, a status of a message, an account's throughput) and a row of
// event_outbox. The Relay publishes outbox rows to wa.events (acks=all) and deletes them
// once the broker acknowledged, in one transaction that holds the rows locked, so:
//
//   - a change that was not stored has no record (a duplicate webhook inserts nothing,
//     so it publishes nothing);
//   - a crash between storing and publishing loses no record: the row stays in the outbox
//     and the next relay publishes it;
//   - the one window left is a crash after the broker acknowledged and before the delete
//     committed: the record is published again, with the same id. Consumers that must
//     not see a record twice drop repeated ids.
//
// Records of one tenant are published in the order their changes were stored by one
// relay; with several ingest instances, two relays may interleave, so consumers order by
// occurred_at when it matters.
package events

import (
	_ "embed"
	"encoding/json"
	"time"
)

// Version is the version of the record format; a consumer reads records of versions it
// knows and skips the others.
const Version = 1

// Event types.
const (
	TypeMessageReceived = "message.received" // a customer's message to a tenant's number
	TypeMessageStatus   = "message.status"   // Meta reported a status of a message the tenant sent
	TypeAccountUpdate   = "account.update"   // Meta changed a number's throughput
)

// Schema is the JSON schema of wa.events records (draft 2020-12).
//
//go:embed wa.events.v1.schema.json
var Schema []byte

// Event is one wa.events record. Its key on the topic is TenantID.
type Event struct {
	Version       int             `json:"version"`
	ID            string          `json:"id"` // stable across a republish: drop repeats by it
	Type          string          `json:"type"`
	TenantID      string          `json:"tenant_id"`
	PhoneNumberID string          `json:"phone_number_id"`
	OccurredAt    time.Time       `json:"occurred_at"` // Meta's timestamp of the change
	Data          json.RawMessage `json:"data"`
}
