package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aerostic/aerogate/internal/store/storetest"
)

// TestRefresherBesideDev walks the README's refresher walk-through against the real
// binaries: `aerogate dev` running (gateway, sender, refresher), accounts added with
// `aerogate accounts add` (known to dev's fake Graph API with their expiry), then
// `aerogate refresher --dry-run` and `--once`. It checks that:
//   - only the 9-day token is renewed (11 days is outside the window), the never-expiring
//     one is checked, and --once prints the summary and exits 0;
//   - the running gateway and sender use the renewed token within one second, without a
//     restart (the fake records the token each send carried);
//   - a revoked token is found by --once's check (exit 1), the account answers 409
//     account_needs_reconnect, its queued messages wait while another tenant's flow, and
//     are sent once the tenant reconnects;
//   - no token shows in any output.
func TestRefresherBesideDev(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)
	dbURL := storetest.NewEmpty(t)
	httpAddr, kafkaAddr, graphAddr, adminAddr := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	env := []string{
		"AEROGATE_DATABASE_URL=" + dbURL,
		"AEROGATE_HTTP_ADDR=" + httpAddr,
		"AEROGATE_ADMIN_ADDR=" + adminAddr,
		"AEROGATE_DEV_KAFKA_ADDR=" + kafkaAddr,
		"AEROGATE_DEV_FAKE_GRAPH_ADDR=" + graphAddr,
		"AEROGATE_DEV_DATA_DIR=" + t.TempDir(),
		"AEROGATE_KAFKA_PARTITIONS=2",
		"AEROGATE_SENDER_PAUSED_RETRY_DELAY=4s",
	}
	devOut := startProcess(t, bin, env, "dev")
	base, fake := "http://"+httpAddr, "http://"+graphAddr
	for _, u := range []string{base + "/readyz", "http://" + adminAddr + "/readyz"} {
		waitFor(t, 60*time.Second, func() bool {
			resp, err := http.Get(u)
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		})
	}

	var outputs syncBuffer // every CLI output, for the leak check
	cli := func(wantExit int, args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), env...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		exit := 0
		if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
			exit = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		outputs.Write(stdout.Bytes())
		outputs.Write(stderr.Bytes())
		if exit != wantExit {
			t.Fatalf("aerogate %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), exit, wantExit, stdout.String(), stderr.String())
		}
		return stdout.String()
	}
	type tokenState struct {
		Known       bool      `json:"known"`
		ExpiresAt   time.Time `json:"expires_at"`
		Revoked     bool      `json:"revoked"`
		Exchanges   int       `json:"exchanges"`
		RenewedFrom string    `json:"renewed_from"`
	}
	control := func(path string, body any, out any) int {
		t.Helper()
		b, _ := json.Marshal(body)
		resp, err := http.Post(fake+path, "application/json", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if out != nil {
			if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
				t.Fatal(err)
			}
		}
		return resp.StatusCode
	}
	state := func(token string) tokenState {
		var st tokenState
		control("/_fake/tokens/state", map[string]string{"token": token}, &st)
		return st
	}

	const (
		token9     = "dev-token-acme-9-days"
		token11    = "dev-token-acme-11-days"
		tokenBeta  = "dev-token-beta-never"
		tokenBeta2 = "dev-token-beta-reconnected"
		acme9      = "106540352242922"
		acme11     = "106540352242923"
		beta       = "106540352242924"
	)
	cli(0, "accounts", "add", "--tenant", "acme", "--waba-id", "102290129340398", "--phone-number-id", acme9,
		"--access-token", token9, "--expires-in", "9d", "--default")
	cli(0, "accounts", "add", "--tenant", "acme", "--waba-id", "102290129340398", "--phone-number-id", acme11,
		"--access-token", token11, "--expires-in", "11d")
	cli(0, "accounts", "add", "--tenant", "beta", "--waba-id", "102290129340399", "--phone-number-id", beta,
		"--access-token", tokenBeta, "--default")
	// dev's fake Graph API learns each token, with its expiry, from the account change.
	waitFor(t, 10*time.Second, func() bool {
		return state(token9).Known && state(token11).Known && state(tokenBeta).Known
	})
	if st := state(token9); time.Until(st.ExpiresAt) < 9*24*time.Hour-time.Minute || time.Until(st.ExpiresAt) > 9*24*time.Hour {
		t.Errorf("the fake's expiry of the 9-day token: %v", st.ExpiresAt)
	}

	dry := cli(0, "refresher", "--dry-run")
	if !hasLine(dry, "refresh", "acme", acme9) || !hasLine(dry, "skip", "acme", acme11) ||
		!strings.Contains(dry, "dry run: would have refreshed 1, failed 0, checked 1, skipped 1") {
		t.Errorf("--dry-run:\n%s", dry)
	}

	acmeJWT := strings.TrimSpace(cli(0, "token", "--tenant", "acme"))
	betaJWT := strings.TrimSpace(cli(0, "token", "--tenant", "beta"))
	send := func(jwt, phone string) (int, string) {
		body := `{"messaging_product":"whatsapp","phone_number_id":"` + phone + `","to":"919876543210","type":"text","text":{"body":"hello"}}`
		req, _ := http.NewRequest(http.MethodPost, base+"/v1/messages", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+jwt)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			return 0, ""
		}
		defer resp.Body.Close()
		var ans struct {
			ID    string `json:"id"`
			Error struct {
				Code string `json:"code"`
			} `json:"error"`
		}
		raw, _ := io.ReadAll(resp.Body)
		_ = json.Unmarshal(raw, &ans)
		if ans.ID == "" {
			return resp.StatusCode, ans.Error.Code
		}
		return resp.StatusCode, ans.ID
	}
	status := func(jwt, id string) string {
		req, _ := http.NewRequest(http.MethodGet, base+"/v1/messages/"+id, nil)
		req.Header.Set("Authorization", "Bearer "+jwt)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		var ans struct{ Status string }
		_ = json.NewDecoder(resp.Body).Decode(&ans)
		return ans.Status
	}
	// delivered: Meta took the message (dev's fake then reports it delivered and read).
	delivered := func(s string) bool { return s == "sent" || s == "delivered" || s == "read" }
	type received struct {
		PhoneNumberID string    `json:"phone_number_id"`
		Token         string    `json:"token"`
		ErrorCode     int       `json:"error_code"`
		At            time.Time `json:"at"`
	}
	receivedBy := func(phone string) []received {
		resp, err := http.Get(fake + "/_fake/messages?phone_number_id=" + phone)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out []received
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatal(err)
		}
		return out
	}

	// acme sends every 100 ms while the refresher renews its token.
	stop := make(chan struct{})
	var sending sync.WaitGroup
	sending.Add(1)
	go func() {
		defer sending.Done()
		for {
			if code, what := send(acmeJWT, acme9); code != http.StatusAccepted {
				t.Errorf("acme send: %d %s", code, what)
			}
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	time.Sleep(time.Second)
	once := cli(0, "refresher", "--once")
	renewedAt := time.Now()
	if !hasLine(once, "refreshed", "acme", acme9) || !hasLine(once, "checked", "beta", beta) || !hasLine(once, "skipped", "acme", acme11) ||
		!strings.HasSuffix(once, "\nrefreshed 1, failed 0, checked 1, skipped 1\n") {
		t.Errorf("--once output:\n%s", once)
	}
	time.Sleep(2500 * time.Millisecond)
	close(stop)
	sending.Wait()
	if st := state(token9); st.Exchanges != 1 || state(token11).Exchanges != 0 || state(tokenBeta).Exchanges != 0 {
		t.Errorf("exchanges: 9-day %d, 11-day %d, never-expiring %d; want 1, 0, 0", st.Exchanges, state(token11).Exchanges, state(tokenBeta).Exchanges)
	}

	var renewed string
	var before, after int
	waitFor(t, 15*time.Second, func() bool {
		// Every send the fake received more than a second after the renewal carried the
		// renewed token.
		renewed, before, after = "", 0, 0
		late := 0
		for _, r := range receivedBy(acme9) {
			if r.ErrorCode != 0 {
				t.Fatalf("a send of acme was refused with code %d", r.ErrorCode)
			}
			switch {
			case r.Token == token9:
				before++
				if r.At.After(renewedAt.Add(time.Second)) {
					t.Fatalf("a send at %s, %s after the renewal, carried the old token", r.At.Format(time.StampMilli), r.At.Sub(renewedAt))
				}
			case renewed == "" || r.Token == renewed:
				renewed = r.Token
				after++
				if r.At.After(renewedAt.Add(time.Second)) {
					late++
				}
			default:
				t.Fatalf("acme's sends carried a third token")
			}
		}
		return before > 0 && late >= 5
	})
	if st := state(renewed); st.RenewedFrom != token9 || time.Until(st.ExpiresAt) < 59*24*time.Hour {
		t.Errorf("the token acme's late sends carried is not the one renewed from its 9-day token: %+v", st)
	}
	t.Logf("acme: %d sends with the old token, %d with the renewed one", before, after)

	// beta: a first send is answered 131048 (spam restriction), so the sender pauses the
	// number and queues beta's messages; meanwhile the customer revokes the app.
	if code := control("/_fake/errors", map[string]any{"phone_number_id": beta, "n": 1,
		"error": map[string]any{"code": 131048, "title": "Spam rate limit hit"}}, nil); code != http.StatusNoContent {
		t.Fatalf("injecting an error: %d", code)
	}
	var queued []string
	for range 3 {
		code, id := send(betaJWT, beta)
		if code != http.StatusAccepted {
			t.Fatalf("beta send: %d %s", code, id)
		}
		queued = append(queued, id)
	}
	waitFor(t, 10*time.Second, func() bool { return len(receivedBy(beta)) > 0 })
	if code := control("/_fake/tokens/revoke", map[string]string{"token": tokenBeta}, nil); code != http.StatusNoContent {
		t.Fatalf("revoking: %d", code)
	}
	once = cli(1, "refresher", "--once", "--refresher.check_interval=1s")
	if !hasLine(once, "failed", "beta", beta) || !strings.Contains(once, "needs_reconnect") ||
		!strings.Contains(once, "refreshed 0, failed 1, checked 0, skipped 2\n") {
		t.Errorf("--once after the revocation:\n%s", once)
	}
	if code, what := send(betaJWT, beta); code != http.StatusConflict || what != "account_needs_reconnect" {
		t.Errorf("beta send after the check: %d %s, want 409 account_needs_reconnect", code, what)
	}

	// acme flows while beta's queued messages wait (past the pause and a retry).
	var acmeIDs []string
	for range 3 {
		_, id := send(acmeJWT, acme9)
		acmeIDs = append(acmeIDs, id)
	}
	acmeSent := func() bool {
		for _, id := range acmeIDs {
			if !delivered(status(acmeJWT, id)) {
				return false
			}
		}
		return true
	}
	for deadline := time.Now().Add(30 * time.Second); !acmeSent(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			var st []string
			for _, id := range acmeIDs {
				st = append(st, status(acmeJWT, id))
			}
			rec := receivedBy(acme9)
			t.Fatalf("acme's messages not sent within 30s while beta waits: statuses %v; the fake received %d sends of acme, the last %+v",
				st, len(rec), rec[len(rec)-1].At)
		}
	}
	time.Sleep(5 * time.Second)
	for _, id := range queued {
		if s := status(betaJWT, id); delivered(s) || s == "failed" {
			t.Errorf("beta's queued message %s is %s while its account needs reconnecting; want it waiting", id, s)
		}
	}

	// The tenant reconnects: the queued messages go out with the new token.
	cli(0, "accounts", "add", "--tenant", "beta", "--waba-id", "102290129340399", "--phone-number-id", beta,
		"--access-token", tokenBeta2, "--default")
	waitFor(t, 30*time.Second, func() bool {
		for _, id := range queued {
			if !delivered(status(betaJWT, id)) {
				return false
			}
		}
		return true
	})
	for _, r := range receivedBy(beta) {
		if r.ErrorCode == 0 && r.Token != tokenBeta2 {
			t.Errorf("a beta message was sent with a token other than the reconnected one")
		}
	}

	all := devOut.String() + outputs.String()
	for _, tok := range []string{token9, token11, tokenBeta, tokenBeta2, renewed} {
		if tok != "" && strings.Contains(all, tok) {
			t.Errorf("a token shows in the output of dev or the CLI")
		}
	}
}

// hasLine reports whether a line of out starts with the given whitespace-separated fields.
func hasLine(out string, fields ...string) bool {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= len(fields) && slices.Equal(f[:len(fields)], fields) {
			return true
		}
	}
	return false
}
