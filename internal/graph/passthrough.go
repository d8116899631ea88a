package graph

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"

	"github.com/aerostic/aerogate/internal/jsonguard"
	"github.com/aerostic/aerogate/internal/metrics"
)

// Passthrough errors the caller answers with its own codes.
var (
	// ErrMediaHost: Meta's media URL points at a host that is neither the Graph base
	// URL's nor one of graph.media_hosts, so the token is not sent there.
	ErrMediaHost = errors.New("graph: media url on a host that is not trusted with tokens")
	// ErrMediaTooLarge: the media is over the size the caller allows.
	ErrMediaTooLarge = errors.New("graph: media over the size limit")
)

// maxAnswerBytes bounds a passthrough answer (a template list page, a media upload's
// id, a business profile): it is buffered to remove anything that carries a token.
const maxAnswerBytes = 4 << 20

// passedHeaders are Meta's answer headers a passthrough answer keeps: the usage and
// throttling headers and the trace ids a backend may log or act on. No other header
// (Location, Set-Cookie, WWW-Authenticate, ...) leaves aerogate.
var passedHeaders = []string{
	"Retry-After", "X-Business-Use-Case-Usage", "X-App-Usage", "X-FB-Trace-ID",
	"X-FB-Request-ID", "X-FB-Rev", "X-FB-Debug",
}

// Call is one passthrough request to the Graph API, made with an account's token.
type Call struct {
	Method string
	// Path is the object id and optional edge under the version, like
	// "106540352242922/media"; the caller checked it against its allow-list.
	Path string
	// Query is the client's query string, without access_token and appsecret_proof
	// (the client's are refused or dropped before; the proof is added here).
	Query       []byte
	Token       string
	ContentType string
	// Body is the request body; BodyStream, when set, is streamed instead, BodySize
	// bytes of it (-1: until EOF, sent chunked).
	Body       []byte
	BodyStream io.Reader
	BodySize   int
	// Media bounds the call by graph.media_timeout rather than graph.timeout.
	Media bool
	// Op labels the call's duration in aerogate_graph_duration_seconds.
	Op string
}

// Answer is Meta's answer to a passthrough call, with the token removed from it.
type Answer struct {
	Status      int
	ContentType string
	Header      [][2]string // of passedHeaders, as Meta sent them
	Body        []byte
}

// Forward makes the call with the token (and its appsecret_proof) and returns Meta's
// answer, whatever its status. Errors are *Error (Temporary: no answer from Meta; a
// timeout wraps context.DeadlineExceeded). The answer's body is bounded at 4 MiB.
func (c *Client) Forward(ctx context.Context, call *Call) (*Answer, error) {
	if !validToken(call.Token) {
		return nil, &Error{HTTPStatus: fasthttp.StatusUnauthorized, Code: CodeAccessToken, Title: "missing or malformed access token (not sent)"}
	}
	if err := ctx.Err(); err != nil {
		return nil, &Error{Temporary: true, Title: "not sent: " + err.Error(), cause: err}
	}
	timeout := c.timeout
	if call.Media {
		timeout = c.mediaTimeout
	}
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)

	b := make([]byte, 0, len(c.prefix)+len(call.Path)+len(call.Query)+96)
	b = append(b, c.prefix...)
	b = append(b, call.Path...)
	sep := byte('?')
	if len(call.Query) > 0 {
		b = append(b, '?')
		b = append(b, call.Query...)
		sep = '&'
	}
	b = c.app.appendProofQuery(b, sep, call.Token)
	req.URI().DisablePathNormalizing = true
	req.SetRequestURIBytes(b)
	req.Header.SetMethod(call.Method)
	req.Header.Set(fasthttp.HeaderAuthorization, "Bearer "+call.Token)
	if call.ContentType != "" {
		req.Header.SetContentType(call.ContentType)
	}
	switch {
	case call.BodyStream != nil:
		req.SetBodyStream(call.BodyStream, call.BodySize)
	case call.Body != nil:
		req.SetBodyRaw(call.Body)
	}

	op := call.Op
	if op == "" {
		op = "passthrough"
	}
	start := time.Now()
	err := c.pc.DoDeadline(req, resp, deadline)
	metrics.GraphDuration.WithLabelValues(op).Observe(time.Since(start).Seconds())
	if err != nil {
		if call.BodyStream != nil && !errors.Is(err, fasthttp.ErrTimeout) && !errors.Is(err, fasthttp.ErrBodyTooLarge) {
			// The body stream's own error (a refused upload) is what stopped the call.
			return nil, &Error{Temporary: true, Title: "request body: " + truncate(err.Error()), cause: err}
		}
		return nil, transportError(ctx, err)
	}
	a := &Answer{Status: resp.StatusCode(), ContentType: string(resp.Header.ContentType())}
	for _, h := range passedHeaders {
		if v := resp.Header.Peek(h); len(v) > 0 {
			a.Header = append(a.Header, [2]string{h, string(v)})
		}
	}
	a.Body = append([]byte(nil), redact(resp.Body(), call.Token)...)
	return a, nil
}

// Download is media bytes streaming from Meta.
type Download struct {
	ContentType   string
	ContentLength int // -1 when Meta did not say
	// Body streams the bytes, at most the limit given to Download (reading past it
	// fails with ErrMediaTooLarge). Close releases the connection.
	Body io.ReadCloser
}

// Download fetches media from Meta's media URL (what GET /{media_id} answers) with
// the token in the Authorization header, streaming: nothing of the body is held but a
// read buffer. The URL must be https on the Graph base URL's host or one of
// graph.media_hosts (http only on the base URL's own http host, as the fake's), else
// ErrMediaHost: a token is never sent anywhere else. A non-2xx answer is an *Error;
// redirects are not followed. The token never appears in an error.
func (c *Client) Download(ctx context.Context, rawURL, token string, maxBytes int64) (*Download, error) {
	if !validToken(token) {
		return nil, &Error{HTTPStatus: fasthttp.StatusUnauthorized, Code: CodeAccessToken, Title: "missing or malformed access token (not sent)"}
	}
	if !c.trustedMediaURL(rawURL) {
		return nil, ErrMediaHost
	}
	deadline := time.Now().Add(c.mediaTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	req.URI().DisablePathNormalizing = true
	req.SetRequestURI(rawURL)
	req.Header.SetMethod(fasthttp.MethodGet)
	req.Header.Set(fasthttp.HeaderAuthorization, "Bearer "+token)
	resp.StreamBody = true
	release := func() {
		_ = resp.CloseBodyStream()
		fasthttp.ReleaseRequest(req)
		fasthttp.ReleaseResponse(resp)
	}
	start := time.Now()
	err := c.dl.DoDeadline(req, resp, deadline)
	metrics.GraphDuration.WithLabelValues("media_download").Observe(time.Since(start).Seconds())
	if err != nil {
		release()
		return nil, transportError(ctx, err)
	}
	status := resp.StatusCode()
	if status < 200 || status >= 300 {
		body, _ := io.ReadAll(io.LimitReader(bodyOf(resp), maxResponseBytes))
		release()
		return nil, ParseError(status, redact(body, token))
	}
	cl := resp.Header.ContentLength()
	if cl > 0 && int64(cl) > maxBytes {
		release()
		return nil, ErrMediaTooLarge
	}
	if cl < 0 {
		cl = -1
	}
	return &Download{
		ContentType:   string(resp.Header.ContentType()),
		ContentLength: cl,
		Body:          &download{r: bodyOf(resp), left: maxBytes, release: release},
	}, nil
}

func bodyOf(resp *fasthttp.Response) io.Reader {
	if r := resp.BodyStream(); r != nil {
		return r
	}
	return bytes.NewReader(resp.Body())
}

// download is a Download's body: bounded, and releasing the response once closed.
type download struct {
	r       io.Reader
	left    int64
	release func()
	closed  bool
}

func (d *download) Read(p []byte) (int, error) {
	if d.closed {
		return 0, io.ErrClosedPipe
	}
	if d.left <= 0 {
		// One byte more tells a body at the limit from one over it.
		var one [1]byte
		if n, _ := d.r.Read(one[:]); n > 0 {
			return 0, ErrMediaTooLarge
		}
		return 0, io.EOF
	}
	if int64(len(p)) > d.left {
		p = p[:d.left]
	}
	n, err := d.r.Read(p)
	d.left -= int64(n)
	return n, err
}

func (d *download) Close() error {
	if !d.closed {
		d.closed = true
		d.release()
	}
	return nil
}

// trustedMediaURL reports whether the token may be sent to rawURL.
func (c *Client) trustedMediaURL(rawURL string) bool {
	u, err := url.Parse(rawURL)
	if err != nil || u.User != nil || u.Host == "" || u.Fragment != "" {
		return false
	}
	switch {
	case u.Scheme == c.baseScheme && strings.EqualFold(u.Host, c.baseHost):
		return true
	case u.Scheme != "https" || u.Port() != "":
		return false
	}
	host := u.Hostname()
	for _, h := range c.mediaHosts {
		if strings.EqualFold(h, host) {
			return true
		}
	}
	return false
}

// MediaInfo is what GET /{media_id} answers.
type MediaInfo struct {
	URL      string
	MimeType string
	FileSize int64
}

// ParseMediaInfo reads Meta's answer to GET /{media_id}.
func ParseMediaInfo(body []byte) (MediaInfo, error) {
	if jsonguard.Check(body, jsonguard.DefaultMaxDepth) != nil {
		return MediaInfo{}, fmt.Errorf("graph: media answer is not a JSON object")
	}
	p := parsers.Get()
	defer parsers.Put(p)
	v, err := p.ParseBytes(body)
	if err != nil || v.Type() != fastjson.TypeObject {
		return MediaInfo{}, fmt.Errorf("graph: media answer is not a JSON object")
	}
	mi := MediaInfo{URL: string(v.GetStringBytes("url")), MimeType: truncate(string(v.GetStringBytes("mime_type")))}
	if fs := v.Get("file_size"); fs != nil {
		if n, err := fs.Int64(); err == nil {
			mi.FileSize = n
		} else if s, err := fs.StringBytes(); err == nil {
			mi.FileSize, _ = strconv.ParseInt(string(s), 10, 64)
		}
	}
	if mi.URL == "" {
		return MediaInfo{}, fmt.Errorf("graph: media answer has no url")
	}
	return mi, nil
}
