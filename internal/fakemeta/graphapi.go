package fakemeta

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"io"
	"mime"
	"mime/multipart"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// The Cloud API calls beyond sends and Embedded Signup that the Graph passthrough makes:
// media (upload, metadata, download, delete), message templates (list with paging,
// create, delete), the business profile and a number's own fields. Each checks the
// bearer token and appsecret_proof, and is recorded (Calls).

// GraphCall is one call the fake saw on these routes.
type GraphCall struct {
	Method string `json:"method"`
	Path   string `json:"path"`
	Token  string `json:"token"` // the bearer token
	// AppSecretProof is the call's appsecret_proof; ProofValid whether it is right for
	// the token and the fake's app secret.
	AppSecretProof string `json:"appsecret_proof,omitempty"`
	ProofValid     bool   `json:"proof_valid"`
	Status         int    `json:"status"`
}

// Media is a media object at the fake.
type Media struct {
	ID            string
	PhoneNumberID string
	MimeType      string
	SHA256        string
	Size          int64
	path          string // the bytes, in a file of the fake's media directory
}

// Template is a message template at the fake.
type Template struct {
	ID         string          `json:"id"`
	Name       string          `json:"name"`
	Language   string          `json:"language"`
	Category   string          `json:"category"`
	Status     string          `json:"status"`
	Components json.RawMessage `json:"components,omitempty"`
}

// graphSide is the fake's state for these calls.
type graphSide struct {
	mu        sync.Mutex
	dir       string // media bytes; made at first upload
	media     map[string]*Media
	templates map[string][]Template // WABA → templates, oldest first
	profiles  map[string]map[string]any
	calls     []GraphCall
	seq       int64
}

func newGraphSide() *graphSide {
	return &graphSide{media: map[string]*Media{}, templates: map[string][]Template{}, profiles: map[string]map[string]any{},
		seq: time.Now().UnixNano() % 1e9}
}

// nextID is a numeric id, as Meta's media and template ids are.
func (g *graphSide) nextID() string {
	g.seq++
	return "77" + strconv.FormatInt(1e12+g.seq, 10)
}

// Calls lists the media, template, profile and number calls the fake saw, oldest first.
func (s *Server) Calls() []GraphCall {
	s.graph.mu.Lock()
	defer s.graph.mu.Unlock()
	return slices.Clone(s.graph.calls)
}

// SetWABANumbers makes the WABA have these phone numbers (and replaces what it had): a
// token set with SetToken for one of them is accepted for the WABA's own calls too, and
// their status webhooks name the WABA (SetWABA).
func (s *Server) SetWABANumbers(wabaID string, phones ...Phone) {
	s.meta.mu.Lock()
	s.meta.wabas[wabaID] = slices.Clone(phones)
	s.meta.mu.Unlock()
	for _, p := range phones {
		s.SetWABA(p.ID, wabaID)
	}
}

// AddMedia stores content as media of phoneNumberID, as if a customer had sent it to the
// number, and returns its id.
func (s *Server) AddMedia(phoneNumberID, mimeType string, content []byte) (string, error) {
	return s.storeMedia(phoneNumberID, mimeType, bytes.NewReader(content))
}

// MediaOf returns the media with that id, if the fake has it.
func (s *Server) MediaOf(id string) (Media, bool) {
	s.graph.mu.Lock()
	defer s.graph.mu.Unlock()
	m, ok := s.graph.media[id]
	if !ok {
		return Media{}, false
	}
	return *m, true
}

// Templates lists the WABA's templates.
func (s *Server) Templates(wabaID string) []Template {
	s.graph.mu.Lock()
	defer s.graph.mu.Unlock()
	return slices.Clone(s.graph.templates[wabaID])
}

func (s *Server) storeMedia(phone, mimeType string, r io.Reader) (string, error) {
	g := s.graph
	g.mu.Lock()
	if g.dir == "" {
		d, err := os.MkdirTemp("", "fakemeta-media-")
		if err != nil {
			g.mu.Unlock()
			return "", err
		}
		g.dir = d
	}
	id := g.nextID()
	dir := g.dir
	g.mu.Unlock()

	path := filepath.Join(dir, id)
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
		return "", err
	}
	g.mu.Lock()
	g.media[id] = &Media{ID: id, PhoneNumberID: phone, MimeType: mimeType, SHA256: hex.EncodeToString(h.Sum(nil)), Size: n, path: path}
	g.mu.Unlock()
	return id, nil
}

// closeGraph removes the media files.
func (s *Server) closeGraph() {
	s.graph.mu.Lock()
	dir := s.graph.dir
	s.graph.dir = ""
	s.graph.mu.Unlock()
	if dir != "" {
		_ = os.RemoveAll(dir)
	}
}

// StepGraph names the calls of this file for FailStep and SlowStep; StepGraph+":"+path
// (like "graph:/v22.0/102290129340398/message_templates") names one path's.
const StepGraph = "graph"

// graphCall starts the record of a call, to be finished with done once answered; ok is
// false when an injected fault answered it already.
func (s *Server) graphCall(ctx *fasthttp.RequestCtx) (token string, done func(), ok bool) {
	token, done, c := s.graphCallRecord(ctx)
	if spec, failed := s.takeFault(StepGraph, c.Path); failed {
		writeError(ctx, spec, "")
		return token, done, false
	}
	return token, done, true
}

// graphCallRecord starts the record of a call.
func (s *Server) graphCallRecord(ctx *fasthttp.RequestCtx) (token string, done func(), c *GraphCall) {
	c = &GraphCall{Method: string(ctx.Method()), Path: string(ctx.Path()), Token: bearerOf(ctx)}
	if p := ctx.QueryArgs().Peek("appsecret_proof"); len(p) > 0 {
		c.AppSecretProof = string(p)
		c.ProofValid = s.opts.AppSecret != "" && validProof(s.opts.AppSecret, c.Token, p)
	}
	done = func() {
		c.Status = ctx.Response.StatusCode()
		s.graph.mu.Lock()
		s.graph.calls = append(s.graph.calls, *c)
		s.graph.mu.Unlock()
	}
	return c.Token, done, c
}

var errTokenInvalid = ErrorSpec{HTTPStatus: fasthttp.StatusUnauthorized, Code: CodeAccessToken, Subcode: 463,
	Title: "Error validating access token: Session has expired or the token is invalid."}

// objectMissing is Graph's answer for an object that does not exist or the token
// cannot see.
func objectMissing(ctx *fasthttp.RequestCtx, id string) {
	writeError(ctx, oauthError(CodeInvalidParameter, 33, "Unsupported "+strings.ToLower(string(ctx.Method()))+
		" request. Object with ID '"+id+"' does not exist, cannot be loaded due to missing permissions, or does not support this operation."), "")
}

// numberToken reports whether token may act for the phone number: the one SetToken
// gave it, a business token issued for its WABA, or (AcceptAnyToken) any token for a
// number without one.
func (s *Server) numberToken(phone, token string) bool {
	if token == "" {
		return false
	}
	s.mu.RLock()
	want, known := s.tokens[phone]
	s.mu.RUnlock()
	switch {
	case known && subtle.ConstantTimeCompare([]byte(want), []byte(token)) == 1:
		return true
	case s.grantsNumber(token, phone):
		return true
	}
	return !known && s.opts.AcceptAnyToken
}

// wabaToken reports whether token may act for the WABA: a business token issued for it,
// a token SetToken gave one of its numbers, or (AcceptAnyToken) any token.
func (s *Server) wabaToken(waba, token string) bool {
	if token == "" {
		return false
	}
	s.meta.mu.Lock()
	it := s.meta.issued[token]
	phones := slices.Clone(s.meta.wabas[waba])
	s.meta.mu.Unlock()
	if it != nil && it.grant.WABAID == waba && (it.expiresAt.IsZero() || s.now().Before(it.expiresAt)) {
		return true
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, p := range phones {
		if want, ok := s.tokens[p.ID]; ok && subtle.ConstantTimeCompare([]byte(want), []byte(token)) == 1 {
			return true
		}
	}
	return s.opts.AcceptAnyToken
}

// authorize checks the call's token with ok and its appsecret_proof, answering the
// error when either fails.
func (s *Server) authorize(ctx *fasthttp.RequestCtx, token string, ok bool) bool {
	if !ok {
		writeError(ctx, errTokenInvalid, "")
		return false
	}
	if spec, bad := s.proofError(ctx, token); bad {
		writeError(ctx, spec, "")
		return false
	}
	return true
}

// handleMediaUpload is POST /{version}/{phone_number_id}/media: multipart/form-data with
// messaging_product, type and file, the file streamed to disk.
func (s *Server) handleMediaUpload(ctx *fasthttp.RequestCtx) {
	token, done, ok := s.graphCall(ctx)
	defer done()
	if !ok {
		return
	}
	phone, _ := ctx.UserValue("phone_number_id").(string)
	if !s.authorize(ctx, token, s.numberToken(phone, token)) {
		return
	}
	_, params, err := mime.ParseMediaType(string(ctx.Request.Header.ContentType()))
	if err != nil || params["boundary"] == "" {
		writeError(ctx, oauthError(CodeInvalidParameter, 0, "(#100) The parameter file is required."), "")
		return
	}
	var body io.Reader = ctx.RequestBodyStream()
	if body == nil {
		body = bytes.NewReader(ctx.PostBody())
	}
	mr := multipart.NewReader(body, params["boundary"])
	var product, typ, id string
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			writeError(ctx, oauthError(CodeInvalidParameter, 0, "(#100) Invalid multipart body: "+err.Error()), "")
			return
		}
		switch p.FormName() {
		case "messaging_product":
			b, _ := io.ReadAll(io.LimitReader(p, 64))
			product = string(b)
		case "type":
			b, _ := io.ReadAll(io.LimitReader(p, 256))
			typ = string(b)
		case "file":
			mt := typ
			if mt == "" {
				mt = p.Header.Get("Content-Type")
			}
			if id, err = s.storeMedia(phone, mt, p); err != nil {
				writeError(ctx, ErrorSpec{HTTPStatus: fasthttp.StatusBadRequest, Code: 131053, Title: "(#131053) Media upload error"}, err.Error())
				return
			}
		default:
			_, _ = io.Copy(io.Discard, p)
		}
	}
	switch {
	case product != "whatsapp":
		writeError(ctx, oauthError(CodeInvalidParameter, 0, "(#100) The parameter messaging_product is required."), "")
	case id == "":
		writeError(ctx, oauthError(CodeInvalidParameter, 0, "(#100) The parameter file is required."), "")
	default:
		if typ != "" {
			s.graph.mu.Lock()
			s.graph.media[id].MimeType = typ
			s.graph.mu.Unlock()
		}
		writeJSON(ctx, fasthttp.StatusOK, map[string]string{"id": id})
	}
}

// handleObject is GET or DELETE /{version}/{id}: a media id (metadata, delete) or a
// phone number id (its fields, GET).
func (s *Server) handleObject(ctx *fasthttp.RequestCtx) {
	token, done, ok := s.graphCall(ctx)
	defer done()
	if !ok {
		return
	}
	id, _ := ctx.UserValue("id").(string)
	if m, ok := s.MediaOf(id); ok {
		if !s.authorize(ctx, token, s.numberToken(m.PhoneNumberID, token)) {
			return
		}
		if pn := ctx.QueryArgs().Peek("phone_number_id"); len(pn) > 0 && string(pn) != m.PhoneNumberID {
			objectMissing(ctx, id)
			return
		}
		if ctx.IsDelete() {
			s.graph.mu.Lock()
			delete(s.graph.media, id)
			s.graph.mu.Unlock()
			_ = os.Remove(m.path)
			writeJSON(ctx, fasthttp.StatusOK, map[string]bool{"success": true})
			return
		}
		u := "http://" + string(ctx.Host()) + "/whatsapp_business/attachments/?mid=" + id + "&ext=" +
			strconv.FormatInt(time.Now().Unix(), 10) + "&hash=" + m.SHA256[:16]
		writeJSON(ctx, fasthttp.StatusOK, map[string]any{
			"messaging_product": "whatsapp", "url": u, "mime_type": m.MimeType, "sha256": m.SHA256,
			"file_size": m.Size, "id": id,
		})
		return
	}
	phone, ok := s.phone(id)
	if !ok || !ctx.IsGet() {
		objectMissing(ctx, id)
		return
	}
	if !s.authorize(ctx, token, s.numberToken(id, token)) {
		return
	}
	q, lvl := phone.QualityRating, phone.ThroughputLevel
	if q == "" {
		q = "GREEN"
	}
	if lvl == "" {
		lvl = "STANDARD"
	}
	all := map[string]any{
		"id": id, "display_phone_number": phone.DisplayPhoneNumber, "verified_name": phone.VerifiedName,
		"quality_rating": q, "throughput": map[string]string{"level": lvl}, "name_status": "APPROVED",
		"code_verification_status": "VERIFIED", "platform_type": "CLOUD_API", "messaging_limit_tier": "TIER_1K",
	}
	out := all
	if f := ctx.QueryArgs().Peek("fields"); len(f) > 0 {
		out = map[string]any{"id": id}
		for _, name := range strings.Split(string(f), ",") {
			if v, ok := all[strings.TrimSpace(name)]; ok {
				out[strings.TrimSpace(name)] = v
			}
		}
	}
	writeJSON(ctx, fasthttp.StatusOK, out)
}

// phone finds a phone number the fake knows: in a WABA, or given a token by SetToken.
func (s *Server) phone(id string) (Phone, bool) {
	s.meta.mu.Lock()
	for _, phones := range s.meta.wabas {
		for _, p := range phones {
			if p.ID == id {
				s.meta.mu.Unlock()
				return p, true
			}
		}
	}
	s.meta.mu.Unlock()
	s.mu.RLock()
	_, ok := s.tokens[id]
	s.mu.RUnlock()
	if ok || s.opts.AcceptAnyToken {
		return Phone{ID: id}, true
	}
	return Phone{}, false
}

// handleDownload is GET /whatsapp_business/attachments/?mid=: the media's bytes, for the
// bearer token of its number (no appsecret_proof: the URL is Meta's CDN, not Graph).
func (s *Server) handleDownload(ctx *fasthttp.RequestCtx) {
	token, done, ok := s.graphCall(ctx)
	defer done()
	if !ok {
		return
	}
	m, ok := s.MediaOf(string(ctx.QueryArgs().Peek("mid")))
	if !ok {
		ctx.SetStatusCode(fasthttp.StatusNotFound)
		return
	}
	if !s.numberToken(m.PhoneNumberID, token) {
		ctx.SetStatusCode(fasthttp.StatusUnauthorized)
		return
	}
	f, err := os.Open(m.path)
	if err != nil {
		ctx.SetStatusCode(fasthttp.StatusNotFound)
		return
	}
	ctx.SetContentType(m.MimeType)
	ctx.SetBodyStream(f, int(m.Size)) // fasthttp closes f when it is sent
}

// handleTemplates is GET, POST and DELETE /{version}/{waba_id}/message_templates.
func (s *Server) handleTemplates(ctx *fasthttp.RequestCtx) {
	token, done, ok := s.graphCall(ctx)
	defer done()
	if !ok {
		return
	}
	waba, _ := ctx.UserValue("waba_id").(string)
	if !s.authorize(ctx, token, s.wabaToken(waba, token)) {
		return
	}
	g := s.graph
	switch {
	case ctx.IsGet():
		limit, err := strconv.Atoi(string(ctx.QueryArgs().Peek("limit")))
		if err != nil || limit <= 0 || limit > 100 {
			limit = 25
		}
		start := 0
		if after := ctx.QueryArgs().Peek("after"); len(after) > 0 {
			if start, err = strconv.Atoi(string(after)); err != nil || start < 0 {
				writeError(ctx, oauthError(CodeInvalidParameter, 0, "(#100) Invalid cursor"), "")
				return
			}
		}
		g.mu.Lock()
		all := g.templates[waba]
		start = min(start, len(all))
		page := slices.Clone(all[start:min(start+limit, len(all))])
		more := start+limit < len(all)
		g.mu.Unlock()
		if page == nil {
			page = []Template{}
		}
		ans := map[string]any{"data": page}
		if len(page) > 0 {
			paging := map[string]any{"cursors": map[string]string{
				"before": strconv.Itoa(start), "after": strconv.Itoa(start + len(page)),
			}}
			if more {
				// As at Meta, the next page's URL carries the token that asked.
				paging["next"] = "http://" + string(ctx.Host()) + string(ctx.Path()) + "?access_token=" + token +
					"&limit=" + strconv.Itoa(limit) + "&after=" + strconv.Itoa(start+len(page))
			}
			if start > 0 {
				paging["previous"] = "http://" + string(ctx.Host()) + string(ctx.Path()) + "?access_token=" + token +
					"&limit=" + strconv.Itoa(limit) + "&before=" + strconv.Itoa(start)
			}
			ans["paging"] = paging
		}
		writeJSON(ctx, fasthttp.StatusOK, ans)
	case ctx.IsPost():
		var t Template
		if err := json.Unmarshal(ctx.PostBody(), &t); err != nil || t.Name == "" || t.Language == "" || t.Category == "" {
			writeError(ctx, oauthError(CodeInvalidParameter, 0, "(#100) name, language and category are required"), "")
			return
		}
		g.mu.Lock()
		for _, o := range g.templates[waba] {
			if o.Name == t.Name && o.Language == t.Language {
				g.mu.Unlock()
				writeError(ctx, ErrorSpec{HTTPStatus: fasthttp.StatusBadRequest, Code: CodeInvalidParameter, Subcode: 2388023,
					Title: "Message template language is being deleted or already exists"}, "")
				return
			}
		}
		t.ID, t.Status = g.nextID(), "PENDING"
		g.templates[waba] = append(g.templates[waba], t)
		g.mu.Unlock()
		writeJSON(ctx, fasthttp.StatusOK, map[string]string{"id": t.ID, "status": t.Status, "category": t.Category})
	case ctx.IsDelete():
		name := string(ctx.QueryArgs().Peek("name"))
		hsm := string(ctx.QueryArgs().Peek("hsm_id"))
		g.mu.Lock()
		before := len(g.templates[waba])
		g.templates[waba] = slices.DeleteFunc(g.templates[waba], func(t Template) bool {
			return t.Name == name && (hsm == "" || t.ID == hsm)
		})
		deleted := before - len(g.templates[waba])
		g.mu.Unlock()
		if name == "" || deleted == 0 {
			writeError(ctx, ErrorSpec{HTTPStatus: fasthttp.StatusBadRequest, Code: CodeInvalidParameter, Subcode: 2593002,
				Title: "Message template not found"}, "")
			return
		}
		writeJSON(ctx, fasthttp.StatusOK, map[string]bool{"success": true})
	default:
		objectMissing(ctx, waba)
	}
}

// profileFields are the business profile's fields a POST may set.
var profileFields = []string{"about", "address", "description", "email", "profile_picture_url", "websites", "vertical"}

// handleProfile is GET and POST /{version}/{phone_number_id}/whatsapp_business_profile.
func (s *Server) handleProfile(ctx *fasthttp.RequestCtx) {
	token, done, ok := s.graphCall(ctx)
	defer done()
	if !ok {
		return
	}
	phone, _ := ctx.UserValue("phone_number_id").(string)
	if !s.authorize(ctx, token, s.numberToken(phone, token)) {
		return
	}
	g := s.graph
	if ctx.IsPost() {
		var in map[string]any
		if err := json.Unmarshal(ctx.PostBody(), &in); err != nil || in["messaging_product"] != "whatsapp" {
			writeError(ctx, oauthError(CodeInvalidParameter, 0, "(#100) The parameter messaging_product is required."), "")
			return
		}
		g.mu.Lock()
		p := g.profiles[phone]
		if p == nil {
			p = map[string]any{}
			g.profiles[phone] = p
		}
		for _, f := range profileFields {
			if v, ok := in[f]; ok {
				p[f] = v
			}
		}
		g.mu.Unlock()
		writeJSON(ctx, fasthttp.StatusOK, map[string]bool{"success": true})
		return
	}
	g.mu.Lock()
	out := map[string]any{"messaging_product": "whatsapp"}
	for k, v := range g.profiles[phone] {
		out[k] = v
	}
	g.mu.Unlock()
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{"data": []any{out}})
}
