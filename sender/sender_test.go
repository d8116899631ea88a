package sender_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/aerostic/aerogate/internal/message"
	"github.com/aerostic/aerogate/internal/queue"
)

func TestEachTenantSendsWithItsOwnToken(t *testing.T) {
	e := newTestEnv(t)
	type number struct {
		tenant, id, token string
	}
	numbers := []number{
		{"tenant-a", "1001", "token-of-a-1"},
		{"tenant-a", "1002", "token-of-a-2"},
		{"tenant-b", "2001", "token-of-b"},
		{"tenant-c", "3001", "token-of-c"},
	}
	tokenOf := map[string]string{}
	var envs []*queue.Envelope
	bodyTenant := map[string]string{}
	for _, n := range numbers {
		a := e.addAccount(n.tenant, n.id, n.token, 1000)
		tokenOf[n.id] = n.token
		for i := range 40 {
			body := fmt.Sprintf("%s-%s-%d", n.tenant, n.id, i)
			envs = append(envs, newEnvelope(a, fmt.Sprintf("1555000%04d", i%7), body))
			bodyTenant[body] = n.tenant
		}
	}
	s := e.startSender(testSenderConfig(), e.graphConfig())
	e.produce(envs...)
	e.waitStatus(20*time.Second, message.StatusSent, envs...)

	got := e.fake.Received()
	if len(got) != len(envs) {
		t.Fatalf("fake received %d sends, want %d (one per message)", len(got), len(envs))
	}
	for _, r := range got {
		if r.WAMID == "" {
			t.Errorf("send to %s refused with code %d", r.PhoneNumberID, r.ErrorCode)
		}
		if r.Token != tokenOf[r.PhoneNumberID] {
			t.Errorf("send from %s carried another token (len %d)", r.PhoneNumberID, len(r.Token))
		}
	}
	for _, env := range envs[:5] {
		m := e.message(env.TenantID, env.ID)
		if m.WAMID == "" || m.SentAt == nil || m.Attempts != 1 {
			t.Errorf("message %s: wamid %q sent_at %v attempts %d", env.ID, m.WAMID, m.SentAt, m.Attempts)
		}
	}
	if st := s.Stats(); st.Sent != int64(len(envs)) || st.GraphCalls != int64(len(envs)) {
		t.Errorf("stats %+v, want %d sent in as many Graph calls", st, len(envs))
	}
}
