package inbound

import (
	"errors"
	"testing"
)

func TestCursorRoundTrip(t *testing.T) {
	for _, seq := range []int64{1, 42, 1 << 40, 1<<63 - 1} {
		c := Cursor{seq: seq}
		got, err := ParseCursor(c.String())
		if err != nil || got != c {
			t.Errorf("ParseCursor(%q) = %v, %v; want seq %d", c.String(), got, err, seq)
		}
	}
	if c, err := ParseCursor(""); err != nil || c != (Cursor{}) {
		t.Errorf(`ParseCursor("") = %v, %v; want the beginning`, c, err)
	}
	for _, bad := range []string{"42", "in1.", "in1.!!", "in1.LTE", "in2.MQ", "in1." + "MTExMTExMTExMTExMTExMTExMTExMTEx"} {
		if _, err := ParseCursor(bad); !errors.Is(err, ErrInvalidCursor) {
			t.Errorf("ParseCursor(%q) = %v, want ErrInvalidCursor", bad, err)
		}
	}
}

// FuzzParseCursor: any text is either refused or names a position that round-trips.
func FuzzParseCursor(f *testing.F) {
	f.Add("")
	f.Add(Cursor{seq: 12345}.String())
	f.Add("in1.LTE")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCursor(s)
		if err != nil {
			return
		}
		if c.seq < 0 {
			t.Fatalf("ParseCursor(%q) gave seq %d", s, c.seq)
		}
		if again, err := ParseCursor(c.String()); err != nil || again != c {
			t.Fatalf("cursor %q does not round-trip: %v %v", s, again, err)
		}
	})
}
