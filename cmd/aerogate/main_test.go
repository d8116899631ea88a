package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aerostic/aerogate/config"
)

// TestHelpAndVersionGoToStdout: asked-for help and the version are answers, not errors.
func TestHelpAndVersionGoToStdout(t *testing.T) {
	tests := []struct {
		args     []string
		code     int
		stdout   string // a part of it
		toStderr bool   // the text goes to stderr instead
	}{
		{args: []string{"--help"}, stdout: "usage: aerogate <command>"},
		{args: []string{"help"}, stdout: "rotate-keys"},
		{args: []string{"gateway", "--help"}, stdout: "--http.addr"},
		{args: []string{"migrate", "-h"}, stdout: "--wait"},
		{args: []string{"version"}, stdout: "aerogate "},
		{args: nil, code: 2, toStderr: true},
		{args: []string{"nosuch"}, code: 2, toStderr: true},
		{args: []string{"gateway", "--nosuch"}, code: 2, toStderr: true},
	}
	for _, tt := range tests {
		var stdout, stderr bytes.Buffer
		code := run(tt.args, &stdout, &stderr)
		if code != tt.code {
			t.Errorf("aerogate %q = %d, want %d", tt.args, code, tt.code)
		}
		if tt.toStderr {
			if stdout.Len() != 0 || stderr.Len() == 0 {
				t.Errorf("aerogate %q: stdout %q, stderr %q; want the complaint on stderr only", tt.args, stdout.String(), stderr.String())
			}
			continue
		}
		if !strings.Contains(stdout.String(), tt.stdout) || stderr.Len() != 0 {
			t.Errorf("aerogate %q: stdout %.80q, stderr %.80q; want %q on stdout", tt.args, stdout.String(), stderr.String(), tt.stdout)
		}
	}
}

// TestStopOnSignal: the first signal ends the context (a graceful stop); a second one
// exits at once, and so does a stop longer than the grace.
func TestStopOnSignal(t *testing.T) {
	exits := make(chan int, 1)
	exit := func(code int) { exits <- code }

	ctx, stop := stopOnSignal(time.Hour, exit)
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("SIGTERM did not end the context")
	}
	select {
	case code := <-exits:
		t.Fatalf("exited (%d) at the first signal", code)
	case <-time.After(50 * time.Millisecond):
	}
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-exits:
		if code != 130 {
			t.Fatalf("second signal exited with %d, want 130", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a second signal did not exit")
	}
	stop()

	ctx, stop = stopOnSignal(100*time.Millisecond, exit)
	defer stop()
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-ctx.Done()
	select {
	case code := <-exits:
		if code != 1 {
			t.Fatalf("a stop past shutdown.grace exited with %d, want 1", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a stop past shutdown.grace did not exit")
	}
}

// TestLogAttributeNames: whichever package wrote it, an error is "error" and a tenant
// "tenant" in every role's log.
func TestLogAttributeNames(t *testing.T) {
	var buf bytes.Buffer
	log := newLogger(config.Log{Level: "info", Format: "json"}, &buf).With("tenant_id", "acme")
	log.Warn("x", "err", errors.New("boom"))
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatal(err)
	}
	if line["error"] != "boom" || line["tenant"] != "acme" || line["err"] != nil || line["tenant_id"] != nil {
		t.Fatalf("log line %s", buf.String())
	}
}
