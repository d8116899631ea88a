// Package tenantfield finds a tenant id that a request repeats in its query string or
// body — a top-level JSON field, an application/x-www-form-urlencoded pair or a
// multipart/form-data field — and checks it against the tenant of the verified token.
//
// It is strict on purpose, because the backend behind the gateway parses the same bytes
// with its own rules: names match case-insensitively (Go's encoding/json and many
// binders ignore case) and also with a bracket or dot suffix (qs, PHP and multer read
// tenantId[]=x or tenantId[a]=x as a tenantId field), JSON keys and form names are
// compared after unescaping, and a form is split on ';' as well as '&'. Every scan is
// one linear pass; none recurses.
package tenantfield

import (
	"errors"
	"unicode"
	"unicode/utf8"
)

var (
	// ErrMismatch: a tenant field holds something other than the token's tenant.
	ErrMismatch = errors.New("tenant field differs from the token's tenant")
	// ErrDuplicate: a body names a tenant field more than once.
	ErrDuplicate = errors.New("tenant field given more than once")
	// ErrSyntax: the body could not be read far enough to know.
	ErrSyntax = errors.New("malformed body")
)

// maxName bounds how much of a field name is unescaped for matching: enough for any
// configured name plus its suffix; a longer name still matches by its prefix.
const maxName = 512

// Names is the set of field names that carry the tenant. The zero value matches nothing.
type Names struct {
	names []string
}

// NewNames returns the set of the non-empty names given (duplicates folded).
func NewNames(names ...string) Names {
	var n Names
	for _, name := range names {
		if name == "" || n.has(name) {
			continue
		}
		n.names = append(n.names, name)
	}
	return n
}

func (n Names) has(name string) bool {
	for _, have := range n.names {
		if equalFold([]byte(name), have) {
			return true
		}
	}
	return false
}

// List returns the names.
func (n Names) List() []string { return append([]string(nil), n.names...) }

// Match reports whether a field named name carries the tenant: it is one of the names,
// compared with Unicode case folding, alone or followed by '[' or '.' and anything.
// name is the unescaped name; truncated says that it is only the name's first bytes.
func (n Names) Match(name []byte) bool { return n.match(name, false) }

func (n Names) match(name []byte, truncated bool) bool {
	for _, want := range n.names {
		rest, ok := foldPrefix(name, want)
		if !ok {
			continue
		}
		if len(rest) == 0 && !truncated {
			return true
		}
		if len(rest) > 0 && (rest[0] == '[' || rest[0] == '.') {
			return true
		}
	}
	return false
}

// foldPrefix reports whether s starts with prefix under simple Unicode case folding,
// returning what follows.
func foldPrefix(s []byte, prefix string) ([]byte, bool) {
	for prefix != "" {
		if len(s) == 0 {
			return nil, false
		}
		r1, n1 := utf8.DecodeRune(s)
		r2, n2 := utf8.DecodeRuneInString(prefix)
		s, prefix = s[n1:], prefix[n2:]
		if !equalRuneFold(r1, r2) {
			return nil, false
		}
	}
	return s, true
}

func equalFold(s []byte, t string) bool {
	rest, ok := foldPrefix(s, t)
	return ok && len(rest) == 0
}

// equalRuneFold is strings.EqualFold for one rune: the orbit of unicode.SimpleFold is at
// most four runes long.
func equalRuneFold(a, b rune) bool {
	if a == b {
		return true
	}
	if a < utf8.RuneSelf && b < utf8.RuneSelf {
		return lower(a) == lower(b)
	}
	for f := unicode.SimpleFold(a); f != a; f = unicode.SimpleFold(f) {
		if f == b {
			return true
		}
	}
	return false
}

func lower(r rune) rune {
	if 'A' <= r && r <= 'Z' {
		return r + 'a' - 'A'
	}
	return r
}
