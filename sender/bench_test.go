package sender_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/aerostic/aerogate/internal/account"
	"github.com/aerostic/aerogate/internal/message"
	"github.com/aerostic/aerogate/internal/queue"
)

// BenchmarkSenderDrain measures how fast a sender drains a backlog of wa.sends into the
// fake Graph API (answering at once) with Postgres claims and outcomes: many tenants,
// each number at Meta's highest throughput. It reports messages per second; it asserts
// nothing about speed.
func BenchmarkSenderDrain(b *testing.B) {
	e := newTestEnv(b)
	const numbers = 16
	var accts []*account.Account
	for i := range numbers {
		n := fmt.Sprintf("%d", 50000+i)
		accts = append(accts, e.addAccount(fmt.Sprintf("tenant-bench-%d", i), n, "token-"+n, 1000))
	}
	total := max(b.N, 1000)
	envs := make([]*queue.Envelope, total)
	for i := range envs {
		envs[i] = newEnvelope(accts[i%numbers], fmt.Sprintf("1551%07d", i%997), fmt.Sprintf("bench-%d", i))
	}
	e.produce(envs...)
	cfg := testSenderConfig()
	cfg.MaxInFlight = 1024
	b.ResetTimer()
	start := time.Now()
	s := e.startSender(cfg, e.graphConfig())
	for s.Stats().Sent < int64(total) {
		time.Sleep(5 * time.Millisecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(total)/time.Since(start).Seconds(), "msgs/s")
	e.waitStatus(time.Minute, message.StatusSent, envs...)
}
