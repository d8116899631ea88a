package media_test

import (
	"bytes"
	"errors"
	"io"
	"mime/multipart"
	"net/textproto"
	"strings"
	"testing"

	"github.com/aerostic/aerogate/internal/media"
)

// form builds a multipart body: fields in order, then (when file is not nil) the file
// part with fileType as its Content-Type, then trailing fields.
func form(t testing.TB, fields [][2]string, fileType string, file []byte, trailing ...[2]string) (string, []byte) {
	t.Helper()
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	for _, f := range fields {
		_ = w.WriteField(f[0], f[1])
	}
	if file != nil {
		h := textproto.MIMEHeader{}
		h.Set("Content-Disposition", `form-data; name="file"; filename="f"`)
		if fileType != "" {
			h.Set("Content-Type", fileType)
		}
		pw, _ := w.CreatePart(h)
		_, _ = pw.Write(file)
	}
	for _, f := range trailing {
		_ = w.WriteField(f[0], f[1])
	}
	_ = w.Close()
	return w.FormDataContentType(), b.Bytes()
}

// oneByte reads one byte at a time, as a slow client would send.
type oneByte struct{ r io.Reader }

func (o oneByte) Read(p []byte) (int, error) {
	if len(p) > 1 {
		p = p[:1]
	}
	return o.r.Read(p)
}

func TestUpload(t *testing.T) {
	mp := [][2]string{{"messaging_product", "whatsapp"}}
	tests := []struct {
		name     string
		fields   [][2]string
		fileType string
		size     int
		trailing [][2]string
		max      int64
		want     error
		kind     media.Kind
	}{
		{name: "image within 5 MiB", fields: append(mp, [2]string{"type", "image/jpeg"}), fileType: "image/jpeg", size: 100 << 10, max: 100 << 20, kind: media.KindImage},
		{name: "image over 5 MiB", fields: append(mp, [2]string{"type", "image/png"}), fileType: "image/png", size: 5<<20 + 1, max: 100 << 20, want: media.ErrTooLarge},
		{name: "image type from the part header alone", fields: mp, fileType: "image/png", size: 5<<20 + 1, max: 100 << 20, want: media.ErrTooLarge},
		{name: "type after the file still limits it", fields: mp, fileType: "application/octet-stream", size: 600 << 10, trailing: [][2]string{{"type", "image/webp"}}, max: 100 << 20, want: media.ErrTooLarge},
		{name: "sticker at its limit", fields: append(mp, [2]string{"type", "image/webp"}), size: 500 << 10, max: 100 << 20, kind: media.KindSticker},
		{name: "video 16 MiB", fields: append(mp, [2]string{"type", "video/mp4"}), size: 16 << 20, max: 100 << 20, kind: media.KindVideo},
		{name: "document over max_media_bytes", fields: append(mp, [2]string{"type", "application/pdf"}), size: 2<<20 + 1, max: 2 << 20, want: media.ErrTooLarge},
		{name: "access_token field", fields: append(mp, [2]string{"access_token", "EAAGsecret"}), fileType: "image/png", size: 10, max: 100 << 20, want: media.ErrAccessToken},
		{name: "ACCESS_TOKEN after the file", fields: mp, fileType: "image/png", size: 10, trailing: [][2]string{{"ACCESS_TOKEN", "x"}}, max: 100 << 20, want: media.ErrAccessToken},
		{name: "huge field", fields: append(mp, [2]string{"caption", strings.Repeat("x", 5000)}), fileType: "image/png", size: 10, max: 100 << 20, want: media.ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var file []byte
			if tc.size > 0 {
				file = bytes.Repeat([]byte{0xab}, tc.size)
			}
			ct, body := form(t, tc.fields, tc.fileType, file, tc.trailing...)
			for _, declared := range []int64{int64(len(body)), -1} {
				u, err := media.NewUpload(bytes.NewReader(body), ct, declared, tc.max)
				if err != nil {
					if tc.want == nil || !errors.Is(err, tc.want) {
						t.Fatalf("NewUpload: %v, want %v", err, tc.want)
					}
					continue
				}
				var out bytes.Buffer
				_, err = io.Copy(&out, u)
				_ = u.Close()
				if tc.want != nil {
					if !errors.Is(err, tc.want) {
						t.Fatalf("declared %d: err %v, want %v", declared, err, tc.want)
					}
					if out.Len() >= len(body) {
						t.Fatalf("declared %d: a refused body passed whole (%d bytes)", declared, out.Len())
					}
					continue
				}
				if err != nil {
					t.Fatalf("declared %d: %v", declared, err)
				}
				if !bytes.Equal(out.Bytes(), body) {
					t.Fatalf("declared %d: the body changed on its way through", declared)
				}
				if u.Kind() != tc.kind {
					t.Errorf("kind %q, want %q", u.Kind(), tc.kind)
				}
			}
		})
	}
}

func TestUploadRefusesBeforeReading(t *testing.T) {
	if _, err := media.NewUpload(strings.NewReader("x"), "application/json", 1, 10); !errors.Is(err, media.ErrNotMultipart) {
		t.Errorf("json body: %v", err)
	}
	if _, err := media.NewUpload(strings.NewReader("x"), "multipart/form-data", 1, 10); !errors.Is(err, media.ErrNotMultipart) {
		t.Errorf("no boundary: %v", err)
	}
	if _, err := media.NewUpload(strings.NewReader("x"), "multipart/form-data; boundary=b", 200<<20, 100<<20); !errors.Is(err, media.ErrTooLarge) {
		t.Errorf("declared over the limit: %v", err)
	}
}

func TestUploadSlowAndTruncated(t *testing.T) {
	ct, body := form(t, [][2]string{{"messaging_product", "whatsapp"}, {"type", "image/png"}}, "image/png", bytes.Repeat([]byte{1}, 3000))
	u, err := media.NewUpload(oneByte{bytes.NewReader(body)}, ct, int64(len(body)), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(u)
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("byte by byte: %v, %d of %d bytes", err, len(got), len(body))
	}
	// A body that ends before its Content-Length, or before its closing boundary.
	for _, declared := range []int64{int64(len(body)), -1} {
		u, err := media.NewUpload(bytes.NewReader(body[:len(body)-10]), ct, declared, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadAll(u); !errors.Is(err, media.ErrMalformed) {
			t.Errorf("declared %d: truncated body: %v", declared, err)
		}
		_ = u.Close()
	}
	// Abandoned halfway: Close ends the check.
	u, _ = media.NewUpload(bytes.NewReader(body), ct, int64(len(body)), 1<<20)
	_, _ = u.Read(make([]byte, 100))
	_ = u.Close()
	_ = u.Close()
}

func TestKindOf(t *testing.T) {
	for in, want := range map[string]media.Kind{
		"image/jpeg": media.KindImage, "IMAGE/PNG; x=y": media.KindImage, "image/webp": media.KindSticker,
		"audio/ogg; codecs=opus": media.KindAudio, "video/3gpp": media.KindVideo, "application/pdf": media.KindDocument,
		"text/plain": media.KindDocument, "": media.KindDocument,
	} {
		if got := media.KindOf(in); got != want {
			t.Errorf("KindOf(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzUpload: any body either passes through unchanged, or is refused with one of the
// upload's errors and never passes whole; the check never hangs or panics.
func FuzzUpload(f *testing.F) {
	ct, body := form(f, [][2]string{{"messaging_product", "whatsapp"}, {"type", "image/png"}}, "image/png", []byte("PNGDATA"))
	f.Add(body, true)
	f.Add([]byte("--b\r\nContent-Disposition: form-data; name=\"access_token\"\r\n\r\nx\r\n--b--\r\n"), false)
	f.Add([]byte("--b\r\n\r\n--b--"), false)
	boundary := strings.TrimPrefix(ct, "multipart/form-data; boundary=")
	f.Fuzz(func(t *testing.T, data []byte, ownBoundary bool) {
		typ := "multipart/form-data; boundary=b"
		if ownBoundary {
			typ = "multipart/form-data; boundary=" + boundary
		}
		for _, declared := range []int64{int64(len(data)), -1} {
			u, err := media.NewUpload(bytes.NewReader(data), typ, declared, 1<<10)
			if err != nil {
				t.Fatal(err)
			}
			out, err := io.ReadAll(u)
			_ = u.Close()
			if err == nil {
				if !bytes.Equal(out, data) {
					t.Fatalf("accepted body changed")
				}
				continue
			}
			if !errors.Is(err, media.ErrMalformed) && !errors.Is(err, media.ErrTooLarge) && !errors.Is(err, media.ErrAccessToken) {
				t.Fatalf("unexpected error %v", err)
			}
			if len(data) > 0 && bytes.Equal(out, data) {
				t.Fatalf("refused body (%v) passed whole", err)
			}
		}
	})
}
