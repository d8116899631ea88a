package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"
	"github.com/valyala/fasthttp"

	"github.com/aerostic/aerogate/config"
	"github.com/aerostic/aerogate/ingest"
	"github.com/aerostic/aerogate/internal/account"
	"github.com/aerostic/aerogate/internal/fakemeta"
	"github.com/aerostic/aerogate/internal/message"
	"github.com/aerostic/aerogate/internal/queue"
	"github.com/aerostic/aerogate/internal/webhook"
	"github.com/aerostic/aerogate/webhooks"
)

// webhooksReport compares signed webhook POSTs accepted by `aerogate webhooks` (signature
// check over the raw body, acks=all publish to the embedded broker, 200 after the
// acknowledgement) with a bare fasthttp handler answering 200, on the same machine and
// load generator; then measures how fast ingest stores a backlog of webhook items.
type webhooksReport struct {
	Bare       result  `json:"bare"`
	Edge       result  `json:"edge"`
	Ratio      float64 `json:"ratio"`
	Peak       float64 `json:"peak"`
	BareAtLoad result  `json:"bare_open_loop"`
	EdgeAtLoad result  `json:"edge_open_loop"` // at the highest -fractions of the edge's peak
	BodySize   int     `json:"body_bytes"`

	IngestBodies  int     `json:"ingest_bodies"`
	IngestItems   int     `json:"ingest_items"` // inbound messages and statuses stored
	IngestSeconds float64 `json:"ingest_seconds"`
	IngestPerSec  float64 `json:"ingest_items_per_sec"`
	CPUSelfUS     float64 `json:"ingest_cpu_self_us_per_item"`
	CPUPostgresUS float64 `json:"ingest_cpu_postgres_us_per_item"`
}

const benchAppSecret = "bench-app-secret"

func runWebhooks(ctx context.Context, o options) (*webhooksReport, error) {
	e, err := newEnv(ctx, o.partitions)
	if err != nil {
		return nil, err
	}
	defer e.close()
	accts, err := e.seed(ctx, o.tenants, 1, 80)
	if err != nil {
		return nil, err
	}
	e.cfg.Meta.AppSecret = benchAppSecret
	e.cfg.Webhooks.Addr = freeAddr()
	e.cfg.Admin.Addr = ""
	e.start("webhooks", webhooks.Run)
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := e.waitReadyAt(rctx, e.cfg.Webhooks.Addr); err != nil {
		return nil, err
	}
	bareAddr, stopBare, err := startBareOK()
	if err != nil {
		return nil, err
	}
	defer stopBare()

	// Signed bodies built once (a status update, as most of Meta's webhooks are): the
	// load generator shares the process with the edge and should not sign per request.
	const nBodies = 4096
	bodies, sigs := make([][]byte, nBodies), make([][]byte, nBodies)
	for i := range bodies {
		a := accts[i%len(accts)]
		bodies[i] = statusWebhook(a, fmt.Sprintf("wamid.bench.%06d", i), "delivered")
		sigs[i] = []byte(webhook.Sign(benchAppSecret, bodies[i]))
	}
	fill := func(req *fasthttp.Request, seq uint64) {
		i := seq % nBodies
		req.Header.SetMethod(fasthttp.MethodPost)
		req.SetRequestURI(webhook.Path)
		req.Header.SetContentType("application/json")
		req.Header.SetBytesV(webhook.SignatureHeader, sigs[i])
		req.SetBody(bodies[i])
	}
	edge := target{name: "edge", addr: e.cfg.Webhooks.Addr, fill: fill, accept: fasthttp.StatusOK}
	bare := target{name: "bare", addr: bareAddr, fill: fill, accept: fasthttp.StatusOK}
	closedLoop(edge, o.conns, o.warmup)
	closedLoop(bare, o.conns, o.warmup)

	rep := &webhooksReport{BodySize: len(bodies[0])}
	rep.Bare = closedLoop(bare, o.conns, o.duration)
	logf("%v", rep.Bare)
	rep.Edge = closedLoop(edge, o.conns, o.duration)
	logf("%v", rep.Edge)
	if rep.Bare.RPS == 0 || rep.Edge.RPS == 0 {
		return nil, fmt.Errorf("no accepted requests: bare %v, edge %v", rep.Bare.Statuses, rep.Edge.Statuses)
	}
	rep.Ratio = rep.Edge.RPS / rep.Bare.RPS
	rep.Peak = rep.Edge.RPS
	if o.peak > 0 {
		rep.Peak = o.peak
	}
	fracs, err := parseFractions(o.fractions)
	if err != nil {
		return nil, err
	}
	rate := fracs[len(fracs)-1] * rep.Peak
	rep.BareAtLoad = openLoop(bare, rate, o.conns*4, o.duration)
	logf("%v (target %.0f/s)", rep.BareAtLoad, rate)
	rep.EdgeAtLoad = openLoop(edge, rate, o.conns*4, o.duration)
	logf("%v (target %.0f/s)", rep.EdgeAtLoad, rate)

	if err := benchIngest(ctx, e, accts, o, rep); err != nil {
		return nil, err
	}
	return rep, nil
}

// benchIngest puts a backlog of webhook bodies on wa.webhooks behind what the edge runs
// left there, runs ingest on a group of its own that starts at the backlog, and times
// until every item of it is stored.
func benchIngest(ctx context.Context, e *env, accts []tenantAccount, o options, rep *webhooksReport) error {
	n := o.ingestBodies
	pool := e.pool
	// Each body: one inbound message and one status of a message the sender sent.
	msgs := message.NewRepository(pool)
	var sent []message.Sent
	acctByPhone := map[string]*account.Account{}
	for _, ta := range accts {
		a, err := e.repo.Get(ctx, ta.tenant, ta.phoneNumberID)
		if err != nil {
			return err
		}
		acctByPhone[ta.phoneNumberID] = a
	}
	recs := make([]kafka.Message, 0, n)
	now := time.Now()
	for i := range n {
		a := acctByPhone[accts[i%len(accts)].phoneNumberID]
		wamid := fmt.Sprintf("wamid.ingest.out.%07d", i)
		sent = append(sent, message.Sent{Claim: message.Claim{ID: uuid.NewString(), TenantID: a.TenantID, AccountID: a.ID,
			PhoneNumberID: a.PhoneNumberID, Recipient: "919800000000", AcceptedAt: now}, WAMID: wamid, SentAt: now})
		body := fakemeta.WebhookBody(fakemeta.WebhookEntry{WABAID: a.WABAID, Changes: []fakemeta.WebhookChange{{
			PhoneNumberID: a.PhoneNumberID,
			Messages:      []fakemeta.WebhookMessage{{ID: fmt.Sprintf("wamid.ingest.in.%07d", i), From: "919811111111", Name: "Asha", Text: "order status?", Timestamp: now}},
			Statuses:      []fakemeta.WebhookStatus{{ID: wamid, Status: "delivered", RecipientID: "919800000000", Timestamp: now}},
		}}})
		recs = append(recs, kafka.Message{Key: []byte(a.WABAID), Value: body,
			Headers: []kafka.Header{{Key: webhook.HeaderReceivedAt, Value: []byte(now.UTC().Format(time.RFC3339Nano))}}})
	}
	for i := 0; i < len(sent); i += 1000 {
		if err := msgs.MarkSentMany(ctx, sent[i:min(i+1000, len(sent))]); err != nil {
			return err
		}
	}
	// The edge runs left their bodies on wa.webhooks; ingest's group starts after them.
	p, err := queue.NewProducer(queue.ProducerConfig{Cluster: queue.Cluster{Brokers: e.cfg.Kafka.Brokers}, Topic: queue.TopicWebhooks,
		MaxBytes: queue.WebhookMaxMessageBytes})
	if err != nil {
		return err
	}
	defer p.Close()
	if err := skipBacklog(ctx, e, "bench-ingest"); err != nil {
		return err
	}
	for i := 0; i < len(recs); i += 500 {
		if err := p.WriteMessages(ctx, recs[i:min(i+500, len(recs))]...); err != nil {
			return err
		}
	}
	logf("ingest: %d bodies (%d items) waiting on wa.webhooks", n, 2*n)

	cfg := e.cfg
	cfg.Ingest.GroupID = "bench-ingest"
	cpu0, start := readCPU(), time.Now()
	e.start("ingest", func(ctx context.Context, _ config.Config) error {
		return ingest.Run(ctx, cfg, func(o *ingest.Options) { o.CommitInterval = 100 * time.Millisecond })
	})
	var stored int
	for {
		if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM inbound_messages) + (SELECT count(*) FROM message_statuses)`).Scan(&stored); err != nil {
			return err
		}
		if stored >= 2*n || time.Since(start) > 10*time.Minute {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	el := time.Since(start)
	used := readCPU().Sub(cpu0)
	rep.IngestBodies, rep.IngestItems, rep.IngestSeconds = n, stored, el.Seconds()
	rep.IngestPerSec = float64(stored) / el.Seconds()
	if stored > 0 {
		rep.CPUSelfUS = float64(used.Process.Microseconds()) / float64(stored)
		rep.CPUPostgresUS = float64(used.Postgres.Microseconds()) / float64(stored)
	}
	logf("ingest: %d items stored in %v: %.0f/s, %.0f µs + %.0f µs pg per item", stored, el.Round(time.Millisecond),
		rep.IngestPerSec, rep.CPUSelfUS, rep.CPUPostgresUS)
	return nil
}

// skipBacklog commits group's offsets at the end of wa.webhooks, so ingest reads only
// what is produced after.
func skipBacklog(ctx context.Context, e *env, group string) error {
	c := queue.Cluster{Brokers: e.cfg.Kafka.Brokers}
	client := &kafka.Client{Addr: kafka.TCP(c.Brokers...)}
	parts := e.cfg.Kafka.Partitions
	req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{}}
	for p := range parts {
		req.Topics[queue.TopicWebhooks] = append(req.Topics[queue.TopicWebhooks], kafka.LastOffsetOf(p))
	}
	res, err := client.ListOffsets(ctx, req)
	if err != nil {
		return err
	}
	commit := &kafka.OffsetCommitRequest{GroupID: group, GenerationID: -1, Topics: map[string][]kafka.OffsetCommit{}}
	for _, po := range res.Topics[queue.TopicWebhooks] {
		commit.Topics[queue.TopicWebhooks] = append(commit.Topics[queue.TopicWebhooks],
			kafka.OffsetCommit{Partition: po.Partition, Offset: po.LastOffset})
	}
	if _, err := client.OffsetCommit(ctx, commit); err != nil {
		return fmt.Errorf("skipping the edge runs' backlog: %w", err)
	}
	return nil
}

// statusWebhook is a delivered status of one message, shaped like Meta's.
func statusWebhook(a tenantAccount, wamid, st string) []byte {
	return fakemeta.WebhookBody(fakemeta.WebhookEntry{WABAID: "9" + a.phoneNumberID, Changes: []fakemeta.WebhookChange{{
		PhoneNumberID: a.phoneNumberID, DisplayPhoneNumber: "1555" + a.phoneNumberID[len(a.phoneNumberID)-7:],
		Statuses: []fakemeta.WebhookStatus{{ID: wamid, Status: st, RecipientID: "919876543210", Timestamp: time.Now()}},
	}}})
}

// startBareOK serves the baseline: a fasthttp handler that answers 200 OK and does
// nothing else.
func startBareOK() (string, func(), error) {
	return startBareWith(func(ctx *fasthttp.RequestCtx) {
		ctx.SetStatusCode(fasthttp.StatusOK)
		ctx.SetContentType("text/plain; charset=utf-8")
		ctx.SetBodyString("OK")
	})
}

func (e *env) waitReadyAt(ctx context.Context, addr string) error {
	for {
		code, _, err := fasthttp.Get(nil, "http://"+addr+"/readyz")
		if err == nil && code == fasthttp.StatusOK {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready", addr)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (r *webhooksReport) markdown() string {
	row := func(name string, x result) string {
		return fmt.Sprintf("| %s | %s | %d | %.0f | %s | %s | %.0f µs + %.0f µs |\n", name, x.Mode, x.Conns, x.RPS,
			ms(x.P50), ms(x.P99), x.CPUSelfUS, x.CPUPostgresUS)
	}
	s := "| target | load | conns | accepted/s | p50 | p99 | CPU per request (process + Postgres) |\n|---|---|---|---|---|---|---|\n"
	s += row("bare fasthttp handler answering 200", r.Bare)
	s += row("`POST /webhooks/meta` (`aerogate webhooks`)", r.Edge)
	s += row(fmt.Sprintf("bare fasthttp handler, open loop at %s/s", strconv.Itoa(int(r.BareAtLoad.TargetRate))), r.BareAtLoad)
	s += row(fmt.Sprintf("`POST /webhooks/meta`, open loop at %.0f%% of peak (%s/s)", 100*r.EdgeAtLoad.TargetRate/r.Peak,
		strconv.Itoa(int(r.EdgeAtLoad.TargetRate))), r.EdgeAtLoad)
	s += fmt.Sprintf("\nratio edge/bare: **%.2f** (%d-byte signed bodies)\n", r.Ratio, r.BodySize)
	s += fmt.Sprintf("\ningest: %d bodies, %d items (an inbound message and a status each) stored in %.1f s: **%.0f items/s**, %.0f µs + %.0f µs (Postgres) CPU per item\n",
		r.IngestBodies, r.IngestItems, r.IngestSeconds, r.IngestPerSec, r.CPUSelfUS, r.CPUPostgresUS)
	return s
}
