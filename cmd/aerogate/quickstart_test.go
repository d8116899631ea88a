package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aerostic/aerogate/internal/store/storetest"
)

// TestQuickStart walks the README's quick start against the real binary: `aerogate dev`,
// then `aerogate accounts add`, `aerogate token` and a send that gets a 202 and ends read
// (the fake Graph API posts its statuses to the gateway's webhook route, as Meta does).
func TestQuickStart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)

	dbURL := storetest.NewEmpty(t)
	httpAddr, kafkaAddr, graphAddr, adminAddr := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	env := append(os.Environ(),
		"AEROGATE_DATABASE_URL="+dbURL,
		"AEROGATE_HTTP_ADDR="+httpAddr,
		"AEROGATE_ADMIN_ADDR="+adminAddr,
		"AEROGATE_DEV_KAFKA_ADDR="+kafkaAddr,
		"AEROGATE_DEV_FAKE_GRAPH_ADDR="+graphAddr,
		"AEROGATE_DEV_DATA_DIR="+t.TempDir(),
		"AEROGATE_KAFKA_PARTITIONS=4",
	)

	var devLog syncBuffer
	dev := exec.Command(bin, "dev")
	dev.Env = env
	dev.Stdout, dev.Stderr = &devLog, &devLog
	if err := dev.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- dev.Wait() }()
	t.Cleanup(func() {
		_ = dev.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("aerogate dev output:\n%s", devLog.String())
		}
	})

	base := "http://" + httpAddr
	// The gateway answers on http.addr, the sender on admin.addr.
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

	cli := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = env
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("aerogate %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
		}
		return stdout.String()
	}
	const metaToken = "dev-meta-token-for-acme"
	listing := cli("accounts", "add", "--tenant", "acme", "--waba-id", "102290129340398",
		"--phone-number-id", "106540352242922", "--access-token", metaToken, "--expires-in", "60d", "--default")
	if strings.Contains(listing, metaToken) {
		t.Fatalf("accounts add printed the access token:\n%s", listing)
	}
	if listed := cli("accounts", "list", "--tenant", "acme"); !strings.Contains(listed, "106540352242922") || strings.Contains(listed, metaToken) {
		t.Fatalf("accounts list = %q, want the number and no token", listed)
	}
	jwt := strings.TrimSpace(cli("token", "--tenant", "acme"))

	body := `{"messaging_product":"whatsapp","to":"919876543210","type":"text","text":{"body":"Your order has shipped"}}`
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/messages", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+jwt)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /v1/messages = %d %s, want 202", resp.StatusCode, raw)
	}
	var accepted struct{ ID, Status string }
	if err := json.Unmarshal(raw, &accepted); err != nil || accepted.ID == "" || accepted.Status != "accepted" {
		t.Fatalf("POST /v1/messages body = %s", raw)
	}

	// The sender role in the same process delivers it to the fake Graph API, which posts
	// sent, delivered and read to the gateway's webhook route like Meta; ingest stores them.
	var m struct {
		Status      string
		WAMID       string     `json:"wamid"`
		DeliveredAt *time.Time `json:"delivered_at"`
		ReadAt      *time.Time `json:"read_at"`
	}
	waitFor(t, 45*time.Second, func() bool {
		req, _ := http.NewRequest(http.MethodGet, base+"/v1/messages/"+accepted.ID, nil)
		req.Header.Set("Authorization", "Bearer "+jwt)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return m.Status == "read"
	})
	if m.WAMID == "" || m.DeliveredAt == nil || m.ReadAt == nil {
		t.Fatalf("read message = %+v, want its wamid and the delivered and read times", m)
	}

	// The onboarding walk-through, as the README gives it with curl.
	secrets := walkOnboarding(t, base, "http://"+graphAddr, jwt)

	// Tokens never reach the logs.
	if strings.Contains(devLog.String(), metaToken) || strings.Contains(devLog.String(), jwt) {
		t.Fatal("aerogate dev logged a token")
	}
	for _, s := range secrets {
		if strings.Contains(devLog.String(), s) {
			t.Fatalf("aerogate dev logged a code or state (%.6s…)", s)
		}
	}

	// SIGTERM stops every role cleanly.
	_ = dev.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		exited <- err // for the cleanup
		if err != nil {
			t.Fatalf("aerogate dev exited with %v after SIGTERM", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("aerogate dev did not stop within 30s of SIGTERM")
	}
}

// syncBuffer collects a child's output while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func waitFor(t *testing.T, d time.Duration, ok func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for !ok() {
		select {
		case <-ctx.Done():
			t.Fatal(fmt.Errorf("condition not met within %v", d))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// walkOnboarding follows the README's Embedded Signup walk-through against `aerogate dev`:
// the redirect flow through the fake's dialog, the JavaScript SDK flow with a code from
// POST /_fake/codes, the test message, the account list and a disconnect. It returns the
// codes and states it used.
func walkOnboarding(t *testing.T, base, fake, jwt string) (secrets []string) {
	t.Helper()
	call := func(method, url, body string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(method, url, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+jwt)
		resp, err := http.DefaultClient.Do(req) // follows redirects, as curl -L does
		if err != nil {
			t.Fatalf("%s %s: %v", method, url, err)
		}
		defer resp.Body.Close()
		var v map[string]any
		raw, _ := io.ReadAll(resp.Body)
		if err := json.Unmarshal(raw, &v); err != nil {
			t.Fatalf("%s %s = %d %s: not JSON", method, url, resp.StatusCode, raw)
		}
		return resp.StatusCode, v
	}
	firstAccount := func(v map[string]any) map[string]any {
		accts, _ := v["accounts"].([]any)
		if len(accts) != 1 {
			t.Fatalf("want one account in %v", v)
		}
		return accts[0].(map[string]any)
	}

	// Redirect flow: the dialog URL, followed like a browser.
	_, start := call(http.MethodGet, base+"/v1/whatsapp/embedded-signup", "")
	dialog, _ := start["url"].(string)
	secrets = append(secrets, start["state"].(string))
	if !strings.HasPrefix(dialog, fake+"/v22.0/dialog/oauth?") {
		t.Fatalf("dev's dialog url %q is not the fake's", dialog)
	}
	status, done := call(http.MethodGet, dialog, "")
	if a := firstAccount(done); status != http.StatusOK || done["status"] != "connected" ||
		a["phone_number_id"] != "106540352242922" || a["token_expires_at"] != nil {
		t.Fatalf("redirect flow = %d %v", status, done)
	}

	// JavaScript SDK flow.
	_, start = call(http.MethodGet, base+"/v1/whatsapp/embedded-signup", "")
	state := start["state"].(string)
	_, minted := call(http.MethodPost, fake+"/_fake/codes",
		`{"waba_id":"102290129340399","phone_numbers":[{"id":"106540352242923","display_phone_number":"+1 555-010-0101"}],"token_expires_in_days":60}`)
	code := minted["code"].(string)
	secrets = append(secrets, state, code)
	status, done = call(http.MethodPost, base+"/v1/whatsapp/embedded-signup",
		`{"code":"`+code+`","state":"`+state+`","waba_id":"102290129340399","phone_number_id":"106540352242923"}`)
	if a := firstAccount(done); status != http.StatusOK || a["phone_number_id"] != "106540352242923" || a["token_expires_at"] == nil {
		t.Fatalf("sdk flow = %d %v", status, done)
	}

	status, sent := call(http.MethodPost, base+"/v1/whatsapp/test-message", `{"to":"919876543210","phone_number_id":"106540352242923"}`)
	if msgs, _ := sent["messages"].([]any); status != http.StatusOK || len(msgs) != 1 {
		t.Fatalf("test message = %d %v", status, sent)
	}
	if status, list := call(http.MethodGet, base+"/v1/whatsapp/accounts", ""); status != http.StatusOK || len(list["accounts"].([]any)) != 2 {
		t.Fatalf("accounts = %d %v", status, list)
	}
	status, gone := call(http.MethodDelete, base+"/v1/whatsapp/accounts/106540352242923", "")
	if a, _ := gone["account"].(map[string]any); status != http.StatusOK || a["token_status"] != "disconnected" {
		t.Fatalf("disconnect = %d %v", status, gone)
	}
	return secrets
}
