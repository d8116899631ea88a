package gateway

import (
	"bytes"
	"strings"
	"testing"

	"github.com/aerostic/aerogate/internal/whatsapp"
)

func TestParseGraphPath(t *testing.T) {
	for _, tc := range []struct {
		path string
		want graphPath
		ok   bool
	}{
		{"/v22.0/106540352242922", graphPath{"v22.0", "106540352242922", ""}, true},
		{"/v22.0/106540352242922/media", graphPath{"v22.0", "106540352242922", "media"}, true},
		{"/v19.0/1/message_templates", graphPath{"v19.0", "1", "message_templates"}, true},
		{"/v1/messages", graphPath{}, false},
		{"/v22.0/me", graphPath{}, false},
		{"/v22.0/1/media/x", graphPath{}, false},
		{"/v22.0/1/Media", graphPath{}, false},
		{"/v22.0/1/", graphPath{}, false},
		{"/v22.0/" + strings.Repeat("1", 33), graphPath{}, false},
		{"v22.0/1", graphPath{}, false},
		{"/webhooks/meta", graphPath{}, false},
	} {
		got, ok := parseGraphPath([]byte(tc.path))
		if ok != tc.ok || got != tc.want {
			t.Errorf("parseGraphPath(%q) = %+v %v, want %+v %v", tc.path, got, ok, tc.want, tc.ok)
		}
	}
}

func TestIsTokenName(t *testing.T) {
	for name, want := range map[string]bool{
		"access_token": true, "ACCESS_TOKEN": true, "Access-Token": true, "X-Access-Token": true,
		"x-fb-access-token": true, "input_access_token": true, "access": false, "token": false,
		"accesstoken": false, "Authorization": false, "access_toke": false,
	} {
		if got := isTokenName([]byte(name)); got != want {
			t.Errorf("isTokenName(%q) = %v", name, got)
		}
	}
}

// FuzzGraphPath: what parseGraphPath accepts is exactly a version, a numeric id and an
// optional lower-case edge, put back together as the path; the media routes' matchers
// agree with it.
func FuzzGraphPath(f *testing.F) {
	for _, s := range []string{"/v22.0/106540352242922/media", "/v22.0/1", "/v1/media/5/content", "/v22.0//media", "/v99.99/12/a_b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		p, ok := parseGraphPath([]byte(path))
		if ok {
			rebuilt := "/" + p.version + "/" + p.object
			if p.edge != "" {
				rebuilt += "/" + p.edge
			}
			if rebuilt != path || whatsapp.CheckGraphVersion(p.version) != nil || !whatsapp.ValidObjectID([]byte(p.object)) {
				t.Fatalf("accepted %q as %+v", path, p)
			}
		}
		if isMediaUpload([]byte("POST"), []byte(path)) != (ok && p.edge == "media") {
			t.Fatalf("isMediaUpload disagrees on %q", path)
		}
		if isMediaContent([]byte(path)) && !strings.HasPrefix(path, "/v1/media/") {
			t.Fatalf("isMediaContent(%q)", path)
		}
	})
}

// FuzzTokenName: isTokenName finds "access" and "token" joined by '_' or '-' anywhere,
// in any case, and nothing else.
func FuzzTokenName(f *testing.F) {
	for _, s := range []string{"access_token", "X-Access-Token", "accesstoken", "ACCESS-TOKEN-2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		l := bytes.ToLower([]byte(name))
		want := bytes.Contains(l, []byte("access_token")) || bytes.Contains(l, []byte("access-token"))
		if got := isTokenName([]byte(name)); got != want {
			t.Fatalf("isTokenName(%q) = %v, want %v", name, got, want)
		}
	})
}
