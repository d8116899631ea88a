package config

import (
	"log/slog"
	"net/url"
	"reflect"
	"strings"
)

// Redacted is the placeholder for a secret that is set.
const Redacted = "[redacted]"

// Redacted returns a copy safe to log: secret values become "[redacted]" (left empty
// when unset, so a log still shows whether one is configured), token keys keep only
// their key ids, and passwords in URLs are masked.
func (c Config) Redacted() Config {
	r := c
	r.Database.URL = redactURLString(c.Database.URL)
	r.JWT.Secret = redactString(c.JWT.Secret)
	r.Kafka.SASL.Password = redactString(c.Kafka.SASL.Password)
	r.Meta.AppSecret = redactString(c.Meta.AppSecret)
	r.Meta.VerifyToken = redactString(c.Meta.VerifyToken)
	if c.Meta.AppSecrets != nil {
		r.Meta.AppSecrets = make([]string, len(c.Meta.AppSecrets))
		for i, s := range c.Meta.AppSecrets {
			r.Meta.AppSecrets[i] = redactString(s)
		}
	}
	if c.Secrets.TokenKeys != nil {
		r.Secrets.TokenKeys = make([]string, len(c.Secrets.TokenKeys))
		for i, spec := range c.Secrets.TokenKeys {
			kid, _, ok := strings.Cut(spec, ":")
			if !ok || kid == "" || strings.ContainsAny(kid, " \t\r\n") {
				r.Secrets.TokenKeys[i] = Redacted
				continue
			}
			r.Secrets.TokenKeys[i] = kid + ":" + Redacted
		}
	}
	r.Graph.BaseURL = redactURLString(c.Graph.BaseURL)
	r.PublicBaseURL = redactURLString(c.PublicBaseURL)
	r.Frontend.RedirectURL = redactURLString(c.Frontend.RedirectURL)
	if c.Proxy.Upstreams != nil {
		r.Proxy.Upstreams = make([]string, len(c.Proxy.Upstreams))
		for i, u := range c.Proxy.Upstreams {
			r.Proxy.Upstreams[i] = redactURLString(u)
		}
	}
	r.RateLimit.RedisURL = redactURLString(c.RateLimit.RedisURL)
	r.Proxy.ClaimHeaders = append([]string(nil), c.Proxy.ClaimHeaders...)
	r.RateLimit.TenantOverrides = append([]string(nil), c.RateLimit.TenantOverrides...)
	r.Kafka.Brokers = append([]string(nil), c.Kafka.Brokers...)
	r.JWT.Algorithms = append([]string(nil), c.JWT.Algorithms...)
	r.JWT.PublicKeyFiles = append([]string(nil), c.JWT.PublicKeyFiles...)
	return r
}

func redactString(s string) string {
	if s == "" {
		return ""
	}
	return Redacted
}

// redactURLString masks a URL's password, and a password query parameter (pgx reads
// one). A value that does not parse as a URL is redacted whole: it could be anything.
func redactURLString(s string) string {
	if s == "" {
		return ""
	}
	u, err := url.Parse(s)
	if err != nil || u.Opaque != "" {
		return Redacted
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), "redacted")
	}
	if u.RawQuery != "" {
		q, err := url.ParseQuery(u.RawQuery)
		if err != nil {
			u.RawQuery = Redacted
		} else {
			for k := range q {
				if strings.EqualFold(k, "password") || strings.Contains(strings.ToLower(k), "secret") || strings.Contains(strings.ToLower(k), "token") {
					q[k] = []string{"redacted"}
				}
			}
			u.RawQuery = q.Encode()
		}
	}
	return u.String()
}

// LogValue logs the redacted configuration as one attribute per key, named by its
// YAML path.
func (c Config) LogValue() slog.Value {
	r := reflect.ValueOf(c.Redacted())
	t := keys()
	attrs := make([]slog.Attr, 0, len(t.list)+1)
	for _, k := range t.list {
		v := r.FieldByIndex(k.index)
		switch {
		case k.typ == durationType:
			attrs = append(attrs, slog.String(k.key, v.Interface().(interface{ String() string }).String()))
		case k.typ.Kind() == reflect.Slice:
			attrs = append(attrs, slog.String(k.key, strings.Join(v.Interface().([]string), ",")))
		default:
			attrs = append(attrs, slog.Any(k.key, v.Interface()))
		}
	}
	attrs = append(attrs, slog.Bool("dev_mode", c.DevMode))
	return slog.GroupValue(attrs...)
}
