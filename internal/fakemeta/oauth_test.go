package fakemeta

import (
	"net/http"
	"testing"
)

func TestRoutesCoexist(t *testing.T) {
	s := start(t, Options{AppID: "1", AppSecret: "s"})
	for _, p := range []string{"/v22.0/oauth/access_token", "/v22.0/debug_token", "/v22.0/123/phone_numbers", "/v22.0/dialog/oauth"} {
		resp, err := http.Get(s.URL() + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		t.Log(p, resp.StatusCode)
	}
}
