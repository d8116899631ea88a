package main

import (
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func TestParseExpiry(t *testing.T) {
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		in, at  string
		want    time.Time
		never   bool
		wantErr bool
	}{
		{never: true},
		{in: "60d", want: now.Add(60 * 24 * time.Hour)},
		{in: "1440h", want: now.Add(1440 * time.Hour)},
		{at: "2027-01-02T03:04:05Z", want: time.Date(2027, 1, 2, 3, 4, 5, 0, time.UTC)},
		{in: "0d", wantErr: true},
		{in: "-5h", wantErr: true},
		{in: "xd", wantErr: true},
		{in: "sixty days", wantErr: true},
		{at: "tomorrow", wantErr: true},
		{in: "60d", at: "2027-01-02T03:04:05Z", wantErr: true},
	}
	for _, tt := range tests {
		got, err := parseExpiry(now, tt.in, tt.at)
		if tt.wantErr {
			if err == nil {
				t.Errorf("parseExpiry(%q, %q) = %v, want an error", tt.in, tt.at, got)
			}
			continue
		}
		switch {
		case err != nil:
			t.Errorf("parseExpiry(%q, %q): %v", tt.in, tt.at, err)
		case tt.never && got != nil:
			t.Errorf("parseExpiry(%q, %q) = %v, want never", tt.in, tt.at, got)
		case !tt.never && (got == nil || !got.Equal(tt.want)):
			t.Errorf("parseExpiry(%q, %q) = %v, want %v", tt.in, tt.at, got, tt.want)
		}
	}
}

// `accounts add` refuses ids Meta never issues, naming the flag, before it connects to
// anything (the configuration here points at no database).
func TestAccountsAddChecksValues(t *testing.T) {
	base := []string{"add", "--tenant", "acme", "--waba-id", "102290129340398", "--phone-number-id", "106540352242922", "--access-token", "EAAG-x"}
	tests := []struct {
		name string
		args []string
		want string // "" means the input is accepted
	}{
		{"valid", nil, ""},
		{"dev phone number id", []string{"--phone-number-id", "dev-1"}, "--phone-number-id: invalid phone number id"},
		{"waba id with letters", []string{"--waba-id", "waba-a"}, "--waba-id: invalid WhatsApp Business Account id"},
		{"throughput over Meta's highest", []string{"--throughput-mps", "1001"}, "--throughput-mps: invalid throughput"},
		{"negative throughput", []string{"--throughput-mps", "-5"}, "--throughput-mps: invalid throughput"},
		{"throughput of a raised number", []string{"--throughput-mps", "1000"}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fs := pflag.NewFlagSet("accounts", pflag.ContinueOnError)
			accountsFlags(fs)
			if err := fs.Parse(append(append([]string(nil), base...), tc.args...)); err != nil {
				t.Fatal(err)
			}
			_, err := addInput(fs, "acme")
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("addInput: %v", err)
			case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want)):
				t.Fatalf("addInput = %v, want an error starting %q", err, tc.want)
			}
		})
	}
}
