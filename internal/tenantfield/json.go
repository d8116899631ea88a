package tenantfield

import (
	"unicode/utf16"
	"unicode/utf8"
)

// JSON checks the top-level fields of a JSON object body: a tenant field must be a
// string equal to the tenant (ErrMismatch otherwise) and may appear once (ErrDuplicate).
// Keys are compared after unescaping ("tenant\u0049d" is tenantId). A body that is not
// an object has no top-level fields and passes. Nested values are skipped, not checked:
// call jsonguard.Check first for strict syntax and a depth bound; on its own JSON stops
// with ErrSyntax where the top level is malformed, and reads each byte at most once.
func (n Names) JSON(body []byte, tenant string) error {
	i := skipSpace(body, 0)
	if i == len(body) || body[i] != '{' {
		return nil
	}
	i = skipSpace(body, i+1)
	if i < len(body) && body[i] == '}' {
		return nil
	}
	var buf [maxName]byte
	found := false
	for {
		if i == len(body) || body[i] != '"' {
			return ErrSyntax
		}
		key, truncated, next, err := readString(body, i, buf[:0])
		if err != nil {
			return err
		}
		i = skipSpace(body, next)
		if i == len(body) || body[i] != ':' {
			return ErrSyntax
		}
		i = skipSpace(body, i+1)
		if i == len(body) {
			return ErrSyntax
		}
		if n.match(key, truncated) {
			if found {
				return ErrDuplicate
			}
			found = true
			if body[i] != '"' {
				return ErrMismatch
			}
			v, vtrunc, next, err := readString(body, i, buf[:0])
			if err != nil {
				return err
			}
			if vtrunc || string(v) != tenant {
				return ErrMismatch
			}
			i = next
		} else if i, err = skipValue(body, i); err != nil {
			return err
		}
		i = skipSpace(body, i)
		if i == len(body) {
			return ErrSyntax
		}
		switch body[i] {
		case ',':
			i = skipSpace(body, i+1)
		case '}':
			return nil
		default:
			return ErrSyntax
		}
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipValue returns the index after the value starting at b[i]: a string, an array or
// object (skipped by counting brackets outside strings), or a scalar.
func skipValue(b []byte, i int) (int, error) {
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				next, err := skipString(b, i)
				if err != nil {
					return 0, err
				}
				i = next
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1, nil
				}
			}
			i++
		}
		return 0, ErrSyntax
	}
	start := i
	for i < len(b) {
		switch b[i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			if i == start {
				return 0, ErrSyntax
			}
			return i, nil
		}
		i++
	}
	return i, nil
}

// skipString returns the index after the string whose quote is b[i].
func skipString(b []byte, i int) (int, error) {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1, nil
		}
	}
	return 0, ErrSyntax
}

// readString unescapes the string whose quote is b[i] into dst, up to cap(dst) bytes,
// as encoding/json does (a lone surrogate becomes U+FFFD). It returns the text, whether
// it was cut short, and the index after the closing quote.
func readString(b []byte, i int, dst []byte) ([]byte, bool, int, error) {
	truncated := false
	put := func(p ...byte) {
		if len(dst)+len(p) > cap(dst) {
			truncated = true
			return
		}
		dst = append(dst, p...)
	}
	for i++; i < len(b); i++ {
		c := b[i]
		switch {
		case c == '"':
			return dst, truncated, i + 1, nil
		case c < 0x20:
			return nil, false, 0, ErrSyntax
		case c != '\\':
			put(c)
			continue
		}
		i++
		if i == len(b) {
			return nil, false, 0, ErrSyntax
		}
		switch b[i] {
		case '"', '\\', '/':
			put(b[i])
		case 'b':
			put('\b')
		case 'f':
			put('\f')
		case 'n':
			put('\n')
		case 'r':
			put('\r')
		case 't':
			put('\t')
		case 'u':
			r, ok := hex4(b, i+1)
			if !ok {
				return nil, false, 0, ErrSyntax
			}
			i += 4
			if utf16.IsSurrogate(r) {
				r2, ok := rune(0), false
				if i+2 < len(b) && b[i+1] == '\\' && b[i+2] == 'u' {
					r2, ok = hex4(b, i+3)
				}
				if dec := utf16.DecodeRune(r, r2); ok && dec != utf8.RuneError {
					r = dec
					i += 6
				} else {
					r = utf8.RuneError
				}
			}
			var enc [utf8.UTFMax]byte
			put(enc[:utf8.EncodeRune(enc[:], r)]...)
		default:
			return nil, false, 0, ErrSyntax
		}
	}
	return nil, false, 0, ErrSyntax
}

func hex4(b []byte, i int) (rune, bool) {
	if i+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[i : i+4] {
		if !isHex(c) {
			return 0, false
		}
		r = r<<4 | rune(unhex(c))
	}
	return r, true
}
