package tenantfield

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/url"
	"strings"
	"testing"
)

var names = NewNames("tenantId")

func TestMatch(t *testing.T) {
	for _, tc := range []struct {
		name string
		want bool
	}{
		{"tenantId", true},
		{"TENANTID", true},
		{"tenantid", true},
		{"tenantId[]", true},
		{"tenantId[0]", true},
		{"tenantId[a][b]", true},
		{"tenantId.x", true},
		{"tenantIds", false},
		{"tenant", false},
		{"xtenantId", false},
		{"", false},
		{"tenant_id", false},
	} {
		if got := names.Match([]byte(tc.name)); got != tc.want {
			t.Errorf("Match(%q) = %v, want %v", tc.name, got, tc.want)
		}
	}
	// Unicode folding as strings.EqualFold: the Kelvin sign is k, the long s is s.
	kn := NewNames("kids")
	if !kn.Match([]byte("\u212aid\u017f")) {
		t.Error("Kelvin sign and long s should fold to k and s")
	}
}

func TestQueryAndForm(t *testing.T) {
	for _, tc := range []struct {
		in        string
		query     error
		form      error
		skipQuery bool
	}{
		{"", nil, nil, false},
		{"a=1&b=2", nil, nil, false},
		{"tenantId=acme", nil, nil, false},
		{"tenantId=acme&tenantId=acme", nil, ErrDuplicate, false},
		{"tenantId=other", ErrMismatch, ErrMismatch, false},
		{"tenantId=acme&tenantId=other", ErrMismatch, ErrMismatch, false},
		{"tenantId", ErrMismatch, ErrMismatch, false},
		{"tenantId=", ErrMismatch, ErrMismatch, false},
		{"tenant%49d=other", ErrMismatch, ErrMismatch, false},
		{"TenantID=other", ErrMismatch, ErrMismatch, false},
		{"tenantId[]=other", ErrMismatch, ErrMismatch, false},
		{"tenantId%5B0%5D=other", ErrMismatch, ErrMismatch, false},
		{"a=1;tenantId=other", ErrMismatch, ErrMismatch, false},
		{"tenantId=ac%6De", nil, nil, false},
		{"tenantId=acme+", ErrMismatch, ErrMismatch, false},
		{"tenantId=acm", ErrMismatch, ErrMismatch, false},
		{"tenantId=acme%", ErrMismatch, ErrMismatch, false},
		{"tenantIdx=other&x=tenantId", nil, nil, false},
		{"&&tenantId=acme&&", nil, nil, false},
	} {
		if got := names.Query([]byte(tc.in), "acme"); !errors.Is(got, tc.query) {
			t.Errorf("Query(%q) = %v, want %v", tc.in, got, tc.query)
		}
		if got := names.Form([]byte(tc.in), "acme"); !errors.Is(got, tc.form) {
			t.Errorf("Form(%q) = %v, want %v", tc.in, got, tc.form)
		}
	}
}

func TestJSON(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want error
	}{
		{`{}`, nil},
		{` { } `, nil},
		{`[]`, nil},
		{`"tenantId"`, nil},
		{`[{"tenantId":"other"}]`, nil},
		{`{"a":1,"b":[1,{"tenantId":"other"}],"c":{"tenantId":"other"}}`, nil},
		{`{"tenantId":"acme"}`, nil},
		{`{"a":"}\"","tenantId":"acme","b":null}`, nil},
		{`{"tenantId":"other"}`, ErrMismatch},
		{`{"TenantID":"other"}`, ErrMismatch},
		{`{"tenant\u0049d":"other"}`, ErrMismatch},
		{`{"tenantId":"ac\u006de"}`, nil},
		{`{"tenantId":["acme"]}`, ErrMismatch},
		{`{"tenantId":null}`, ErrMismatch},
		{`{"tenantId":1}`, ErrMismatch},
		{`{"tenantId":"acme","tenantId":"acme"}`, ErrDuplicate},
		{`{"tenantId":"acme","tenantid":"other"}`, ErrDuplicate},
		{`{"a":"\"tenantId\":\"other\""}`, nil},
		{`{"tenantId":"acme"`, ErrSyntax},
		{`{"a":[1,2}`, ErrSyntax},
		{`{"a" 1}`, ErrSyntax},
		{`{a:1}`, ErrSyntax},
		{`{"a":"x\q"}`, nil}, // skipped values are the guard's to check
		{`{"tenant\q":"x"}`, ErrSyntax},
		{`{"tenantId":"\ud800"}`, ErrMismatch},
	} {
		if got := names.JSON([]byte(tc.in), "acme"); !errors.Is(got, tc.want) {
			t.Errorf("JSON(%s) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func multipartBody(t testing.TB, boundary string, parts ...[2]string) []byte {
	t.Helper()
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	if err := w.SetBoundary(boundary); err != nil {
		t.Fatal(err)
	}
	for _, p := range parts {
		fw, err := w.CreateFormField(p[0])
		if err != nil {
			t.Fatal(err)
		}
		fw.Write([]byte(p[1]))
	}
	w.Close()
	return b.Bytes()
}

func TestMultipart(t *testing.T) {
	const bd = "xyzzy"
	raw := func(s string) []byte { return []byte(strings.ReplaceAll(s, "\n", "\r\n")) }
	for _, tc := range []struct {
		name string
		body []byte
		want error
	}{
		{"none", multipartBody(t, bd, [2]string{"a", "1"}), nil},
		{"equal", multipartBody(t, bd, [2]string{"a", "1"}, [2]string{"tenantId", "acme"}), nil},
		{"differs", multipartBody(t, bd, [2]string{"tenantId", "other"}), ErrMismatch},
		{"bracket", multipartBody(t, bd, [2]string{"tenantId[]", "other"}), ErrMismatch},
		{"longer", multipartBody(t, bd, [2]string{"tenantId", "acme2"}), ErrMismatch},
		{"twice", multipartBody(t, bd, [2]string{"tenantId", "acme"}, [2]string{"TENANTID", "acme"}), ErrDuplicate},
		{"late", multipartBody(t, bd, [2]string{"file", strings.Repeat("x", 1<<20)}, [2]string{"tenantId", "other"}), ErrMismatch},
		{"rfc 2231 name", raw("--xyzzy\nContent-Disposition: form-data; name*=UTF-8''tenantId\n\nother\n--xyzzy--\n"), ErrMismatch},
		{"file part", raw("--xyzzy\nContent-Disposition: form-data; name=\"tenantId\"; filename=\"a.txt\"\n\nother\n--xyzzy--\n"), ErrMismatch},
		{"quoted-printable", raw("--xyzzy\nContent-Disposition: form-data; name=\"tenantId\"\nContent-Transfer-Encoding: quoted-printable\n\nacme\n--xyzzy--\n"), ErrMismatch},
		{"bad disposition", raw("--xyzzy\nContent-Disposition: form-data; name=\"tenantId\"; name=\"x\"\n\nother\n--xyzzy--\n"), ErrSyntax},
		{"two dispositions", raw("--xyzzy\nContent-Disposition: form-data; name=\"a\"\nContent-Disposition: form-data; name=\"tenantId\"\n\nother\n--xyzzy--\n"), ErrSyntax},
		{"unterminated", raw("--xyzzy\nContent-Disposition: form-data; name=\"a\"\n\n1\n"), ErrSyntax},
	} {
		if got := names.Multipart(bytes.NewReader(tc.body), bd, "acme"); !errors.Is(got, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestBoundary(t *testing.T) {
	for _, tc := range []struct {
		ct        string
		b         string
		multipart bool
		err       bool
	}{
		{"multipart/form-data; boundary=abc", "abc", true, false},
		{"Multipart/Form-Data; boundary=\"a b\"", "a b", true, false},
		{"multipart/form-data", "", true, true},
		{"application/json", "", false, false},
		{";;", "", false, true},
	} {
		b, mp, err := Boundary(tc.ct)
		if b != tc.b || mp != tc.multipart || (err != nil) != tc.err {
			t.Errorf("Boundary(%q) = %q, %v, %v", tc.ct, b, mp, err)
		}
	}
}

// TestScansAreLinear: a body of nested brackets or of many pairs is scanned in one
// pass; a quadratic scan of 4 MiB would not finish within the test's time.
func TestScansAreLinear(t *testing.T) {
	deep := []byte(`{"a":` + strings.Repeat("[", 4<<20) + strings.Repeat("]", 4<<20) + `,"tenantId":"other"}`)
	if err := names.JSON(deep, "acme"); !errors.Is(err, ErrMismatch) {
		t.Fatalf("deep: %v", err)
	}
	unclosed := []byte(`{"a":` + strings.Repeat(`["`, 2<<20))
	if err := names.JSON(unclosed, "acme"); !errors.Is(err, ErrSyntax) {
		t.Fatalf("unclosed: %v", err)
	}
	pairs := []byte(strings.Repeat("a=1&", 1<<20) + "tenantId=other")
	if err := names.Form(pairs, "acme"); !errors.Is(err, ErrMismatch) {
		t.Fatalf("pairs: %v", err)
	}
}

// FuzzJSON: never panics, and whenever encoding/json (case-insensitive, last key wins
// or not) would give a top-level tenantId other than the tenant, JSON refuses the body.
func FuzzJSON(f *testing.F) {
	for _, s := range []string{`{"tenantId":"acme"}`, `{"TenantId":"x"}`, `{"a":[{"b":"}"}],"tenant\u0049d":"acme"}`, `[1]`, `{"tenantId":"a","tenantId":"acme"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		err := names.JSON(b, "acme")
		var m map[string]json.RawMessage
		if json.Unmarshal(b, &m) != nil {
			return
		}
		for k, v := range m {
			if !strings.EqualFold(k, "tenantId") {
				continue
			}
			var s string
			if json.Unmarshal(v, &s) != nil || s != "acme" {
				if err == nil {
					t.Fatalf("body %q: tenantId %s passed", b, v)
				}
			}
		}
	})
}

// FuzzForm: never panics, and any tenantId net/url reads that is not the tenant is
// refused.
func FuzzForm(f *testing.F) {
	for _, s := range []string{"tenantId=acme", "a=1&tenant%49d=x", "tenantId=acme&tenantId=b", "x=%zz&tenantId"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		qerr := names.Query(b, "acme")
		ferr := names.Form(b, "acme")
		if qerr != nil && ferr == nil {
			t.Fatalf("%q: Query refused (%v) what Form passed", b, qerr)
		}
		v, err := url.ParseQuery(string(b))
		if err != nil {
			return
		}
		for k, vals := range v {
			if !strings.EqualFold(k, "tenantId") {
				continue
			}
			for _, s := range vals {
				if s != "acme" && qerr == nil {
					t.Fatalf("%q: tenantId=%q passed", b, s)
				}
			}
		}
	})
}

// FuzzMultipart: never panics, and any tenantId value Go's own form parser reads that
// is not the tenant is refused.
func FuzzMultipart(f *testing.F) {
	f.Add(multipartBody(f, "b", [2]string{"tenantId", "acme"}))
	f.Add(multipartBody(f, "b", [2]string{"x", "1"}, [2]string{"tenantId", "y"}))
	f.Add([]byte("--b\r\nContent-Disposition: form-data; name*=UTF-8''tenantId\r\n\r\nz\r\n--b--\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		err := names.Multipart(bytes.NewReader(b), "b", "acme")
		form, ferr := multipart.NewReader(bytes.NewReader(b), "b").ReadForm(1 << 20)
		if ferr != nil {
			return
		}
		defer form.RemoveAll()
		for k, vals := range form.Value {
			if !strings.EqualFold(k, "tenantId") {
				continue
			}
			for _, s := range vals {
				if s != "acme" && err == nil {
					t.Fatalf("%q: tenantId=%q passed", b, s)
				}
			}
		}
	})
}

func BenchmarkJSON(b *testing.B) {
	body := []byte(fmt.Sprintf(`{"name":"campaign","items":[%s],"tenantId":"acme"}`, strings.Repeat(`{"a":1,"b":"xx"},`, 100)+`{}`))
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if err := names.JSON(body, "acme"); err != nil {
			b.Fatal(err)
		}
	}
}

var _ = io.EOF
