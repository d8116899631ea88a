package ingest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/aerostic/aerogate/internal/webhook"
	"github.com/aerostic/aerogate/internal/whatsapp"
)

// Results of an item, the values of the result label of aerogate_ingest_items_total.
const (
	ResultStored       = "stored"        // written for the first time (and its event put in the outbox)
	ResultDuplicate    = "duplicate"     // written before: nothing changed, nothing published
	ResultPending      = "pending"       // a status waiting for its message's wamid
	ResultIgnored      = "ignored"       // a kind ingest does not store (other fields, other quality events)
	ResultDeadLettered = "dead_lettered" // written to wa.webhooks.dlq
)

// body is one wa.webhooks record.
type body struct {
	partition  int
	offset     int64
	receivedAt time.Time
	raw        []byte
}

// work is one item to store, placed with its tenant.
type work struct {
	body      *body
	item      webhook.Item
	tenantID  string
	accountID string
	result    string // set by store
}

// storeBatch writes ws in one transaction: inbound messages, then statuses, then account
// updates, each with its wa.events outbox row. Every write is idempotent, so a batch
// redelivered after a crash changes nothing the first delivery stored. It sets each
// work's result.
func storeBatch(ctx context.Context, pool *pgxpool.Pool, ws []*work) error {
	var inbound, statuses, quality []*work
	for _, w := range ws {
		switch w.item.Kind {
		case webhook.KindMessage:
			inbound = append(inbound, w)
		case webhook.KindStatus:
			statuses = append(statuses, w)
		case webhook.KindQuality:
			quality = append(quality, w)
		}
	}
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if err := storeInbound(ctx, tx, inbound); err != nil {
			return err
		}
		if err := storeStatuses(ctx, tx, statuses); err != nil {
			return err
		}
		for _, w := range quality {
			if err := storeQuality(ctx, tx, w); err != nil {
				return err
			}
		}
		return nil
	})
}

// lockTenantsSQL takes each tenant's inbound lock, in one order (no deadlocks), so a
// tenant's inbound rows commit in seq order and GET /v1/inbound never passes a row that
// commits later.
const lockTenantsSQL = `
SELECT count(pg_advisory_xact_lock(k))
  FROM (SELECT DISTINCT hashtextextended('aerogate.inbound:' || t, 0) AS k FROM unnest($1::text[]) AS t ORDER BY 1) AS s`

// insertInboundSQL stores each message once per wamid, in the order given, and writes a
// message.received outbox row for each row it inserted (none for a duplicate).
const insertInboundSQL = `
WITH t AS (
    SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[],
                         $7::timestamptz[], $8::timestamptz[], $9::text[], $10::text[])
           WITH ORDINALITY AS t(tenant_id, account_id, phone_number_id, wamid, from_wa_id, type,
                                sent_at, received_at, contact, message, ord)
), ins AS (
    INSERT INTO inbound_messages (tenant_id, account_id, phone_number_id, wamid, from_wa_id, type,
                                  sent_at, received_at, contact, message)
    SELECT tenant_id, account_id, phone_number_id, wamid, from_wa_id, type, sent_at, received_at,
           NULLIF(contact, '')::jsonb, message::jsonb
      FROM t ORDER BY ord
    ON CONFLICT (wamid) DO NOTHING
    RETURNING seq, id, tenant_id, phone_number_id, wamid, from_wa_id, type, sent_at, contact, message
), ev AS (
    INSERT INTO event_outbox (tenant_id, type, phone_number_id, occurred_at, data)
    SELECT tenant_id, 'message.received', phone_number_id, sent_at,
           jsonb_build_object('inbound_id', id, 'wamid', wamid, 'from', from_wa_id, 'type', type,
                              'timestamp', sent_at, 'message', message)
           || CASE WHEN contact IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('contact', contact) END
      FROM ins ORDER BY seq
)
SELECT wamid FROM ins`

func storeInbound(ctx context.Context, tx pgx.Tx, ws []*work) error {
	if len(ws) == 0 {
		return nil
	}
	n := len(ws)
	tenants, accounts, phones, wamids, froms, types := make([]string, n), make([]string, n), make([]string, n),
		make([]string, n), make([]string, n), make([]string, n)
	sent, recv := make([]time.Time, n), make([]time.Time, n)
	contacts, msgs := make([]string, n), make([]string, n)
	for i, w := range ws {
		it := &w.item
		tenants[i], accounts[i], phones[i], wamids[i], froms[i], types[i] = w.tenantID, w.accountID, it.PhoneNumberID, it.ID, it.From, it.Type
		sent[i], recv[i] = it.Timestamp, w.body.receivedAt
		contacts[i], msgs[i] = string(it.Contact), string(it.Raw)
	}
	distinct := slices.Clone(tenants)
	slices.Sort(distinct)
	if _, err := tx.Exec(ctx, lockTenantsSQL, slices.Compact(distinct)); err != nil {
		return fmt.Errorf("locking tenants' inbound order: %w", err)
	}
	rows, err := tx.Query(ctx, insertInboundSQL, tenants, accounts, phones, wamids, froms, types, sent, recv, contacts, msgs)
	if err != nil {
		return fmt.Errorf("storing %d inbound messages: %w", n, err)
	}
	inserted := map[string]bool{}
	var wamid string
	if _, err := pgx.ForEachRow(rows, []any{&wamid}, func() error { inserted[wamid] = true; return nil }); err != nil {
		return fmt.Errorf("storing %d inbound messages: %w", n, err)
	}
	for _, w := range ws {
		w.result = ResultDuplicate
		if inserted[w.item.ID] {
			w.result = ResultStored
			delete(inserted, w.item.ID) // the same wamid twice in a batch is stored once
		}
	}
	return nil
}

// applyStatusesSQL records each status of a known message (webhook_record_status: once
// per message and status, forward only, with its outbox row). The function runs after the
// sort, so message rows are locked in id order, as every writer of messages does.
const applyStatusesSQL = `
SELECT s.ord, webhook_record_status(m.id, s.status, s.at, NULLIF(s.code, 0), NULLIF(s.title, ''),
                                    coalesce(NULLIF(s.meta, '')::jsonb, '{}'::jsonb))
  FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::int[], $6::text[], $7::text[])
       WITH ORDINALITY AS s(wamid, phone_number_id, status, at, code, title, meta, ord)
  JOIN messages m ON m.wamid = s.wamid AND m.phone_number_id = s.phone_number_id
 ORDER BY m.id, s.ord`

// insertPendingSQL keeps statuses whose wamid no message has yet; the messages trigger
// applies them when the sender records the wamid, ingest's sweep when the two crossed.
const insertPendingSQL = `
INSERT INTO pending_statuses (wamid, status, phone_number_id, at, error_code, error_title, data)
SELECT wamid, status, phone_number_id, at, NULLIF(code, 0), NULLIF(title, ''), coalesce(NULLIF(meta, '')::jsonb, '{}'::jsonb)
  FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::int[], $6::text[], $7::text[])
       AS s(wamid, phone_number_id, status, at, code, title, meta)
ON CONFLICT DO NOTHING`

func statusColumns(ws []*work) []any {
	n := len(ws)
	wamids, phones, statuses, titles, metas := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	ats := make([]time.Time, n)
	codes := make([]int32, n)
	for i, w := range ws {
		it := &w.item
		wamids[i], phones[i], statuses[i], ats[i] = it.ID, it.PhoneNumberID, it.Status, it.Timestamp
		codes[i], titles[i], metas[i] = int32(it.ErrorCode), it.ErrorTitle, string(it.Meta)
	}
	return []any{wamids, phones, statuses, ats, codes, titles, metas}
}

func storeStatuses(ctx context.Context, tx pgx.Tx, ws []*work) error {
	if len(ws) == 0 {
		return nil
	}
	rows, err := tx.Query(ctx, applyStatusesSQL, statusColumns(ws)...)
	if err != nil {
		return fmt.Errorf("applying %d statuses: %w", len(ws), err)
	}
	var ord int64
	var applied bool
	_, err = pgx.ForEachRow(rows, []any{&ord, &applied}, func() error {
		if i := int(ord) - 1; i >= 0 && i < len(ws) {
			ws[i].result = ResultDuplicate
			if applied {
				ws[i].result = ResultStored
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("applying %d statuses: %w", len(ws), err)
	}
	var pending []*work
	for _, w := range ws {
		if w.result == "" {
			w.result = ResultPending
			pending = append(pending, w)
		}
	}
	if len(pending) == 0 {
		return nil
	}
	if _, err := tx.Exec(ctx, insertPendingSQL, statusColumns(pending)...); err != nil {
		return fmt.Errorf("keeping %d statuses until their wamid is known: %w", len(pending), err)
	}
	return nil
}

// ThroughputUpgrade is the phone_number_quality_update event that raises a number to
// Meta's higher throughput.
const ThroughputUpgrade = "THROUGHPUT_UPGRADE"

// raiseThroughputSQL raises the number's throughput_mps (the accounts trigger tells every
// sender at once) and writes an account.update outbox row, once: an account already at
// the rate changes nothing. The number is found by WABA and display number, or as the
// WABA's only number. It returns how many accounts matched and how many changed.
const raiseThroughputSQL = `
WITH acct AS (
    SELECT id FROM whatsapp_accounts
     WHERE waba_id = $1
       AND (regexp_replace(display_phone_number, '\D', '', 'g') = regexp_replace($2, '\D', '', 'g')
            OR (SELECT count(*) FROM whatsapp_accounts WHERE waba_id = $1) = 1)
     ORDER BY id FOR UPDATE
), upd AS (
    UPDATE whatsapp_accounts w SET throughput_mps = $3, updated_at = now()
      FROM acct WHERE w.id = acct.id AND w.throughput_mps < $3
    RETURNING w.id, w.tenant_id, w.phone_number_id, w.waba_id, w.throughput_mps
), ev AS (
    INSERT INTO event_outbox (tenant_id, type, phone_number_id, occurred_at, data)
    SELECT tenant_id, 'account.update', phone_number_id, $4,
           jsonb_build_object('account_id', id, 'waba_id', waba_id, 'event', $5::text,
                              'current_limit', $6::text, 'throughput_mps', throughput_mps)
      FROM upd
)
SELECT (SELECT count(*) FROM acct), (SELECT count(*) FROM upd)`

func storeQuality(ctx context.Context, tx pgx.Tx, w *work) error {
	it := &w.item
	var matched, changed int
	err := tx.QueryRow(ctx, raiseThroughputSQL, it.WABAID, it.DisplayPhoneNumber, int(whatsapp.MaxThroughput),
		w.body.receivedAt, it.Event, it.Limit).Scan(&matched, &changed)
	if err != nil {
		return fmt.Errorf("raising throughput of WABA %s: %w", it.WABAID, err)
	}
	switch {
	case matched == 0:
		w.result = ResultDeadLettered
	case changed > 0:
		w.result = ResultStored
	default:
		w.result = ResultDuplicate
	}
	return nil
}

// isDataError reports whether Postgres refused the values themselves (a data exception
// or integrity violation, e.g. \u0000 in a JSON string), which no retry fixes.
func isDataError(err error) bool {
	var pg *pgconn.PgError
	if !errors.As(err, &pg) || len(pg.Code) < 2 {
		return false
	}
	switch pg.Code[:2] {
	case "22", "23":
		return true
	}
	return false
}
