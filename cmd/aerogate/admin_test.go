package main

import (
	"testing"
	"time"
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
