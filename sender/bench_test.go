package sender_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/aerostic/aerogate/internal/account"
	"github.com/aerostic/aerogate/internal/cputime"
	"github.com/aerostic/aerogate/internal/message"
	"github.com/aerostic/aerogate/internal/queue"
)

// BenchmarkSenderDrain measures how fast a sender drains a backlog of wa.sends into the
// fake Graph API (answering at once) with Postgres claims and outcomes: many tenants,
// each number at Meta's highest throughput, every message's accepted row written first
// as the gateway does. It reports messages per second and CPU per message, of this
// process (sender, embedded broker and fake Graph API) and of the Postgres server; it
// asserts nothing about speed. Run it with a fixed count, e.g. -benchtime 30000x.
func BenchmarkSenderDrain(b *testing.B) {
	e := newTestEnv(b)
	const numbers = 48
	var accts []*account.Account
	for i := range numbers {
		n := fmt.Sprintf("%d", 50000+i)
		accts = append(accts, e.addAccount(fmt.Sprintf("tenant-bench-%d", i), n, "token-"+n, 1000))
	}
	total := max(b.N, 1000)
	envs := make([]*queue.Envelope, total)
	rows := make([]message.Message, total)
	for i := range envs {
		env := newEnvelope(accts[i%numbers], fmt.Sprintf("1551%07d", i%997), fmt.Sprintf("bench-%d", i))
		envs[i] = env
		rows[i] = message.Message{ID: env.ID, TenantID: env.TenantID, AccountID: env.AccountID,
			PhoneNumberID: env.PhoneNumberID, Recipient: env.Recipient, AcceptedAt: env.AcceptedAt}
	}
	for i := 0; i < len(rows); i += 1000 {
		if err := e.messages.InsertAccepted(context.Background(), rows[i:min(i+1000, len(rows))]); err != nil {
			b.Fatal(err)
		}
	}
	e.produce(envs...)
	cfg := testSenderConfig()
	cfg.MaxInFlight = 1024
	b.ResetTimer()
	database := e.pool.Config().ConnConfig.Database
	cpu0 := cputime.Read(database)
	start := time.Now()
	s := e.startSender(cfg, e.graphConfig())
	for s.Stats().Sent < int64(total) {
		time.Sleep(5 * time.Millisecond)
	}
	b.StopTimer()
	took := time.Since(start)
	cpu := cputime.Read(database).Sub(cpu0)
	b.ReportMetric(float64(total)/took.Seconds(), "msgs/s")
	b.ReportMetric(float64(cpu.Process.Microseconds())/float64(total), "cpu-µs/msg")
	b.ReportMetric(float64(cpu.Postgres.Microseconds())/float64(total), "pg-µs/msg")
	e.waitStatus(time.Minute, message.StatusSent, envs...)
}
