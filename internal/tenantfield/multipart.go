package tenantfield

import (
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/textproto"
	"strings"
)

// Multipart reads a multipart/form-data body from r to its closing boundary and checks
// its parts' names: a part named as a tenant field (files included) must hold exactly
// the tenant, raw, without a Content-Transfer-Encoding (ErrMismatch otherwise), and may
// appear once (ErrDuplicate). Other parts are read and discarded, so r may be a stream
// of any length: memory stays bounded by mime/multipart's limits on part headers. A
// part whose Content-Disposition does not parse, or a body that ends before its closing
// boundary, is ErrSyntax: a backend's parser might read a name out of it that this one
// cannot.
func (n Names) Multipart(r io.Reader, boundary, tenant string) error {
	mr := multipart.NewReader(r, boundary)
	found := false
	for {
		p, err := mr.NextRawPart()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return ErrSyntax
		}
		name, err := partName(p.Header)
		if err != nil {
			return err
		}
		if !n.match([]byte(name), false) {
			// Read to the part's end: a body cut off before its closing boundary
			// shows only here, as io.ErrUnexpectedEOF.
			if _, err := io.Copy(io.Discard, p); err != nil {
				return ErrSyntax
			}
			continue
		}
		if found {
			return ErrDuplicate
		}
		found = true
		if cte := strings.ToLower(p.Header.Get("Content-Transfer-Encoding")); cte != "" && cte != "7bit" && cte != "8bit" && cte != "binary" {
			return ErrMismatch
		}
		var buf [maxName + 1]byte
		got, err := io.ReadFull(p, buf[:min(len(tenant)+1, len(buf))])
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
			return ErrSyntax
		}
		if string(buf[:got]) != tenant {
			return ErrMismatch
		}
		if _, err := io.Copy(io.Discard, p); err != nil {
			return ErrSyntax
		}
	}
}

// partName is the name parameter of a part's Content-Disposition ("" when it has none).
func partName(h textproto.MIMEHeader) (string, error) {
	cd := h.Values("Content-Disposition")
	switch len(cd) {
	case 0:
		return "", nil
	case 1:
	default:
		return "", ErrSyntax
	}
	// Any disposition type counts: a lenient parser may take "attachment; name=…" too.
	_, params, err := mime.ParseMediaType(cd[0])
	if err != nil {
		return "", ErrSyntax
	}
	return params["name"], nil
}

// Boundary returns the boundary of a multipart/form-data Content-Type, and whether the
// Content-Type is multipart/form-data at all.
func Boundary(contentType string) (string, bool, error) {
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return "", false, ErrSyntax
	}
	if mt != "multipart/form-data" {
		return "", false, nil
	}
	b := params["boundary"]
	if b == "" {
		return "", true, ErrSyntax
	}
	return b, true, nil
}
