package sender_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"

	"github.com/aerostic/aerogate/internal/account"
	"github.com/aerostic/aerogate/internal/fakemeta"
	"github.com/aerostic/aerogate/internal/message"
	"github.com/aerostic/aerogate/internal/queue"
	"github.com/aerostic/aerogate/sender"
)

func TestEachTenantSendsWithItsOwnToken(t *testing.T) {
	t.Parallel()
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

func TestPerRecipientOrderHoldsUnderConcurrencyAndRetries(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	a := e.addAccount("tenant-order", "4001", "token-order", 1000)
	e.fake.SetLatency(2 * time.Millisecond)
	const recipients, perRecipient = 30, 25
	to := func(r int) string { return fmt.Sprintf("1555100%04d", r) }
	// Some recipients start with errors: retried in the lane, or (longer backoffs) through
	// the retry topic, where their later messages must follow them.
	for r := 0; r < recipients; r += 3 {
		spec := fakemeta.ErrorSpec{Code: 131056, Title: "(#131056) Pair rate limit hit"}
		switch r % 9 {
		case 3:
			spec = fakemeta.ErrorSpec{Code: 130429, Title: "(#130429) Rate limit hit"}
		case 6:
			spec = fakemeta.ErrorSpec{HTTPStatus: 503, Code: 2, Title: "Service temporarily unavailable"}
		}
		e.fake.FailRecipient(to(r), 3, spec)
	}
	var envs []*queue.Envelope
	for i := range perRecipient {
		for r := range recipients {
			envs = append(envs, newEnvelope(a, to(r), fmt.Sprintf("r%02d-%03d", r, i)))
		}
	}
	cfg := testSenderConfig()
	cfg.InProcessRetryMax = 10 * time.Millisecond // most retries go through the retry topic
	s := e.startSender(cfg, e.graphConfig())
	e.produce(envs...)
	e.waitStatus(30*time.Second, message.StatusSent, envs...)

	seqs := map[string][]int{}
	for _, r := range e.fake.Received() {
		if r.WAMID == "" {
			continue
		}
		var rcpt, seq int
		if _, err := fmt.Sscanf(bodyText(r.Body), "r%02d-%03d", &rcpt, &seq); err != nil {
			t.Fatalf("unexpected body %q", r.Body)
		}
		seqs[r.To] = append(seqs[r.To], seq)
	}
	for r := range recipients {
		got := seqs[to(r)]
		if len(got) != perRecipient {
			t.Errorf("recipient %d: %d sends accepted, want %d", r, len(got), perRecipient)
			continue
		}
		for i, seq := range got {
			if seq != i {
				t.Errorf("recipient %d: arrival order %v, want 0..%d", r, got, perRecipient-1)
				break
			}
		}
	}
	st := s.Stats()
	t.Logf("stats: %+v", st)
	if st.Parked == 0 || st.Retried == 0 {
		t.Errorf("the retry topic was not exercised: %+v", st)
	}
}

func TestStoppedAccountsWaitWhileOthersFlow(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	good := e.addAccount("tenant-good", "5001", "token-good", 1000)
	// The fake knows a newer token than the one stored: Meta answers 190.
	revoked := e.addAccount("tenant-revoked", "5002", "token-revoked-old", 1000)
	e.fake.SetToken("5002", "token-revoked-new")
	past := time.Now().Add(-time.Hour)
	expired, err := e.accounts.Upsert(context.Background(), account.UpsertInput{
		TenantID: "tenant-expired", WABAID: "102290129340398", PhoneNumberID: "5003", AccessToken: "token-expired-old", TokenExpiresAt: &past,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.fake.SetToken("5003", "token-expired-new")

	var goodEnvs, revokedEnvs, expiredEnvs []*queue.Envelope
	for i := range 30 {
		goodEnvs = append(goodEnvs, newEnvelope(good, "15552220001", fmt.Sprintf("good-%d", i)))
		revokedEnvs = append(revokedEnvs, newEnvelope(revoked, "15552220002", fmt.Sprintf("revoked-%d", i)))
		expiredEnvs = append(expiredEnvs, newEnvelope(expired, "15552220003", fmt.Sprintf("expired-%d", i)))
	}
	s := e.startSender(testSenderConfig(), e.graphConfig())
	for i := range goodEnvs {
		e.produce(revokedEnvs[i], expiredEnvs[i], goodEnvs[i])
	}
	e.waitStatus(20*time.Second, message.StatusSent, goodEnvs...)
	// Let the stopped tenants' messages go round the retry topic a few times.
	time.Sleep(time.Second)

	ids := func(envs []*queue.Envelope) []string {
		var out []string
		for _, e := range envs {
			out = append(out, e.ID)
		}
		return out
	}
	for id, st := range e.statuses(append(ids(revokedEnvs), ids(expiredEnvs)...)) {
		if st == message.StatusSent || st == message.StatusFailed {
			t.Fatalf("message %s of a stopped account is %s", id, st)
		}
	}
	acct, err := e.accounts.Get(context.Background(), "tenant-revoked", "5002")
	if err != nil || acct.TokenStatus != account.StatusInvalid {
		t.Fatalf("revoked account: status %v, %v; want invalid", acct.TokenStatus, err)
	}
	for _, r := range e.fake.Received() {
		switch r.PhoneNumberID {
		case "5003":
			t.Fatalf("a send with an expired token reached Graph")
		case "5002":
			if r.WAMID != "" {
				t.Fatalf("a send with a revoked token was accepted")
			}
		}
	}
	st := s.Stats()
	if st.Waiting == 0 || st.Failed != 0 || st.DLQ != 0 {
		t.Fatalf("stats %+v: want waits and no failures", st)
	}

	// The tenants reconnect: their messages go out with the new tokens.
	e.addAccount("tenant-revoked", "5002", "token-revoked-new", 1000)
	e.addAccount("tenant-expired", "5003", "token-expired-new", 1000)
	e.waitStatus(20*time.Second, message.StatusSent, append(revokedEnvs, expiredEnvs...)...)
	for _, r := range e.fake.Received() {
		if r.WAMID == "" {
			continue
		}
		want := map[string]string{"5001": "token-good", "5002": "token-revoked-new", "5003": "token-expired-new"}[r.PhoneNumberID]
		if r.Token != want {
			t.Errorf("accepted send from %s did not carry its account's current token", r.PhoneNumberID)
		}
	}
	// Waiting is not an attempt: one Graph call for each message once it could send,
	// plus at most the calls refused with 190 before the account was marked.
	for _, env := range expiredEnvs {
		if m := e.message(env.TenantID, env.ID); m.Attempts != 1 {
			t.Errorf("expired-token message made %d attempts, want 1", m.Attempts)
		}
	}
}

func TestPausedNumberWaitsThenSends(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	tests := []struct {
		number string
		code   int
	}{
		{"7001", 131048},
		{"7002", 368},
	}
	var envs []*queue.Envelope
	for _, tt := range tests {
		a := e.addAccount("tenant-"+tt.number, tt.number, "token-"+tt.number, 1000)
		e.fake.FailNext(tt.number, 1, fakemeta.ErrorSpec{Code: tt.code, Title: fmt.Sprintf("(#%d) restricted", tt.code)})
		envs = append(envs, newEnvelope(a, "15553330000", "paused-"+tt.number))
	}
	s := e.startSender(testSenderConfig(), e.graphConfig())
	e.produce(envs...)
	e.waitStatus(20*time.Second, message.StatusSent, envs...)
	for _, tt := range tests {
		a, err := e.accounts.Get(context.Background(), "tenant-"+tt.number, tt.number)
		if err != nil {
			t.Fatal(err)
		}
		if a.PausedUntil == nil || a.PausedReason == "" {
			t.Errorf("number %s (code %d) was not paused: %v %q", tt.number, tt.code, a.PausedUntil, a.PausedReason)
		}
	}
	if st := s.Stats(); st.Waiting < 2 || st.Failed != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestRetryableErrorsAreRetriedUntilTheySucceed(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	tests := []struct {
		name string
		spec fakemeta.ErrorSpec
	}{
		{"throughput 130429", fakemeta.ErrorSpec{Code: 130429, Title: "(#130429) Rate limit hit"}},
		{"pair rate 131056", fakemeta.ErrorSpec{Code: 131056, Title: "(#131056) Pair rate limit hit"}},
		{"app rate 4", fakemeta.ErrorSpec{Code: 4, Title: "(#4) Application request limit reached"}},
		{"waba rate 80007", fakemeta.ErrorSpec{Code: 80007, Title: "(#80007) Rate limit issues"}},
		{"temporary 1", fakemeta.ErrorSpec{Code: 1, Title: "An unknown error occurred"}},
		{"temporary 2", fakemeta.ErrorSpec{Code: 2, Title: "Service temporarily unavailable"}},
		{"http 503 without a code", fakemeta.ErrorSpec{HTTPStatus: 503, Title: "Service Unavailable"}},
		{"http 500 code 131000", fakemeta.ErrorSpec{HTTPStatus: 500, Code: 131000, Title: "Something went wrong"}},
	}
	const failures = 3
	var envs []*queue.Envelope
	for i, tt := range tests {
		number := fmt.Sprintf("80%02d", i)
		a := e.addAccount(fmt.Sprintf("tenant-retry-%d", i), number, "token-"+number, 1000)
		e.fake.FailNext(number, failures, tt.spec)
		envs = append(envs, newEnvelope(a, "15554440000", tt.name))
	}
	s := e.startSender(testSenderConfig(), e.graphConfig())
	e.produce(envs...)
	e.waitStatus(20*time.Second, message.StatusSent, envs...)

	byNumber := map[string][]int{}
	for _, r := range e.fake.Received() {
		byNumber[r.PhoneNumberID] = append(byNumber[r.PhoneNumberID], r.ErrorCode)
	}
	for i, tt := range tests {
		number := envs[i].PhoneNumberID
		calls := byNumber[number]
		if len(calls) != failures+1 || calls[failures] != 0 {
			t.Errorf("%s: calls %v, want %d refusals then one success", tt.name, calls, failures)
		}
		if m := e.message(envs[i].TenantID, envs[i].ID); m.Attempts != failures+1 || m.WAMID == "" {
			t.Errorf("%s: attempts %d wamid %q", tt.name, m.Attempts, m.WAMID)
		}
	}
	if st := s.Stats(); st.Retried != int64(len(tests)*failures) || st.Failed != 0 {
		t.Errorf("stats %+v, want %d retries", st, len(tests)*failures)
	}
}

func TestTimeoutIsRetried(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	a := e.addAccount("tenant-slow", "8101", "token-slow", 1000)
	e.fake.SetLatency(time.Second)
	gc := e.graphConfig()
	gc.Timeout = 300 * time.Millisecond
	s := e.startSender(testSenderConfig(), gc)
	env := newEnvelope(a, "15554440001", "slow")
	e.produce(env)
	eventually(t, 10*time.Second, "first call", func() error {
		if len(e.fake.Received()) == 0 {
			return fmt.Errorf("no call yet")
		}
		return nil
	})
	e.fake.SetLatency(0)
	e.waitStatus(10*time.Second, message.StatusSent, env)
	if m := e.message(env.TenantID, env.ID); m.Attempts < 2 {
		t.Errorf("attempts %d, want a retry after the timeout", m.Attempts)
	}
	if st := s.Stats(); st.Retried == 0 {
		t.Errorf("stats %+v: no retry", st)
	}
}

func TestPermanentErrorsGoToTheDLQ(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	tests := []struct {
		code  int
		title string
	}{
		{131026, "Message undeliverable"},
		{131047, "Re-engagement message"},
		{131049, "Meta chose not to deliver"},
		{100, "(#100) Invalid parameter"},
	}
	var envs []*queue.Envelope
	for i, tt := range tests {
		number := fmt.Sprintf("90%02d", i)
		a := e.addAccount(fmt.Sprintf("tenant-perm-%d", i), number, "token-"+number, 1000)
		e.fake.FailNext(number, 1, fakemeta.ErrorSpec{Code: tt.code, Title: tt.title})
		envs = append(envs, newEnvelope(a, "15555550000", fmt.Sprintf("perm-%d", tt.code)))
	}
	// A number that never stops failing with a retryable error: the last attempt fails it.
	exhausted := e.addAccount("tenant-exhausted", "9101", "token-9101", 1000)
	e.fake.FailNext("9101", -1, fakemeta.ErrorSpec{Code: 130429, Title: "(#130429) Rate limit hit"})
	exhaustedEnv := newEnvelope(exhausted, "15555550001", "exhausted")
	// A send for an account that does not exist.
	ghost := newEnvelope(&account.Account{ID: uuid.NewString(), TenantID: "tenant-ghost", PhoneNumberID: "9999"}, "15555550002", "ghost")

	cfg := testSenderConfig()
	cfg.MaxAttempts = 3
	s := e.startSender(cfg, e.graphConfig())
	e.produce(append(envs, exhaustedEnv, ghost)...)
	// Malformed: not an envelope at all.
	if err := e.sendsPub.WriteMessages(context.Background(), kafka.Message{Key: []byte("tenant-junk"), Value: []byte(`{"id":"x","payload":1`)}); err != nil {
		t.Fatal(err)
	}
	all := append(envs, exhaustedEnv, ghost)
	e.waitStatus(20*time.Second, message.StatusFailed, all...)

	dead := readDLQ(t, e.dlqReader(), len(all)+1, 20*time.Second)
	for i, tt := range tests {
		m := e.message(envs[i].TenantID, envs[i].ID)
		if m.ErrorCode != tt.code || m.ErrorTitle != tt.title || m.Attempts != 1 {
			t.Errorf("code %d: message has %d %q after %d attempts", tt.code, m.ErrorCode, m.ErrorTitle, m.Attempts)
		}
		d := dead[envs[i].ID]
		if d == nil || d.Error == nil || d.Error.Code != tt.code || d.Error.Title != tt.title {
			t.Errorf("code %d: dead letter %+v", tt.code, d)
		}
	}
	if m := e.message(exhaustedEnv.TenantID, exhaustedEnv.ID); m.ErrorCode != 130429 || m.Attempts != 3 {
		t.Errorf("exhausted: code %d after %d attempts, want 130429 after 3", m.ErrorCode, m.Attempts)
	}
	if d := dead[exhaustedEnv.ID]; d == nil || d.Error == nil || d.Error.Code != 130429 {
		t.Errorf("exhausted dead letter %+v", d)
	}
	if m := e.message(ghost.TenantID, ghost.ID); m.ErrorTitle == "" {
		t.Errorf("ghost: no error title")
	}
	if d := dead[""]; d == nil || d.Error == nil || !strings.Contains(d.Error.Title, "invalid envelope") {
		t.Errorf("malformed dead letter %+v", d)
	}
	st := s.Stats()
	if st.Failed != int64(len(all)) || st.DLQ != int64(len(all)+1) {
		t.Errorf("stats %+v", st)
	}
}

func TestRateLimitPacesEachNumber(t *testing.T) {
	e := newTestEnv(t)
	tests := []struct {
		number string
		mps    int
		n      int
	}{
		{"6001", 50, 150},
		{"6002", 100, 300},
	}
	var envs []*queue.Envelope
	for _, tt := range tests {
		a := e.addAccount("tenant-"+tt.number, tt.number, "token-"+tt.number, tt.mps)
		for i := range tt.n {
			// Many recipients, so the lanes do not serialize the sends: only the bucket paces.
			envs = append(envs, newEnvelope(a, fmt.Sprintf("1556%07d", i), fmt.Sprintf("%s-%d", tt.number, i)))
		}
	}
	e.produce(envs...)
	e.startSender(testSenderConfig(), e.graphConfig())
	e.waitStatus(30*time.Second, message.StatusSent, envs...)

	at := map[string][]time.Time{}
	for _, r := range e.fake.Received() {
		if r.WAMID != "" {
			at[r.PhoneNumberID] = append(at[r.PhoneNumberID], r.At)
		}
	}
	for _, tt := range tests {
		ts := at[tt.number]
		if len(ts) != tt.n {
			t.Fatalf("%s: %d accepted, want %d", tt.number, len(ts), tt.n)
		}
		slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
		// Skip the initial burst: the pace is what follows it.
		from := ts[10]
		span := ts[len(ts)-1].Sub(from)
		rate := float64(len(ts)-11) / span.Seconds()
		t.Logf("%s: %d sends in %v: %.1f/s (limit %d)", tt.number, len(ts)-10, span, rate, tt.mps)
		if math.Abs(rate-float64(tt.mps)) > 0.1*float64(tt.mps) {
			t.Errorf("%s paced at %.1f/s, want %d ± 10%%", tt.number, rate, tt.mps)
		}
	}
}

func TestRedeliveredMessagesAreNotSentTwice(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	a := e.addAccount("tenant-dup", "9501", "token-dup", 1000)
	env := newEnvelope(a, "15557770000", "once")
	done := newEnvelope(a, "15557770000", "already sent")
	if _, err := e.pool.Exec(context.Background(), `
		INSERT INTO messages (id, tenant_id, account_id, phone_number_id, recipient, status, wamid, attempts)
		VALUES ($1, $2, $3, $4, $5, 'sent', 'wamid.before', 1)`, done.ID, done.TenantID, done.AccountID, done.PhoneNumberID, done.Recipient); err != nil {
		t.Fatal(err)
	}
	s := e.startSender(testSenderConfig(), e.graphConfig())
	// The same envelope three times, as a producer retry or a redelivery would leave it.
	e.produce(env, env, done, env)
	e.waitStatus(10*time.Second, message.StatusSent, env)
	eventually(t, 10*time.Second, "all four handled", func() error {
		if st := s.Stats(); st.Sent+st.Skipped != 4 {
			return fmt.Errorf("stats %+v", st)
		}
		return nil
	})
	for _, r := range e.fake.Received() {
		if bodyText(r.Body) == "already sent" {
			t.Fatal("an already sent message was sent again")
		}
	}
	if n := len(e.fake.Received()); n != 1 {
		t.Fatalf("fake received %d sends, want 1", n)
	}
	if m := e.message(done.TenantID, done.ID); m.WAMID != "wamid.before" || m.Attempts != 1 {
		t.Fatalf("already sent message changed: %+v", m)
	}
}

// Two senders share the group; then one stops cleanly mid-stream. Partitions move twice
// (a join, a leave) and nothing is sent twice: each revoked partition finishes or
// abandons its work and commits before it moves.
func TestPartitionsMoveBetweenSendersWithoutDuplicates(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	// Twelve tenants, so every partition has some; paced so the stream outlasts a rebalance.
	var accts []*account.Account
	for i := range 12 {
		number := fmt.Sprintf("%d", 60100+i)
		accts = append(accts, e.addAccount(fmt.Sprintf("tenant-move-%d", i), number, "token-"+number, 60))
	}
	var envs []*queue.Envelope
	for i := range 2400 {
		envs = append(envs, newEnvelope(accts[i%len(accts)], fmt.Sprintf("1559%07d", i%50), fmt.Sprintf("move-%05d", i)))
	}
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		for i := 0; i < len(envs); i += 100 {
			e.produce(envs[i:min(i+100, len(envs))]...)
			time.Sleep(40 * time.Millisecond)
		}
	}()
	a, stopA := e.runSender(testSenderConfig(), e.graphConfig())
	defer stopA()
	eventually(t, 20*time.Second, "first sends", func() error {
		if n := e.fake.Count(); n < 300 {
			return fmt.Errorf("%d sent", n)
		}
		return nil
	})
	b := e.startSender(testSenderConfig(), e.graphConfig())
	eventually(t, 20*time.Second, "the second sender takes a share", func() error {
		if b.Stats().Sent == 0 {
			return fmt.Errorf("b sent nothing yet (a %d)", a.Stats().Sent)
		}
		return nil
	})
	stopA()
	<-produced
	e.waitStatus(30*time.Second, message.StatusSent, envs...)

	got := acceptedByBody(e.fake)
	for _, env := range envs {
		if n := len(got[bodyText(env.Payload)]); n != 1 {
			t.Errorf("%s sent %d times", bodyText(env.Payload), n)
		}
	}
	sa, sb := a.Stats(), b.Stats()
	t.Logf("a: %+v", sa)
	t.Logf("b: %+v", sb)
	if sa.Sent+sb.Sent != int64(len(envs)) {
		t.Errorf("a sent %d, b sent %d, want %d in all", sa.Sent, sb.Sent, len(envs))
	}
}

// A clean stop commits everything finished, even when the periodic commit never ran: the
// next sender of the group gets no redeliveries.
func TestCleanStopCommitsWhatItFinished(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	acct := e.addAccount("tenant-stop", "61001", "token-stop", 1000)
	var first, second []*queue.Envelope
	for i := range 300 {
		first = append(first, newEnvelope(acct, fmt.Sprintf("1550%07d", i%20), fmt.Sprintf("first-%d", i)))
	}
	for i := range 10 {
		second = append(second, newEnvelope(acct, "15500000001", fmt.Sprintf("second-%d", i)))
	}
	a, stopA := e.runSender(testSenderConfig(), e.graphConfig(), func(o *sender.Options) { o.CommitInterval = time.Hour })
	e.produce(first...)
	e.waitStatus(20*time.Second, message.StatusSent, first...)
	stopA()
	if st := a.Stats(); st.Committed != int64(len(first)) {
		t.Fatalf("a committed %d offsets at stop, want %d", st.Committed, len(first))
	}
	b := e.startSender(testSenderConfig(), e.graphConfig())
	e.produce(second...)
	e.waitStatus(20*time.Second, message.StatusSent, second...)
	if st := b.Stats(); st.GraphCalls != int64(len(second)) || st.Skipped != 0 {
		t.Fatalf("b: %+v, want only the %d new sends and no redeliveries", st, len(second))
	}
}

// After a restart the sender does not remember what it parked: it reads the retry
// topic's backlog first, so a new message does not overtake an older one of the same
// recipient that is still waiting there.
func TestRestartedSenderKeepsNewMessagesBehindParkedOnes(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	a := e.addAccount("tenant-restart", "62001", "token-restart", 1000)
	const rcpt = "15560000001"
	// What a sender killed right after parking "older" leaves behind: "older" (origin 0,
	// its wa.sends offset) waiting in the retry topic, "newer" in wa.sends after it.
	filler := newEnvelope(a, "15560000002", "filler")
	newer := newEnvelope(a, rcpt, "newer")
	e.produce(filler, newer)
	older := newEnvelope(a, rcpt, "older")
	nb := time.Now().Add(1500 * time.Millisecond)
	older.NotBefore = &nb
	older.Attempt = 1
	older.Error = &queue.EnvelopeError{Code: 131056, Title: "(#131056) Pair rate limit hit"}
	value, err := queue.Encode(older)
	if err != nil {
		t.Fatal(err)
	}
	retryPub := e.producer(queue.TopicSendsRetry)
	if err := retryPub.WriteMessages(context.Background(), kafka.Message{
		Key: []byte(a.TenantID), Value: value,
		Headers: []kafka.Header{{Key: sender.OriginHeader, Value: []byte("0")}},
	}); err != nil {
		t.Fatal(err)
	}

	s := e.startSender(testSenderConfig(), e.graphConfig())
	e.waitStatus(20*time.Second, message.StatusSent, filler, older, newer)
	var order []string
	for _, r := range e.fake.Received() {
		if r.To == rcpt {
			order = append(order, bodyText(r.Body))
			if r.At.Before(nb) {
				t.Errorf("%q sent at %v, before the parked message's not_before %v", bodyText(r.Body), r.At, nb)
			}
		}
	}
	if !slices.Equal(order, []string{"older", "newer"}) {
		t.Fatalf("recipient got %v, want older then newer", order)
	}
	if st := s.Stats(); st.Followed != 1 {
		t.Errorf("stats %+v: want the newer message to follow once", st)
	}
}

// The order of a recipient's sends across the retry topic needs wa.sends and
// wa.sends.retry to have the same partition count: a sender refuses to start otherwise,
// naming both counts.
func TestSenderRefusesDifferentPartitionCounts(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := (&kafka.Client{Addr: kafka.TCP(e.broker.Addrs()...)}).CreatePartitions(ctx, &kafka.CreatePartitionsRequest{
		Topics: []kafka.TopicPartitionsConfig{{Name: queue.TopicSendsRetry, Count: testPartitions + 2}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := resp.Errors[queue.TopicSendsRetry]; err != nil {
		t.Fatal(err)
	}
	s, err := sender.New(sender.Options{
		Kafka: e.broker.Cluster(), Config: testSenderConfig(), Accounts: e.resolver, AccountRepo: e.accounts,
		Messages: e.messages, Graph: e.graphClient(), Logger: testLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Run(ctx)
	if !errors.Is(err, sender.ErrPartitionMismatch) {
		t.Fatalf("Run = %v, want ErrPartitionMismatch", err)
	}
	for _, want := range []string{fmt.Sprintf("wa.sends has %d partitions", testPartitions), fmt.Sprintf("wa.sends.retry has %d", testPartitions+2)} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if st := s.Stats(); st.GraphCalls != 0 || st.Committed != 0 {
		t.Errorf("a refused sender did work: %+v", st)
	}
}
