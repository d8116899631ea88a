package gateway

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"

	"github.com/aerostic/aerogate/internal/account"
	"github.com/aerostic/aerogate/internal/auth"
	"github.com/aerostic/aerogate/internal/graph"
	"github.com/aerostic/aerogate/internal/jsonguard"
	"github.com/aerostic/aerogate/internal/media"
	"github.com/aerostic/aerogate/internal/ratelimit"
	"github.com/aerostic/aerogate/internal/tenantfield"
	"github.com/aerostic/aerogate/internal/whatsapp"
)

// The Graph API passthrough: a backend holding only a tenant JWT makes the Cloud API
// calls it needs besides sends, and aerogate makes them with the owning account's token
// and appsecret_proof. What passes is graphAllowList and GET /v1/media/{id}/content;
// everything else is refused in Meta's error shape.

// objectKind is what a Graph object id in a passthrough path is.
type objectKind uint8

const (
	objPhoneNumber objectKind = iota + 1 // one of the tenant's phone number ids
	objWABA                              // one of the tenant's WABA ids
	objMedia                             // a media id the tenant uploaded or received
)

func (k objectKind) String() string {
	switch k {
	case objPhoneNumber:
		return "phone number"
	case objWABA:
		return "WABA"
	case objMedia:
		return "media"
	}
	return "object"
}

// allowedCall is one entry of the allow-list: an edge ("" for the object itself) of a
// kind of object, and the methods that pass.
type allowedCall struct {
	kind    objectKind
	edge    string
	methods []string
	// op labels the call in aerogate_graph_duration_seconds and the request metrics.
	op string
}

// graphAllowList is everything the passthrough forwards: the one place it is defined
// (the README lists it). The send path, POST /{version}/{phone_number_id}/messages,
// goes through Kafka and is not here.
var graphAllowList = []allowedCall{
	{objPhoneNumber, "", []string{fasthttp.MethodGet}, "phone_number"},
	{objPhoneNumber, "media", []string{fasthttp.MethodPost}, "media_upload"},
	{objPhoneNumber, "whatsapp_business_profile", []string{fasthttp.MethodGet, fasthttp.MethodPost}, "business_profile"},
	{objWABA, "message_templates", []string{fasthttp.MethodGet, fasthttp.MethodPost, fasthttp.MethodDelete}, "message_templates"},
	{objWABA, "phone_numbers", []string{fasthttp.MethodGet}, "phone_numbers"},
	{objMedia, "", []string{fasthttp.MethodGet, fasthttp.MethodDelete}, "media"},
}

// allowedFor returns the allow-list entries of edge that admit method, in the order the
// object id is tried; edgeKnown is false when no entry names the edge at all.
func allowedFor(edge, method string) (calls []allowedCall, edgeKnown bool) {
	for _, a := range graphAllowList {
		if a.edge != edge {
			continue
		}
		edgeKnown = true
		for _, m := range a.methods {
			if m == method {
				calls = append(calls, a)
			}
		}
	}
	return calls, edgeKnown
}

var (
	errEdgeNotAllowed        = &apiError{http.StatusBadRequest, "edge_not_allowed", "aerogate does not pass this Graph API call through; allowed: a phone number (GET), its media (POST) and whatsapp_business_profile (GET, POST); a WABA's message_templates (GET, POST, DELETE) and phone_numbers (GET); a media id (GET, DELETE)"}
	errGraphMethod           = &apiError{http.StatusBadRequest, "method_not_allowed", "this method is not passed through on this Graph API object or edge"}
	errObjectNotFound        = &apiError{http.StatusBadRequest, "object_not_found", "no object with that id for this tenant, or it does not support this operation"}
	errMediaNotFound         = &apiError{http.StatusNotFound, "media_not_found", "no media with that id for this tenant"}
	errClientAccessToken     = &apiError{http.StatusBadRequest, "access_token_not_allowed", "do not send an access_token: aerogate calls Meta with the account's own token; authenticate with the tenant JWT in Authorization"}
	errMediaNotMultipart     = &apiError{http.StatusBadRequest, "invalid_media_upload", "a media upload is multipart/form-data with the fields messaging_product, type and file"}
	errMediaMalformed        = &apiError{http.StatusBadRequest, "invalid_media_upload", "the multipart media upload is malformed (or has more than 16 parts, or a form field over 4 KiB)"}
	errMediaTooLarge         = &apiError{http.StatusRequestEntityTooLarge, "media_too_large", "the media file is over WhatsApp's limit for its type (image 5 MiB, audio and video 16 MiB, sticker 500 KiB, document 100 MiB) or over graph.max_media_bytes"}
	errMediaDownloadTooLarge = &apiError{http.StatusBadGateway, "media_too_large", "the media is over graph.max_media_bytes"}
	errMediaURLUntrusted     = &apiError{http.StatusBadGateway, "media_url_untrusted", "Meta's media URL is on a host not in graph.media_hosts; the token was not sent there"}
	errGraphTimeout          = &apiError{http.StatusGatewayTimeout, "graph_timeout", "the Graph API did not answer in time"}
	errGraphFailed           = &apiError{http.StatusBadGateway, "graph_unavailable", "the Graph API could not be reached or its answer could not be read"}
	errPassthroughOff        = &apiError{http.StatusServiceUnavailable, "passthrough_not_configured", "the Graph API passthrough is not configured"}
)

// graphPath is a passthrough path: /{version}/{object_id}[/{edge}].
type graphPath struct {
	version, object, edge string
}

// maxEdgeLen bounds an edge of a passthrough path.
const maxEdgeLen = 64

// parseGraphPath reads /{version}/{object_id} or /{version}/{object_id}/{edge}: the
// version vMAJOR.MINOR, the id Meta's numeric id (1 to 32 digits), the edge lower-case
// letters, digits and '_' (1 to 64). Anything else is not a passthrough path. It is one
// pass over path.
func parseGraphPath(path []byte) (graphPath, bool) {
	rest, ok := bytes.CutPrefix(path, []byte("/"))
	if !ok {
		return graphPath{}, false
	}
	version, rest, ok := bytes.Cut(rest, []byte("/"))
	if !ok || whatsapp.CheckGraphVersion(version) != nil {
		return graphPath{}, false
	}
	id, edge, hasEdge := bytes.Cut(rest, []byte("/"))
	if !whatsapp.ValidObjectID(id) {
		return graphPath{}, false
	}
	if hasEdge && !validEdge(edge) {
		return graphPath{}, false
	}
	return graphPath{version: string(version), object: string(id), edge: string(edge)}, true
}

func validEdge(b []byte) bool {
	if len(b) == 0 || len(b) > maxEdgeLen {
		return false
	}
	for _, c := range b {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return true
}

// isMediaUpload reports whether a request line is a media upload, whose body the
// gateway streams instead of buffering: POST /{version}/{digits}/media.
func isMediaUpload(method, path []byte) bool {
	if string(method) != fasthttp.MethodPost {
		return false
	}
	p, ok := parseGraphPath(path)
	return ok && p.edge == "media"
}

// isMediaContent reports whether path is GET /v1/media/{id}/content.
func isMediaContent(path []byte) bool {
	rest, ok := bytes.CutPrefix(path, []byte("/v1/media/"))
	if !ok {
		return false
	}
	id, tail, ok := bytes.Cut(rest, []byte("/"))
	return ok && whatsapp.ValidObjectID(id) && string(tail) == "content"
}

// graphRoute serves a passthrough path no route matched: it reports false, answering
// nothing, when path is not one.
func (s *Server) graphRoute(ctx *fasthttp.RequestCtx) bool {
	p, ok := parseGraphPath(ctx.Path())
	if !ok {
		return false
	}
	m := s.passthroughObject
	if p.edge != "" {
		m = s.passthroughEdge
	}
	ctx.SetUserValue(routeKey{}, m)
	s.authed(s.limited(ratelimit.API, func(ctx *fasthttp.RequestCtx, claims auth.Claims) { s.passthrough(ctx, claims, p) }))(ctx)
	return true
}

// passthrough forwards one allow-listed call with the owning account's token.
func (s *Server) passthrough(ctx *fasthttp.RequestCtx, claims auth.Claims, p graphPath) {
	if s.opts.Graph == nil {
		writeError(ctx, errPassthroughOff)
		return
	}
	method := string(ctx.Method())
	calls, edgeKnown := allowedFor(p.edge, method)
	switch {
	case !edgeKnown:
		writeError(ctx, errEdgeNotAllowed)
		return
	case len(calls) == 0:
		writeError(ctx, errGraphMethod)
		return
	}
	if clientToken(ctx) {
		writeError(ctx, errClientAccessToken)
		return
	}
	upload := isMediaUpload(ctx.Method(), ctx.Path())
	var body []byte
	if !upload {
		body = ctx.Request.Body()
		if len(body) > s.opts.MaxBodyBytes {
			writeError(ctx, errBodyTooLarge)
			return
		}
		if apiErr := s.checkPassthroughBody(ctx, body, claims.TenantID); apiErr != nil {
			writeError(ctx, apiErr)
			return
		}
	}

	lookup, cancel := context.WithTimeout(context.Background(), s.opts.PublishTimeout)
	call, acct, err := s.owner(lookup, claims.TenantID, p.object, calls)
	cancel()
	if err != nil {
		s.writeOwnerError(ctx, err)
		return
	}

	fc := &graph.Call{
		Method:      method,
		Path:        p.object,
		Query:       forwardQuery(ctx.QueryArgs(), s.tenantNames),
		Token:       acct.AccessToken.Reveal(),
		ContentType: string(ctx.Request.Header.ContentType()),
		Op:          call.op,
	}
	if p.edge != "" {
		fc.Path += "/" + p.edge
	}
	var up *media.Upload
	if upload {
		up, err = media.NewUpload(ctx.RequestBodyStream(), fc.ContentType,
			int64(ctx.Request.Header.ContentLength()), int64(s.opts.Graph.MaxMediaBytes))
		if err != nil {
			s.refuseUpload(ctx, err)
			return
		}
		defer up.Close()
		fc.BodyStream, fc.BodySize, fc.Media = up, ctx.Request.Header.ContentLength(), true
		if fc.BodySize < 0 {
			fc.BodySize = -1
		}
	} else if len(body) > 0 {
		fc.Body = body
	}

	ans, err := s.opts.Graph.Client.Forward(context.Background(), fc)
	if up != nil {
		// The upload is done with: its check's goroutine ends here.
		_ = up.Close()
	}
	if err != nil {
		if up != nil {
			if uerr := up.Err(); uerr != nil {
				s.refuseUpload(ctx, uerr)
				return
			}
		}
		s.writeGraphError(ctx, call.op, err)
		return
	}
	ok := ans.Status >= 200 && ans.Status < 300
	out := ans.Body
	if ok {
		switch {
		case call.kind == objMedia && method == fasthttp.MethodGet:
			out = s.rewriteMediaURL(out, p.object)
		case method == fasthttp.MethodGet:
			out = s.rewritePaging(out)
		}
	}
	s.writeAnswer(ctx, ans, out)

	if !ok {
		return
	}
	rec, rcancel := context.WithTimeout(context.Background(), s.opts.PublishTimeout)
	defer rcancel()
	switch {
	case upload:
		id := mediaIDOf(ans.Body)
		if id == "" {
			return
		}
		if err := s.opts.Graph.Media.Record(rec, claims.TenantID, id, acct.PhoneNumberID, media.SourceUploaded); err != nil {
			s.log.Error("recording an uploaded media id; GET and DELETE of it will answer not found",
				"request_id", string(ctx.Response.Header.Peek(headerRequestID)), "media_id", id, "error", err.Error())
		}
	case call.kind == objMedia && method == fasthttp.MethodDelete:
		if err := s.opts.Graph.Media.Forget(rec, claims.TenantID, p.object); err != nil {
			s.log.Warn("forgetting a deleted media id", "media_id", p.object, "error", err.Error())
		}
	}
}

// owner finds which allowed call the object id is, and the tenant's account to make it
// with: another tenant's id is not found, as an id that does not exist.
func (s *Server) owner(ctx context.Context, tenant, id string, calls []allowedCall) (allowedCall, *account.Account, error) {
	for _, c := range calls {
		pnid := id
		switch c.kind {
		case objWABA:
			n, err := s.opts.Graph.WABAs.WABANumber(ctx, tenant, id)
			if errors.Is(err, account.ErrNotFound) {
				continue
			}
			if err != nil {
				return c, nil, err
			}
			pnid = n
		case objMedia:
			n, err := s.opts.Graph.Media.Owner(ctx, tenant, id)
			if errors.Is(err, media.ErrNotFound) {
				continue
			}
			if err != nil {
				return c, nil, err
			}
			pnid = n
		}
		acct, err := s.opts.Resolver.Resolve(ctx, tenant, pnid)
		if errors.Is(err, account.ErrNotFound) {
			continue
		}
		if err != nil {
			return c, nil, err
		}
		if err := acct.Usable(s.now()); err != nil {
			return c, nil, err
		}
		return c, acct, nil
	}
	return allowedCall{}, nil, account.ErrNotFound
}

func (s *Server) writeOwnerError(ctx *fasthttp.RequestCtx, err error) {
	if errors.Is(err, account.ErrNotFound) {
		writeError(ctx, errObjectNotFound)
		return
	}
	s.writeAccountError(ctx, err, false)
}

// clientToken reports whether the request carries an access token of its own: an
// access_token query parameter (any case), or a header named like one. The body's are
// checked with the body.
func clientToken(ctx *fasthttp.RequestCtx) bool {
	for k := range ctx.QueryArgs().All() {
		if isTokenName(k) {
			return true
		}
	}
	for k := range ctx.Request.Header.All() {
		if isTokenName(k) {
			return true
		}
	}
	return false
}

// isTokenName matches access_token, Access-Token, X-Access-Token, X-FB-Access-Token and
// the like, in any case.
func isTokenName(k []byte) bool {
	const want = "access_token"
	for i := 0; i+len(want) <= len(k); i++ {
		j := 0
		for ; j < len(want); j++ {
			c := k[i+j] | 0x20 // lower case letters; '-' (0x2d) and '_' (0x5f→0x7f) handled below
			w := want[j]
			if w == '_' {
				if k[i+j] != '_' && k[i+j] != '-' {
					break
				}
				continue
			}
			if c != w {
				break
			}
		}
		if j == len(want) {
			return true
		}
	}
	return false
}

// checkPassthroughBody refuses a body carrying an access_token (a form field, or a
// top-level JSON field) and a JSON body that is not well-formed.
func (s *Server) checkPassthroughBody(ctx *fasthttp.RequestCtx, body []byte, tenant string) *apiError {
	if len(body) == 0 {
		return nil
	}
	ct := ctx.Request.Header.ContentType()
	switch {
	case bytes.HasPrefix(ct, []byte("application/x-www-form-urlencoded")):
		var args fasthttp.Args
		args.ParseBytes(body)
		for k := range args.All() {
			if isTokenName(k) {
				return errClientAccessToken
			}
		}
		if s.tenantNames.Form(body, tenant) != nil {
			return errTenantMismatch
		}
	default:
		// Graph reads a JSON body whatever its Content-Type says; so does this check.
		if apiErr := checkJSON(body, s.opts.MaxJSONDepth); apiErr != nil {
			return apiErr
		}
		var p fastjson.Parser
		v, err := p.ParseBytes(body)
		if err != nil {
			return errInvalidJSON
		}
		o, err := v.Object()
		if err != nil {
			return nil // an array or a scalar: no field can carry a token
		}
		var bad bool
		o.Visit(func(k []byte, _ *fastjson.Value) {
			bad = bad || isTokenName(k)
		})
		if bad {
			return errClientAccessToken
		}
		if s.tenantNames.JSON(body, tenant) != nil {
			return errTenantMismatch
		}
	}
	return nil
}

// forwardQuery is the client's query string for Meta: without appsecret_proof (aerogate
// adds its own) and the tenant parameters (checked already, and not Meta's).
func forwardQuery(q *fasthttp.Args, tenant tenantfield.Names) []byte {
	if q.Len() == 0 {
		return nil
	}
	var out fasthttp.Args
	for k, v := range q.All() {
		if string(k) == "appsecret_proof" || tenant.Match(k) {
			continue
		}
		out.AddBytesKV(k, v)
	}
	return out.AppendBytes(nil)
}

// refuseUpload answers a refused upload once the client's body is read out (bounded, as
// refuseBody does), so the client reads the answer rather than a reset connection.
func (s *Server) refuseUpload(ctx *fasthttp.RequestCtx, err error) {
	s.drainRequest(ctx)
	writeError(ctx, uploadError(err))
}

func uploadError(err error) *apiError {
	switch {
	case errors.Is(err, media.ErrNotMultipart):
		return errMediaNotMultipart
	case errors.Is(err, media.ErrAccessToken):
		return errClientAccessToken
	case errors.Is(err, media.ErrTooLarge):
		return errMediaTooLarge
	}
	return errMediaMalformed
}

// writeGraphError answers a call that got no answer from Meta: 504 on a timeout.
func (s *Server) writeGraphError(ctx *fasthttp.RequestCtx, op string, err error) {
	rid := string(ctx.Response.Header.Peek(headerRequestID))
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		s.log.Warn("graph passthrough timed out", "request_id", rid, "op", op)
		writeError(ctx, errGraphTimeout)
	case errors.Is(err, graph.ErrMediaHost):
		s.log.Error("media url on an untrusted host; not fetched", "request_id", rid)
		writeError(ctx, errMediaURLUntrusted)
	case errors.Is(err, graph.ErrMediaTooLarge):
		writeError(ctx, errMediaDownloadTooLarge)
	default:
		// graph's errors never hold the token.
		s.log.Warn("graph passthrough failed", "request_id", rid, "op", op, "error", err.Error())
		ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, "1")
		writeError(ctx, errGraphFailed)
	}
}

// Retry-After for Meta's rate limits, when Meta's answer names none: an app or WABA
// call-count limit (4, 80007) lasts minutes, the throughput limit (130429) a second.
const (
	retryAfterCallLimit  = "60"
	retryAfterThroughput = "1"
)

// writeAnswer passes Meta's answer on: its status, content type, the headers graph
// keeps, and body (without any token); a rate limit gets Retry-After.
func (s *Server) writeAnswer(ctx *fasthttp.RequestCtx, ans *graph.Answer, body []byte) {
	ctx.SetStatusCode(ans.Status)
	if ans.ContentType != "" {
		ctx.Response.Header.SetContentType(ans.ContentType)
	}
	hasRetry := false
	for _, h := range ans.Header {
		ctx.Response.Header.Set(h[0], h[1])
		hasRetry = hasRetry || h[0] == fasthttp.HeaderRetryAfter
	}
	if ans.Status >= 400 && !hasRetry {
		switch graph.ParseError(ans.Status, body).Code {
		case graph.CodeAPITooManyCalls, graph.CodeRateLimit:
			ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, retryAfterCallLimit)
		case graph.CodeThroughput:
			ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, retryAfterThroughput)
		}
	}
	ctx.SetBody(body)
}

// mediaIDOf reads the id of Meta's answer to a media upload.
func mediaIDOf(body []byte) string {
	if jsonguard.Check(body, jsonguard.DefaultMaxDepth) != nil {
		return ""
	}
	var p fastjson.Parser
	v, err := p.ParseBytes(body)
	if err != nil {
		return ""
	}
	id := v.GetStringBytes("id")
	if !whatsapp.ValidObjectID(id) {
		return ""
	}
	return string(id)
}

// rewriteMediaURL replaces the url of Meta's media answer, which only works with the
// token, with the gateway's GET /v1/media/{id}/content, which works with the tenant JWT.
func (s *Server) rewriteMediaURL(body []byte, id string) []byte {
	v, ok := parseAnswer(body)
	if !ok || v.Get("url") == nil {
		return body
	}
	var a fastjson.Arena
	v.Set("url", a.NewString(s.opts.Graph.PublicBaseURL+"/v1/media/"+id+"/content"))
	return v.MarshalTo(nil)
}

// rewritePaging makes paging.next and paging.previous, which Meta writes with the
// access token in their query, point at the gateway without it.
func (s *Server) rewritePaging(body []byte) []byte {
	if !bytes.Contains(body, []byte(`"paging"`)) {
		return body
	}
	v, ok := parseAnswer(body)
	if !ok {
		return body
	}
	paging := v.Get("paging")
	if paging == nil || paging.Type() != fastjson.TypeObject {
		return body
	}
	var a fastjson.Arena
	changed := false
	for _, k := range []string{"next", "previous"} {
		u := paging.GetStringBytes(k)
		if u == nil {
			continue
		}
		paging.Set(k, a.NewString(s.gatewayURL(u)))
		changed = true
	}
	if !changed {
		return body
	}
	return v.MarshalTo(nil)
}

// gatewayURL turns a Graph URL into the same call through the gateway: its path and
// query on public_base_url, without access_token and appsecret_proof.
func (s *Server) gatewayURL(raw []byte) string {
	var u fasthttp.URI
	if err := u.Parse(nil, raw); err != nil {
		return ""
	}
	var q fasthttp.Args
	for k, v := range u.QueryArgs().All() {
		if isTokenName(k) || string(k) == "appsecret_proof" {
			continue
		}
		q.AddBytesKV(k, v)
	}
	out := s.opts.Graph.PublicBaseURL + string(u.PathOriginal())
	if q.Len() > 0 {
		out += "?" + q.String()
	}
	return out
}

// parseAnswer parses a JSON object answer of Meta's, through the structure guard.
func parseAnswer(body []byte) (*fastjson.Value, bool) {
	if jsonguard.Check(body, jsonguard.DefaultMaxDepth) != nil {
		return nil, false
	}
	v, err := fastjson.ParseBytes(body)
	if err != nil || v.Type() != fastjson.TypeObject {
		return nil, false
	}
	return v, true
}

// mediaContent is GET /v1/media/{media_id}/content: the media's bytes, streamed from
// Meta's media URL with the owning account's token; the URL never leaves aerogate.
func (s *Server) mediaContent(ctx *fasthttp.RequestCtx, claims auth.Claims) {
	if s.opts.Graph == nil {
		writeError(ctx, errPassthroughOff)
		return
	}
	if clientToken(ctx) {
		writeError(ctx, errClientAccessToken)
		return
	}
	id, _ := ctx.UserValue("media_id").(string)
	if !whatsapp.ValidObjectID([]byte(id)) {
		writeError(ctx, errMediaNotFound)
		return
	}
	lookup, cancel := context.WithTimeout(context.Background(), s.opts.PublishTimeout)
	_, acct, err := s.owner(lookup, claims.TenantID, id, []allowedCall{{kind: objMedia, op: "media"}})
	cancel()
	if errors.Is(err, account.ErrNotFound) {
		writeError(ctx, errMediaNotFound)
		return
	}
	if err != nil {
		s.writeOwnerError(ctx, err)
		return
	}
	token := acct.AccessToken.Reveal()
	ans, err := s.opts.Graph.Client.Forward(context.Background(), &graph.Call{
		Method: fasthttp.MethodGet, Path: id, Query: []byte("phone_number_id=" + acct.PhoneNumberID),
		Token: token, Op: "media",
	})
	if err != nil {
		s.writeGraphError(ctx, "media", err)
		return
	}
	if ans.Status < 200 || ans.Status >= 300 {
		s.writeAnswer(ctx, ans, ans.Body)
		return
	}
	info, err := graph.ParseMediaInfo(ans.Body)
	if err != nil {
		s.writeGraphError(ctx, "media", err)
		return
	}
	dctx, dcancel := context.WithTimeout(context.Background(), s.opts.Graph.MediaTimeout)
	defer dcancel()
	dl, err := s.opts.Graph.Client.Download(dctx, info.URL, token, int64(s.opts.Graph.MaxMediaBytes))
	if err != nil {
		var ge *graph.Error
		if errors.As(err, &ge) && !ge.Temporary {
			writeError(ctx, errGraphFailed)
			s.log.Warn("media download refused by Meta", "request_id", string(ctx.Response.Header.Peek(headerRequestID)),
				"status", ge.HTTPStatus, "code", ge.Code)
			return
		}
		s.writeGraphError(ctx, "media_download", err)
		return
	}
	ct := dl.ContentType
	if ct == "" {
		ct = info.MimeType
	}
	if ct != "" {
		ctx.SetContentType(ct)
	}
	if info.FileSize > 0 && dl.ContentLength < 0 {
		ctx.Response.Header.Set("X-Media-File-Size", strconv.FormatInt(info.FileSize, 10))
	}
	ctx.SetStatusCode(http.StatusOK)
	// fasthttp writes the body after the handler returns, and closes the stream (the
	// connection to Meta goes back to its pool) when it is done.
	ctx.SetBodyStream(dl.Body, dl.ContentLength)
}

// mediaTimeouts gives media uploads and downloads graph.media_timeout to read the
// request and write the answer, instead of http.read_timeout and http.write_timeout.
func (s *Server) mediaTimeouts(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
	if s.opts.Graph == nil {
		return fasthttp.RequestConfig{}
	}
	path := h.RequestURI()
	if i := bytes.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	if isMediaUpload(h.Method(), path) || (string(h.Method()) == fasthttp.MethodGet && isMediaContent(path)) {
		t := s.opts.Graph.MediaTimeout + 10*time.Second
		return fasthttp.RequestConfig{ReadTimeout: t, WriteTimeout: t}
	}
	return fasthttp.RequestConfig{}
}
