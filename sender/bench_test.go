package sender_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aerostic/aerogate/internal/account"
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
	cpu0 := readCPU()
	start := time.Now()
	s := e.startSender(cfg, e.graphConfig())
	for s.Stats().Sent < int64(total) {
		time.Sleep(5 * time.Millisecond)
	}
	b.StopTimer()
	took := time.Since(start)
	cpu := readCPU().sub(cpu0)
	b.ReportMetric(float64(total)/took.Seconds(), "msgs/s")
	b.ReportMetric(float64(cpu.self.Microseconds())/float64(total), "cpu-µs/msg")
	b.ReportMetric(float64(cpu.postgres.Microseconds())/float64(total), "pg-µs/msg")
	e.waitStatus(time.Minute, message.StatusSent, envs...)
}

// cpuUse is CPU time spent by this process and by the machine's Postgres server
// processes (as the bench command measures it).
type cpuUse struct{ self, postgres time.Duration }

func readCPU() cpuUse {
	var u cpuUse
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		u.self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		comm, err := os.ReadFile(filepath.Join(d, "comm"))
		if err != nil || strings.TrimSpace(string(comm)) != "postgres" {
			continue
		}
		stat, err := os.ReadFile(filepath.Join(d, "stat"))
		if err != nil {
			continue
		}
		s := string(stat)
		if i := strings.LastIndexByte(s, ')'); i >= 0 {
			s = s[i+1:]
		}
		f := strings.Fields(s)
		if len(f) < 13 {
			continue
		}
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		u.postgres += time.Duration(ut+st) * time.Second / 100 // USER_HZ
	}
	return u
}

func (u cpuUse) sub(o cpuUse) cpuUse {
	return cpuUse{self: u.self - o.self, postgres: u.postgres - o.postgres}
}
