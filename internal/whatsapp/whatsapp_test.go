package whatsapp_test

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/aerostic/aerogate/internal/whatsapp"
)

func TestParsePhoneNumberID(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"106540352242922", true},
		{"1", true},
		{strings.Repeat("9", whatsapp.MaxIDDigits), true},
		{"", false},
		{strings.Repeat("9", whatsapp.MaxIDDigits+1), false},
		{"dev-1", false},
		{"pn-1", false},
		{"1 2", false},
		{"../x", false},
		{"+106540352242922", false},
		{"١٢٣", false}, // Arabic-Indic digits are not ASCII digits
		{"123\x00", false},
	} {
		got, err := whatsapp.ParsePhoneNumberID(tc.in)
		if tc.ok != (err == nil) {
			t.Errorf("ParsePhoneNumberID(%q) = %q, %v; want ok=%v", tc.in, got, err, tc.ok)
			continue
		}
		if err != nil && !errors.Is(err, whatsapp.ErrPhoneNumberID) {
			t.Errorf("ParsePhoneNumberID(%q): %v does not wrap ErrPhoneNumberID", tc.in, err)
		}
		if err == nil && string(got) != tc.in {
			t.Errorf("ParsePhoneNumberID(%q) = %q", tc.in, got)
		}
		if (whatsapp.CheckPhoneNumberID([]byte(tc.in)) == nil) != tc.ok {
			t.Errorf("CheckPhoneNumberID(%q) disagrees with ParsePhoneNumberID", tc.in)
		}
	}
}

func TestParseWABAID(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"102290129340398", true},
		{"7", true},
		{"", false},
		{"waba-a", false},
		{"w", false},
		{" 102290129340398", false},
		{strings.Repeat("1", whatsapp.MaxIDDigits+1), false},
	} {
		got, err := whatsapp.ParseWABAID(tc.in)
		if tc.ok != (err == nil) {
			t.Errorf("ParseWABAID(%q) = %q, %v; want ok=%v", tc.in, got, err, tc.ok)
			continue
		}
		if err != nil && !errors.Is(err, whatsapp.ErrWABAID) {
			t.Errorf("ParseWABAID(%q): %v does not wrap ErrWABAID", tc.in, err)
		}
	}
}

func TestParseGraphVersion(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"v22.0", true},
		{"v2.0", true},
		{"v999.999", true},
		{"v22", false},
		{"v22.", false},
		{"v.0", false},
		{"22.0", false},
		{"V22.0", false},
		{"v22.0.1", false},
		{"v1000.0", false},
		{"v1.1000", false},
		{"v22,0", false},
		{"", false},
		{"v", false},
		{"v22.0 ", false},
	} {
		got, err := whatsapp.ParseGraphVersion(tc.in)
		if tc.ok != (err == nil) {
			t.Errorf("ParseGraphVersion(%q) = %q, %v; want ok=%v", tc.in, got, err, tc.ok)
			continue
		}
		if err != nil && !errors.Is(err, whatsapp.ErrGraphVersion) {
			t.Errorf("ParseGraphVersion(%q): %v does not wrap ErrGraphVersion", tc.in, err)
		}
		if (whatsapp.CheckGraphVersion([]byte(tc.in)) == nil) != tc.ok {
			t.Errorf("CheckGraphVersion(%q) disagrees with ParseGraphVersion", tc.in)
		}
	}
}

func TestParseRecipient(t *testing.T) {
	for _, tc := range []struct {
		in, want string // want "" means refused
	}{
		{"919876543210", "919876543210"},
		{"+919876543210", "919876543210"},
		{"+91 98765 43210", "919876543210"},
		{"+1 (650) 555-1234", "16505551234"},
		{"1-650-555-1234", "16505551234"},
		{"(0) 98765 43210", "09876543210"},
		{"+6834002", "6834002"},                 // 7 digits: the shortest
		{"+123456789012345", "123456789012345"}, // 15 digits: E.164's longest
		{"", ""},
		{"+", ""},
		{"+ ", ""},
		{"123456", ""},            // 6 digits
		{"+1234567890123456", ""}, // 16 digits
		{"91 98765+43210", ""},    // + inside
		{" +919876543210", ""},    // + not first
		{"++919876543210", ""},
		{"+91.98765.43210", ""}, // Meta lists +, hyphens, parentheses and spaces only
		{"+91/98765/43210", ""},
		{"919876543210abc", ""},
		{"٩١٩٨٧٦٥٤٣٢١٠", ""}, // non-ASCII digits
		{"+91\t98765\t43210", ""},
		{"9198765432" + strings.Repeat(" ", whatsapp.MaxRecipientInput), ""}, // too long as sent
	} {
		got, err := whatsapp.ParseRecipient(tc.in)
		if tc.want == "" {
			if err == nil {
				t.Errorf("ParseRecipient(%q) = %q, want an error", tc.in, got)
			} else if !errors.Is(err, whatsapp.ErrRecipient) {
				t.Errorf("ParseRecipient(%q): %v does not wrap ErrRecipient", tc.in, err)
			}
			continue
		}
		if err != nil || string(got) != tc.want {
			t.Errorf("ParseRecipient(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

// A dst with room for the digits never grows, and a refused input appends nothing.
func TestAppendRecipientNoGrowth(t *testing.T) {
	var buf [whatsapp.MaxRecipientDigits]byte
	out, err := whatsapp.AppendRecipient(buf[:0], []byte("+1 (650) 555-1234"))
	if err != nil || string(out) != "16505551234" || &out[0] != &buf[0] {
		t.Fatalf("AppendRecipient = %q, %v (same array: %v)", out, err, err == nil && &out[0] == &buf[0])
	}
	out, err = whatsapp.AppendRecipient(buf[:3], "12345678901234567890")
	if err == nil || len(out) != 3 {
		t.Fatalf("AppendRecipient(20 digits) = %q, %v; want dst unchanged and an error", out, err)
	}
	if n := testing.AllocsPerRun(100, func() {
		_, _ = whatsapp.AppendRecipient(buf[:0], "+91 98765 43210")
		_, _ = whatsapp.AppendRecipient(buf[:0], "not a number")
	}); n != 0 {
		t.Errorf("AppendRecipient allocates %v times per call", n)
	}
}

func TestParseThroughput(t *testing.T) {
	for _, tc := range []struct {
		in int
		ok bool
	}{
		{80, true}, {1, true}, {1000, true}, {250, true},
		{0, false}, {-80, false}, {1001, false}, {1 << 40, false},
	} {
		got, err := whatsapp.ParseThroughput(tc.in)
		if tc.ok != (err == nil) {
			t.Errorf("ParseThroughput(%d) = %d, %v; want ok=%v", tc.in, got, err, tc.ok)
			continue
		}
		if err != nil && !errors.Is(err, whatsapp.ErrThroughput) {
			t.Errorf("ParseThroughput(%d): %v does not wrap ErrThroughput", tc.in, err)
		}
		if err == nil && int(got) != tc.in {
			t.Errorf("ParseThroughput(%d) = %d", tc.in, got)
		}
	}
}

func TestCheckTextBody(t *testing.T) {
	for _, tc := range []struct {
		name string
		body string
		ok   bool
	}{
		{"one character", "a", true},
		{"4096 ASCII", strings.Repeat("a", 4096), true},
		{"4097 ASCII", strings.Repeat("a", 4097), false},
		{"4096 emoji (16 KiB of UTF-8, 8192 UTF-16 units)", strings.Repeat("👍", 4096), true},
		{"4097 emoji", strings.Repeat("👍", 4097), false},
		{"4095 ASCII + 1 two-byte", strings.Repeat("a", 4095) + "é", true},
		{"4096 ASCII + 1 two-byte", strings.Repeat("a", 4096) + "é", false},
		{"empty", "", false},
	} {
		err := whatsapp.CheckTextBody([]byte(tc.body))
		if tc.ok != (err == nil) {
			t.Errorf("%s: CheckTextBody = %v, want ok=%v", tc.name, err, tc.ok)
		}
		if err != nil && !errors.Is(err, whatsapp.ErrTextBody) {
			t.Errorf("%s: %v does not wrap ErrTextBody", tc.name, err)
		}
	}
}

func TestErrorsName(t *testing.T) {
	_, err := whatsapp.ParseGraphVersion("v22")
	if got := err.Error(); got != "invalid Graph API version: want vMAJOR.MINOR such as v22.0" {
		t.Errorf("error text = %q", got)
	}
}

// The fuzz targets check each parser's invariants: it never panics, an accepted value
// re-parses to itself, and what it accepts obeys the documented rules.

func FuzzParsePhoneNumberID(f *testing.F) {
	for _, s := range []string{"106540352242922", "dev-1", "", "1\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := whatsapp.ParsePhoneNumberID(s)
		if err != nil {
			if !errors.Is(err, whatsapp.ErrPhoneNumberID) {
				t.Fatalf("%v does not wrap ErrPhoneNumberID", err)
			}
			return
		}
		if string(id) != s || len(s) == 0 || len(s) > whatsapp.MaxIDDigits || strings.Trim(s, "0123456789") != "" {
			t.Fatalf("accepted %q as %q", s, id)
		}
	})
}

func FuzzParseWABAID(f *testing.F) {
	for _, s := range []string{"102290129340398", "waba-a", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := whatsapp.ParseWABAID(s)
		if err != nil {
			if !errors.Is(err, whatsapp.ErrWABAID) {
				t.Fatalf("%v does not wrap ErrWABAID", err)
			}
			return
		}
		if string(id) != s || len(s) == 0 || len(s) > whatsapp.MaxIDDigits || strings.Trim(s, "0123456789") != "" {
			t.Fatalf("accepted %q as %q", s, id)
		}
	})
}

func FuzzParseGraphVersion(f *testing.F) {
	for _, s := range []string{"v22.0", "v22", "v1.1.1", "v999.999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := whatsapp.ParseGraphVersion(s)
		if err != nil {
			if !errors.Is(err, whatsapp.ErrGraphVersion) {
				t.Fatalf("%v does not wrap ErrGraphVersion", err)
			}
			return
		}
		major, minor, ok := strings.Cut(strings.TrimPrefix(string(v), "v"), ".")
		if string(v) != s || s[0] != 'v' || !ok || major == "" || minor == "" || len(major) > 3 || len(minor) > 3 ||
			strings.Trim(major+minor, "0123456789") != "" {
			t.Fatalf("accepted %q as %q", s, v)
		}
	})
}

func FuzzParseRecipient(f *testing.F) {
	for _, s := range []string{"+91 98765 43210", "+1 (650) 555-1234", "919876543210", "+", "1+2", "٩١٩"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := whatsapp.ParseRecipient(s)
		if err != nil {
			if !errors.Is(err, whatsapp.ErrRecipient) {
				t.Fatalf("%v does not wrap ErrRecipient", err)
			}
			return
		}
		if len(r) < whatsapp.MinRecipientDigits || len(r) > whatsapp.MaxRecipientDigits ||
			strings.Trim(string(r), "0123456789") != "" {
			t.Fatalf("ParseRecipient(%q) = %q: not 7 to 15 digits", s, r)
		}
		if strings.Trim(strings.TrimPrefix(s, "+"), "0123456789 -()") != "" || len(s) > whatsapp.MaxRecipientInput {
			t.Fatalf("ParseRecipient accepted %q", s)
		}
		// The digits are a fixed point: normalizing them again changes nothing.
		if again, err := whatsapp.ParseRecipient(string(r)); err != nil || again != r {
			t.Fatalf("ParseRecipient(%q) = %q, %v; want %q", r, again, err, r)
		}
	})
}

func FuzzParseThroughput(f *testing.F) {
	for _, n := range []int{80, 0, -1, 1000, 1001} {
		f.Add(n)
	}
	f.Fuzz(func(t *testing.T, n int) {
		got, err := whatsapp.ParseThroughput(n)
		if (err == nil) != (n >= 1 && n <= 1000) {
			t.Fatalf("ParseThroughput(%d) = %d, %v", n, got, err)
		}
		if err != nil && !errors.Is(err, whatsapp.ErrThroughput) {
			t.Fatalf("%v does not wrap ErrThroughput", err)
		}
	})
}

func FuzzCheckTextBody(f *testing.F) {
	for _, s := range []string{"hi", strings.Repeat("👍", 4097), strings.Repeat("a", 4096), "\xff"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		err := whatsapp.CheckTextBody(b)
		if want := len(b) > 0 && utf8.RuneCount(b) <= whatsapp.MaxTextBody; (err == nil) != want {
			t.Fatalf("CheckTextBody(%d bytes, %d runes) = %v", len(b), utf8.RuneCount(b), err)
		}
	})
}

func TestValidObjectID(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{"106540352242922", true},
		{"1", true},
		{strings.Repeat("9", whatsapp.MaxIDDigits), true},
		{strings.Repeat("9", whatsapp.MaxIDDigits+1), false},
		{"", false},
		{"dev-1", false},
		{"12a", false},
	} {
		if got := whatsapp.ValidObjectID([]byte(tc.in)); got != tc.want {
			t.Errorf("ValidObjectID(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}
