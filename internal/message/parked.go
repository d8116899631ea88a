package message

// Parked sends: the durable per-number queue the sender keeps outside Kafka for sends
// that cannot go soon (their number's pace is spent, their account stopped, their number
// paused). A parked send is a row of parked_sends keyed by the wa.sends partition it
// came from, its phone number id and seq, its offset in that partition (so a number's
// rows are in the order they were accepted, and a send parked twice after a redelivery
// lands on its own row); urgent rows (priority 0) are drained before the others. Parking
// also moves the message to queued with an expected send time.

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// StatusQueued: the message waits in the sender's per-number queue (parked_sends) for
// its number's pace, account or pause. Set by parking, between accepted and sending.
const StatusQueued Status = "queued"

// ParkedKey names one parked row.
type ParkedKey struct {
	Partition     int
	PhoneNumberID string
	Seq           int64
}

// Park is a send to park. Claim is the message's identity (its row is created queued if
// the gateway has not written it yet); Envelope is what the drain will send (the
// wa.sends value, never a token).
type Park struct {
	Key ParkedKey
	Claim
	Urgent   bool
	Envelope []byte
	// ExpectedSendAt is the estimate GET /v1/messages/{id} shows; nil when unknown (the
	// account cannot send).
	ExpectedSendAt *time.Time
}

// ParkResult is what parking did.
type ParkResult struct {
	// Inserted is false when the row was there already (a redelivered send).
	Inserted bool
	// Urgent is the row's priority: an urgent send whose recipient already has other
	// rows waiting is parked behind them, not urgent.
	Urgent bool
}

// ParkedRow is a row read back by the drain.
type ParkedRow struct {
	ParkedKey
	Urgent   bool
	Envelope []byte
	ParkedAt time.Time
}

// ParkedNumber is a number with rows parked in one partition.
type ParkedNumber struct {
	PhoneNumberID string
	TenantID      string
	Rows          int64
	Oldest        time.Time
}

// parkSQL inserts the rows; an urgent row whose recipient has rows of the ordinary
// priority waiting is demoted behind them (urgent never breaks a recipient's order).
// Rows that exist already (same partition, number and seq) are left alone.
const parkSQL = `
INSERT INTO parked_sends (partition, phone_number_id, seq, priority, message_id, tenant_id, recipient, envelope)
SELECT t.partition, t.phone, t.seq,
       CASE WHEN t.priority = 0 THEN
            CASE WHEN EXISTS (SELECT 1 FROM parked_sends q
                               WHERE q.partition = t.partition AND q.phone_number_id = t.phone
                                 AND q.recipient = t.recipient AND q.priority = 1)
                 THEN 1 ELSE 0 END
            ELSE t.priority END,
       t.message_id::uuid, t.tenant, t.recipient, t.envelope
  FROM unnest($1::int[], $2::text[], $3::bigint[], $4::smallint[], $5::text[], $6::text[], $7::text[], $8::bytea[])
       AS t(partition, phone, seq, priority, message_id, tenant, recipient, envelope)
ON CONFLICT DO NOTHING
RETURNING partition, phone_number_id, seq, priority`

// queuedSQL moves the parked messages to queued (creating rows the gateway has not
// written yet). Status only moves forward: a message already sending or beyond keeps
// its status.
const queuedSQL = `
INSERT INTO messages AS m (id, tenant_id, account_id, phone_number_id, recipient, idempotency_key,
                           status, accepted_at, updated_at, expected_send_at)
SELECT t.id::uuid, t.tenant_id, t.account_id::uuid, t.phone_number_id, t.recipient,
       NULLIF(t.idempotency_key, ''), 'queued', t.accepted_at, now(), t.expected
  FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[],
              $8::timestamptz[])
       AS t(id, tenant_id, account_id, phone_number_id, recipient, idempotency_key, accepted_at, expected)
ON CONFLICT (id) DO UPDATE
   SET status = 'queued', expected_send_at = excluded.expected_send_at, updated_at = now()
 WHERE m.status IN ('unknown', 'accepted', 'queued')`

// unparkSQL deletes drained rows of one number; = ANY on the primary key's last column
// is one index lookup per row whatever the statistics say.
const unparkSQL = `DELETE FROM parked_sends WHERE partition = $1 AND phone_number_id = $2 AND seq = ANY($3::bigint[])`

// parkedPageSQL reads the next rows to drain of one number, urgent first, each priority
// in seq order, leaving out the rows the drain holds already ($3) and the ordinary rows
// below $5 (drained and deleted: the index scan starts past their dead entries instead
// of stepping over every one the drain deleted since the last vacuum).
const parkedPageSQL = `
(SELECT seq, priority, envelope, parked_at FROM parked_sends
  WHERE partition = $1 AND phone_number_id = $2 AND priority = 0 AND seq <> ALL($3::bigint[])
  ORDER BY seq LIMIT $4)
UNION ALL
(SELECT seq, priority, envelope, parked_at FROM parked_sends
  WHERE partition = $1 AND phone_number_id = $2 AND seq >= $5 AND priority = 1 AND seq <> ALL($3::bigint[])
  ORDER BY seq LIMIT $4)
LIMIT $4`

const parkedNumbersSQL = `
SELECT phone_number_id, min(tenant_id), count(*), min(parked_at)
  FROM parked_sends WHERE partition = $1 GROUP BY phone_number_id`

// queueParks adds the statements parking ps to b, filling res when they run.
func queueParks(b *pgx.Batch, ps []Park, res []ParkResult) {
	if len(ps) == 0 {
		return
	}
	n := len(ps)
	parts := make([]int32, n)
	phones := make([]string, n)
	seqs := make([]int64, n)
	prios := make([]int16, n)
	ids := make([]string, n)
	tenants := make([]string, n)
	recipients := make([]string, n)
	envs := make([][]byte, n)
	index := make(map[ParkedKey]int, n)
	for i := range ps {
		p := &ps[i]
		parts[i], phones[i], seqs[i] = int32(p.Key.Partition), p.Key.PhoneNumberID, p.Key.Seq
		prios[i] = 1
		if p.Urgent {
			prios[i] = 0
		}
		ids[i], tenants[i], recipients[i], envs[i] = canonicalID(p.ID), p.TenantID, p.Recipient, p.Envelope
		index[p.Key] = i
	}
	b.Queue(parkSQL, parts, phones, seqs, prios, ids, tenants, recipients, envs).Query(func(rows pgx.Rows) error {
		var k ParkedKey
		var part int32
		var prio int16
		_, err := pgx.ForEachRow(rows, []any{&part, &k.PhoneNumberID, &k.Seq, &prio}, func() error {
			k.Partition = int(part)
			if i, ok := index[k]; ok {
				res[i] = ParkResult{Inserted: true, Urgent: prio == 0}
			}
			return nil
		})
		return err
	})

	// The messages rows, in id order (see rowColumns.args); one per id.
	byID := make(map[string]int, n)
	keep := make([]int, 0, n)
	for i := range ps {
		if _, twice := byID[ids[i]]; !twice {
			byID[ids[i]] = i
			keep = append(keep, i)
		}
	}
	slices.SortFunc(keep, func(a, b int) int { return strings.Compare(ids[a], ids[b]) })
	cols := makeRowColumns(len(keep))
	expected := make([]pgtype.Timestamptz, len(keep))
	for k, i := range keep {
		cols.add(&ps[i].Claim)
		if e := ps[i].ExpectedSendAt; e != nil {
			expected[k] = pgtype.Timestamptz{Time: *e, Valid: true}
		}
	}
	b.Queue(queuedSQL, cols.args(expected)...)
}

// queueUnparks adds the deletion of keys to b, one statement per number.
func queueUnparks(b *pgx.Batch, keys []ParkedKey) {
	type number struct {
		partition int
		phone     string
	}
	groups := map[number][]int64{}
	var order []number
	for _, k := range keys {
		n := number{k.Partition, k.PhoneNumberID}
		if _, ok := groups[n]; !ok {
			order = append(order, n)
		}
		groups[n] = append(groups[n], k.Seq)
	}
	for _, n := range order {
		seqs := groups[n]
		slices.Sort(seqs)
		b.Queue(unparkSQL, int32(n.partition), n.phone, seqs)
	}
}

// ParkMany parks ps in one round trip (see Batcher.Park).
func (r *Repository) ParkMany(ctx context.Context, ps []Park) ([]ParkResult, error) {
	res := make([]ParkResult, len(ps))
	if len(ps) == 0 {
		return res, nil
	}
	for i := range ps {
		if err := validID(ps[i].ID); err != nil {
			return nil, err
		}
	}
	b := &pgx.Batch{}
	queueParks(b, ps, res)
	if err := r.pool.SendBatch(ctx, b).Close(); err != nil {
		return nil, fmt.Errorf("parking %d sends: %w", len(ps), err)
	}
	return res, nil
}

// UnparkMany deletes drained rows in one round trip.
func (r *Repository) UnparkMany(ctx context.Context, keys []ParkedKey) error {
	if len(keys) == 0 {
		return nil
	}
	b := &pgx.Batch{}
	queueUnparks(b, keys)
	if err := r.pool.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("deleting %d drained sends: %w", len(keys), err)
	}
	return nil
}

// ParkedPage returns up to limit rows of a number to drain next: its urgent rows, then
// the others from seq from on, each in seq order, without the rows in holding (drained
// already, not yet deleted). A page holds at most limit rows whatever the backlog.
func (r *Repository) ParkedPage(ctx context.Context, partition int, phoneNumberID string, holding []int64, from int64, limit int) ([]ParkedRow, error) {
	if holding == nil {
		holding = []int64{}
	}
	rows, err := r.pool.Query(ctx, parkedPageSQL, int32(partition), phoneNumberID, holding, limit, from)
	if err != nil {
		return nil, fmt.Errorf("reading parked sends of %s: %w", phoneNumberID, err)
	}
	var out []ParkedRow
	var row ParkedRow
	var prio int16
	_, err = pgx.ForEachRow(rows, []any{&row.Seq, &prio, &row.Envelope, &row.ParkedAt}, func() error {
		out = append(out, ParkedRow{
			ParkedKey: ParkedKey{Partition: partition, PhoneNumberID: phoneNumberID, Seq: row.Seq},
			Urgent:    prio == 0, Envelope: row.Envelope, ParkedAt: row.ParkedAt,
		})
		row.Envelope = nil
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading parked sends of %s: %w", phoneNumberID, err)
	}
	// UNION ALL keeps its branches' order in practice; make it certain.
	slices.SortStableFunc(out, func(a, b ParkedRow) int {
		if a.Urgent != b.Urgent {
			if a.Urgent {
				return -1
			}
			return 1
		}
		return int(min(max(a.Seq-b.Seq, -1), 1))
	})
	return out, nil
}

// ParkedNumbers returns the numbers with rows parked in partition (read when the
// partition is assigned: its drains start from them). It reads the partition's part of
// the primary key once.
func (r *Repository) ParkedNumbers(ctx context.Context, partition int) ([]ParkedNumber, error) {
	rows, err := r.pool.Query(ctx, parkedNumbersSQL, int32(partition))
	if err != nil {
		return nil, fmt.Errorf("listing parked numbers of partition %d: %w", partition, err)
	}
	var out []ParkedNumber
	var n ParkedNumber
	_, err = pgx.ForEachRow(rows, []any{&n.PhoneNumberID, &n.TenantID, &n.Rows, &n.Oldest}, func() error {
		out = append(out, n)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing parked numbers of partition %d: %w", partition, err)
	}
	return out, nil
}

// Park parks one send (see ParkMany); it returns once the row is durable.
func (b *Batcher) Park(ctx context.Context, p Park) (ParkResult, error) {
	if err := validID(p.ID); err != nil {
		return ParkResult{}, err
	}
	resp, err := b.do(ctx, request{kind: kindPark, id: parkedDedupKey("park", p.Key), park: p})
	return resp.park, err
}

// Unpark deletes one drained row (see UnparkMany).
func (b *Batcher) Unpark(ctx context.Context, k ParkedKey) error {
	_, err := b.do(ctx, request{kind: kindUnpark, id: parkedDedupKey("unpark", k), unpark: k})
	return err
}

// parkedDedupKey keeps one request per parked row in a batch (the batcher's dedup key
// space is otherwise message ids).
func parkedDedupKey(op string, k ParkedKey) string {
	return fmt.Sprintf("%s\x00%d\x00%s\x00%d", op, k.Partition, k.PhoneNumberID, k.Seq)
}
