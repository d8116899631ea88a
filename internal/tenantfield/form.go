package tenantfield

// Query checks a raw query string: every value of every tenant parameter must be the
// tenant. A parameter repeated with the tenant each time passes (frameworks differ on
// which copy they read, and each is the tenant); one that differs is ErrMismatch, and
// so is a tenant parameter without '=' (an empty value).
func (n Names) Query(raw []byte, tenant string) error {
	_, err := n.pairs(raw, tenant)
	return err
}

// Form checks an application/x-www-form-urlencoded body: a tenant field that differs
// is ErrMismatch, and a tenant field given twice is ErrDuplicate even when both copies
// are the tenant.
func (n Names) Form(body []byte, tenant string) error {
	found, err := n.pairs(body, tenant)
	if err != nil {
		return err
	}
	if found > 1 {
		return ErrDuplicate
	}
	return nil
}

// pairs walks name=value pairs separated by '&' or ';', unescaping names and values
// ('+' is a space, %XX a byte, a malformed % is kept as it is), and returns how many
// name the tenant. It stops at the first value that is not the tenant.
func (n Names) pairs(b []byte, tenant string) (int, error) {
	found := 0
	var buf [maxName]byte
	for len(b) > 0 {
		end := 0
		for end < len(b) && b[end] != '&' && b[end] != ';' {
			end++
		}
		pair := b[:end]
		if end < len(b) {
			b = b[end+1:]
		} else {
			b = nil
		}
		if len(pair) == 0 {
			continue
		}
		eq := 0
		for eq < len(pair) && pair[eq] != '=' {
			eq++
		}
		name, truncated := unescapeForm(buf[:0], pair[:eq])
		if !n.match(name, truncated) {
			continue
		}
		found++
		var value []byte
		if eq < len(pair) {
			value = pair[eq+1:]
		}
		if !formValueIs(value, tenant) {
			return found, ErrMismatch
		}
	}
	return found, nil
}

// unescapeForm appends the unescaped s to dst, up to cap(dst) bytes; truncated says
// that s had more.
func unescapeForm(dst, s []byte) ([]byte, bool) {
	for i := 0; i < len(s); i++ {
		if len(dst) == cap(dst) {
			return dst, true
		}
		c := s[i]
		switch {
		case c == '+':
			c = ' '
		case c == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]):
			c = unhex(s[i+1])<<4 | unhex(s[i+2])
			i += 2
		}
		dst = append(dst, c)
	}
	return dst, false
}

// formValueIs reports whether the escaped form value s unescapes to want, without
// unescaping more of it than want is long.
func formValueIs(s []byte, want string) bool {
	j := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '+':
			c = ' '
		case c == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]):
			c = unhex(s[i+1])<<4 | unhex(s[i+2])
			i += 2
		}
		if j == len(want) || want[j] != c {
			return false
		}
		j++
	}
	return j == len(want)
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}
