// Package webhook is what both ends of Meta's webhooks share: the signature check
// (X-Hub-Signature-256 over the raw body, several app secrets for rotation, constant-time
// comparison), the edge that answers Meta (the handshake, and POSTs published whole to
// wa.webhooks before the 200), used by the gateway's route and by `aerogate webhooks`, and
// the walk over a body's entries, changes and items that ingest stores.
//
// The walk reports every item on its own, wherever it sits in the body: peers that read
// only the first entry or change of a batch lose the rest, and a batch of 1,000 updates is
// 1,000 items here. An item that cannot be read is reported as such (with a reason for the
// dead-letter topic) and the walk goes on.
package webhook
