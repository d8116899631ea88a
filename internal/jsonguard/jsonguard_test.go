package jsonguard

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/valyala/fastjson"
)

func TestCheck(t *testing.T) {
	deep := func(open, close string, n int) string { return strings.Repeat(open, n) + strings.Repeat(close, n) }
	for _, tc := range []struct {
		name  string
		in    string
		depth int
		want  error
	}{
		{"object", `{"a":[1,-0.5e+3,"x\u00e9\n",true,false,null,{}],"b":{}}`, 0, nil},
		{"scalar", `  "x"  `, 0, nil},
		{"number", `-12.5E-7`, 0, nil},
		{"zero", `0`, 0, nil},
		{"utf-8", "\"h\u00e9llo \U0001F600\"", 0, nil},
		{"lone surrogate escape", `"\ud800"`, 0, nil}, // legal JSON text, as encoding/json agrees
		{"empty", ``, 0, ErrSyntax},
		{"spaces", " \n\t\r", 0, ErrSyntax},
		{"trailing data", `{} {}`, 0, ErrSyntax},
		{"trailing comma array", `[1,]`, 0, ErrSyntax},
		{"trailing comma object", `{"a":1,}`, 0, ErrSyntax},
		{"leading comma", `[,1]`, 0, ErrSyntax},
		{"missing colon", `{"a" 1}`, 0, ErrSyntax},
		{"unquoted key", `{a:1}`, 0, ErrSyntax},
		{"mismatched close", `[}`, 0, ErrSyntax},
		{"mismatched close object", `{"a":[1}`, 0, ErrSyntax},
		{"extra close", `[]]`, 0, ErrSyntax},
		{"unclosed", `[[`, 0, ErrSyntax},
		{"unclosed string", `"abc`, 0, ErrSyntax},
		{"control char", "\"a\x01\"", 0, ErrSyntax},
		{"bad escape", `"\x"`, 0, ErrSyntax},
		{"short unicode escape", `"\u12"`, 0, ErrSyntax},
		{"escape at end", `"\`, 0, ErrSyntax},
		{"invalid utf-8", "\"\xff\"", 0, ErrSyntax},
		{"overlong utf-8", "\"\xc0\xaf\"", 0, ErrSyntax},
		{"utf-8 surrogate", "\"\xed\xa0\x80\"", 0, ErrSyntax},
		{"NaN", `NaN`, 0, ErrSyntax},
		{"leading zero", `01`, 0, ErrSyntax},
		{"bare minus", `-`, 0, ErrSyntax},
		{"dot without digits", `1.`, 0, ErrSyntax},
		{"exponent without digits", `1e+`, 0, ErrSyntax},
		{"plus sign", `+1`, 0, ErrSyntax},
		{"truncated literal", `tru`, 0, ErrSyntax},
		{"wrong literal", `nul1`, 0, ErrSyntax},
		{"depth at limit", deep("[", "]", 64), 0, nil},
		{"depth over limit", deep("[", "]", 65), 0, ErrTooDeep},
		{"objects at limit", strings.Repeat(`{"a":`, 64) + "1" + strings.Repeat("}", 64), 0, nil},
		{"object without innermost value", deep(`{"a":`, "}", 3), 0, ErrSyntax},
		{"objects over limit", strings.Repeat(`{"a":`, 65) + "1" + strings.Repeat("}", 65), 0, ErrTooDeep},
		{"mixed at limit", strings.Repeat(`[{"a":`, 32) + "1" + strings.Repeat("}]", 32), 0, nil},
		{"mixed over limit", strings.Repeat(`[{"a":`, 33) + "1" + strings.Repeat("}]", 33), 0, ErrTooDeep},
		{"configured limit", deep("[", "]", 3), 2, ErrTooDeep},
		{"limit clamped", deep("[", "]", 257), 1000, ErrTooDeep},
		{"unclosed deep", strings.Repeat("[", 1<<16), 0, ErrTooDeep},
		{"unclosed shallow", strings.Repeat("[", 10), 0, ErrSyntax},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Check([]byte(tc.in), tc.depth)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Check(%.40q, %d) = %v, want %v", tc.in, tc.depth, err, tc.want)
			}
			// The strict verdict agrees with encoding/json whenever depth is not the reason.
			if tc.want != ErrTooDeep && (err == nil) != (json.Valid([]byte(tc.in)) && utf8.ValidString(tc.in)) {
				t.Fatalf("Check and encoding/json disagree on %.40q: %v", tc.in, err)
			}
		})
	}
}

// TestErrorsConstant: the error of a huge hostile input is the same small value as
// that of a tiny one (the quadratic cost this package prevents was an error message
// rebuilt at every level).
func TestErrorsConstant(t *testing.T) {
	for _, in := range [][]byte{
		bytes.Repeat([]byte("["), 1<<20),
		append(bytes.Repeat([]byte("["), 60), bytes.Repeat([]byte("x"), 1<<20)...),
		append([]byte(`"`), bytes.Repeat([]byte(`\u00e9`), 1<<18)...),
	} {
		err := Check(in, 64)
		if err != ErrSyntax && err != ErrTooDeep {
			t.Fatalf("error %v is not a sentinel", err)
		}
		if len(err.Error()) > 32 {
			t.Fatalf("error message of %d bytes", len(err.Error()))
		}
	}
}

// maxDepth is the nesting depth of valid JSON b, computed with encoding/json.
func maxDepth(t *testing.T, b []byte) int {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber() // 1e1000 is valid JSON, not a float64
	depth, most := 0, 0
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return most
		}
		if err != nil {
			t.Fatalf("valid JSON did not tokenize: %v", err)
		}
		switch tok {
		case json.Delim('['), json.Delim('{'):
			depth++
			most = max(most, depth)
		case json.Delim(']'), json.Delim('}'):
			depth--
		}
	}
}

// FuzzCheck holds Check to encoding/json's verdict (plus UTF-8 validity and the depth
// limit), to fastjson accepting whatever Check accepts, and to its work budget: at
// most len(b)+1 steps and no allocation, whatever the input.
func FuzzCheck(f *testing.F) {
	for _, s := range []string{
		`{"a":[1,2,{"b":null}],"c":"\u00e9\n"}`, `[[[[`, `]`, `{"a":}`, `"\ud83d\ude00"`, `-0.0e-0`,
		"\"\xe2\x82\"", `[1,2,3]x`, `{"a":1,"a":2}`, `  true  `, "[" + strings.Repeat("[", 70),
	} {
		f.Add([]byte(s), uint8(8))
	}
	f.Fuzz(func(t *testing.T, b []byte, limit uint8) {
		depth := int(limit%16) + 1
		steps, err := scan(b, depth)
		if steps > len(b)+1 {
			t.Fatalf("%d steps for %d bytes", steps, len(b))
		}
		if err != nil && err != ErrSyntax && err != ErrTooDeep {
			t.Fatalf("unexpected error %v", err)
		}
		valid := json.Valid(b) && utf8.Valid(b)
		switch {
		case err == nil && !valid:
			t.Fatalf("accepted invalid JSON %q", b)
		case err == nil && maxDepth(t, b) > depth:
			t.Fatalf("accepted depth %d over limit %d: %q", maxDepth(t, b), depth, b)
		case err == nil && fastjson.ValidateBytes(b) != nil:
			t.Fatalf("fastjson refuses what Check accepts: %q: %v", b, fastjson.ValidateBytes(b))
		case err == ErrSyntax && valid:
			t.Fatalf("refused valid JSON %q", b)
		case err == ErrTooDeep && valid && maxDepth(t, b) <= depth:
			t.Fatalf("too deep at depth %d, limit %d: %q", maxDepth(t, b), depth, b)
		}
		if allocs := testing.AllocsPerRun(2, func() { _ = Check(b, depth) }); allocs != 0 {
			t.Fatalf("%v allocations", allocs)
		}
	})
}

// Worst inputs for a JSON checker, each built to size n bytes.
var worst = []struct {
	name string
	make func(n int) []byte
}{
	{"unclosed-arrays", func(n int) []byte { return bytes.Repeat([]byte("["), n) }},
	{"unclosed-objects", func(n int) []byte { return repeatTo(`{"":`, n) }},
	{"deep-mix-at-limit", func(n int) []byte {
		// 63 levels inside the list: every byte is scanned, none refused.
		unit := strings.Repeat(`[{"a":`, 31) + `[1]` + strings.Repeat("}]", 31)
		return listOf(unit, n)
	}},
	{"escapes", func(n int) []byte {
		return append(append([]byte(`"`), repeatTo(`\u00e9\n\"`, n-2)...), '"')
	}},
	{"many-keys", func(n int) []byte { return objectOf(n, func(i int) string { return fmt.Sprintf(`"k%d":%d`, i, i) }) }},
	{"many-strings", func(n int) []byte { return listOf(`""`, n) }},
	{"many-numbers", func(n int) []byte { return listOf(`-1.5e+3`, n) }},
	{"utf-8-text", func(n int) []byte {
		return append(append([]byte(`"`), repeatTo("h\u00e9\u4e16\U0001F600", n-2)...), '"')
	}},
}

func repeatTo(unit string, n int) []byte {
	return bytes.Repeat([]byte(unit), max(1, n/len(unit)))
}

// listOf is [unit,unit,...] of about n bytes.
func listOf(unit string, n int) []byte {
	b := []byte{'['}
	for len(b)+len(unit)+2 <= n || len(b) == 1 {
		if len(b) > 1 {
			b = append(b, ',')
		}
		b = append(b, unit...)
	}
	return append(b, ']')
}

func objectOf(n int, member func(i int) string) []byte {
	b := []byte{'{'}
	for i := 0; len(b) < n-16 || i == 0; i++ {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, member(i)...)
	}
	return append(b, '}')
}

var benchSizes = []int{1 << 10, 8 << 10, 64 << 10, 512 << 10}

// BenchmarkCheckWorst shows Check's cost per byte staying flat as the worst inputs grow
// 512-fold: compare cpu-ns/B (this process's CPU time per input byte, which other load on
// the machine does not inflate) across sizes. The unclosed inputs stop at the depth limit,
// so their cost per byte falls as they grow.
func BenchmarkCheckWorst(b *testing.B) {
	for _, w := range worst {
		for _, n := range benchSizes {
			in := w.make(n)
			b.Run(fmt.Sprintf("%s/%dKiB", w.name, n>>10), func(b *testing.B) {
				b.SetBytes(int64(len(in)))
				b.ReportAllocs()
				start := processCPU()
				for b.Loop() {
					_ = Check(in, DefaultMaxDepth)
				}
				cpu := processCPU() - start
				b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N)/float64(len(in)), "cpu-ns/B")
			})
		}
	}
}

const sendBody = `{"messaging_product":"whatsapp","recipient_type":"individual","to":"+15551234567","type":"template","template":{"name":"order_shipped","language":{"code":"en_US"},"components":[{"type":"body","parameters":[{"type":"text","text":"Your order 4711 has shipped and arrives on Tuesday."},{"type":"currency","currency":{"fallback_value":"$100.99","code":"USD","amount_1000":100990}}]}]}}`

// BenchmarkCheckSendBody compares Check with what it replaces on a typical send body:
// UTF-8 validation plus fastjson's validator.
func BenchmarkCheckSendBody(b *testing.B) {
	in := []byte(sendBody)
	b.Run("jsonguard", func(b *testing.B) {
		b.SetBytes(int64(len(in)))
		for b.Loop() {
			if Check(in, DefaultMaxDepth) != nil {
				b.Fatal("refused")
			}
		}
	})
	b.Run("utf8+fastjson", func(b *testing.B) {
		b.SetBytes(int64(len(in)))
		for b.Loop() {
			if !utf8.Valid(in) || fastjson.ValidateBytes(in) != nil {
				b.Fatal("refused")
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.SetBytes(int64(len(in)))
		for b.Loop() {
			if !json.Valid(in) {
				b.Fatal("refused")
			}
		}
	})
}

// TestWorstInputs: the benchmark's inputs are what they claim, so it measures full scans
// (valid ones) and early refusals (the unclosed ones).
func TestWorstInputs(t *testing.T) {
	for _, w := range worst {
		in := w.make(64 << 10)
		want := error(nil)
		if strings.HasPrefix(w.name, "unclosed") {
			want = ErrTooDeep
		}
		if err := Check(in, DefaultMaxDepth); err != want {
			t.Errorf("%s: Check = %v, want %v", w.name, err, want)
		}
		if len(in) < 60<<10 || len(in) > 66<<10 {
			t.Errorf("%s: %d bytes", w.name, len(in))
		}
	}
}

func TestCheckUnique(t *testing.T) {
	many := func(dup bool) string {
		var b strings.Builder
		b.WriteString("{")
		for i := range 40 {
			fmt.Fprintf(&b, `"k%d":%d,`, i, i)
		}
		if dup {
			b.WriteString(`"k\u0031":0,`) // "k1" again
		}
		b.WriteString(`"end":0}`)
		return b.String()
	}
	for _, tc := range []struct {
		in   string
		want error
	}{
		{`{"a":1,"b":{"a":2},"c":[{"a":3},{"a":4}]}`, nil},
		{`{"a":1,"A":2}`, nil},
		{`{"a":1,"a":2}`, ErrDuplicateKey},
		{`{"a":1,"\u0061":2}`, ErrDuplicateKey},
		{`{"x":[{"b":1,"b":1}]}`, ErrDuplicateKey},
		{`{"x":{"y":{"z":{"":1,"":2}}}}`, ErrDuplicateKey},
		{many(false), nil},
		{many(true), ErrDuplicateKey},
		{`{"a":1,"a":2`, ErrSyntax},
		{strings.Repeat(`{"a":`, 65) + "1" + strings.Repeat("}", 65), ErrTooDeep},
	} {
		if err := CheckUnique([]byte(tc.in), DefaultMaxDepth); err != tc.want {
			t.Errorf("CheckUnique(%.50q) = %v, want %v", tc.in, err, tc.want)
		}
	}
}

// FuzzCheckUnique holds CheckUnique to an independent duplicate-key finder (encoding/json
// tokens) and to its budget: allocations at most linear in the input.
func FuzzCheckUnique(f *testing.F) {
	for _, s := range []string{`{"a":1,"a":2}`, `{"a":{"b":1,"\u0062":2}}`, `[{"a":1},{"a":1}]`, `{"":1,"":2}`, `{"a":1,"A":1}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		err := CheckUnique(b, 16)
		if Check(b, 16) != nil {
			if err != Check(b, 16) {
				t.Fatalf("CheckUnique = %v, Check = %v", err, Check(b, 16))
			}
			return
		}
		if want := duplicateByTokens(t, b); (err == ErrDuplicateKey) != want || (err != nil && err != ErrDuplicateKey) {
			t.Fatalf("CheckUnique(%q) = %v, duplicate by encoding/json: %v", b, err, want)
		}
		if allocs := testing.AllocsPerRun(2, func() { _ = CheckUnique(b, 16) }); allocs > float64(4+len(b)/2) {
			t.Fatalf("%v allocations for %d bytes", allocs, len(b))
		}
	})
}

// duplicateByTokens finds a repeated key in valid JSON b with encoding/json's tokenizer.
func duplicateByTokens(t *testing.T, b []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	type frame struct {
		keys     map[string]bool
		isObject bool
		wantKey  bool
	}
	var stack []frame
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return false
		}
		if err != nil {
			t.Fatalf("valid JSON did not tokenize: %v", err)
		}
		top := len(stack) - 1
		if d, ok := tok.(json.Delim); ok && (d == '}' || d == ']') {
			stack = stack[:top]
			if top > 0 && stack[top-1].isObject {
				stack[top-1].wantKey = true
			}
			continue
		}
		if top >= 0 && stack[top].isObject && stack[top].wantKey {
			k := tok.(string)
			if stack[top].keys[k] {
				return true
			}
			stack[top].keys[k] = true
			stack[top].wantKey = false
			continue
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, frame{keys: map[string]bool{}, isObject: true, wantKey: true})
		case json.Delim('['):
			stack = append(stack, frame{})
		default:
			if top >= 0 && stack[top].isObject {
				stack[top].wantKey = true
			}
		}
	}
}

// processCPU is this process's CPU time so far (user plus system).
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
