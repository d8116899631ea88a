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
// then `aerogate accounts add`, `aerogate token` and a send that gets a 202 and ends sent.
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

	// The sender role in the same process delivers it to the fake Graph API.
	var status string
	waitFor(t, 30*time.Second, func() bool {
		req, _ := http.NewRequest(http.MethodGet, base+"/v1/messages/"+accepted.ID, nil)
		req.Header.Set("Authorization", "Bearer "+jwt)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var m struct{ Status string }
		_ = json.NewDecoder(resp.Body).Decode(&m)
		status = m.Status
		return status == "sent"
	})

	// Tokens never reach the logs.
	if strings.Contains(devLog.String(), metaToken) || strings.Contains(devLog.String(), jwt) {
		t.Fatal("aerogate dev logged a token")
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
