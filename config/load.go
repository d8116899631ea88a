package config

import (
	"errors"
	"fmt"
	"math"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/providers/posflag"
	"github.com/knadh/koanf/v2"
	"github.com/spf13/pflag"
)

// Flags registers --config and one flag per non-secret key, named as its YAML path
// (--http.addr, --kafka.brokers). Secret keys get no flag: a flag shows in --help and,
// worse, in ps; they come from the file or the environment.
func Flags(fs *pflag.FlagSet) {
	fs.String("config", "", "YAML configuration file (or "+EnvConfigFile+")")
	def := reflect.ValueOf(Default())
	for _, k := range keys().list {
		if k.secret {
			continue
		}
		usage := usages[k.key] + " (" + k.env + ")"
		v := def.FieldByIndex(k.index)
		switch {
		case k.typ == durationType:
			fs.Duration(k.key, time.Duration(v.Int()), usage)
		case k.typ.Kind() == reflect.String:
			fs.String(k.key, v.String(), usage)
		case k.typ.Kind() == reflect.Int:
			fs.Int(k.key, int(v.Int()), usage)
		case k.typ.Kind() == reflect.Bool:
			fs.Bool(k.key, v.Bool(), usage)
		case k.typ.Kind() == reflect.Slice:
			fs.StringSlice(k.key, v.Interface().([]string), usage)
		}
	}
}

// Load builds the configuration: Default() < the YAML file named by --config or
// AEROGATE_CONFIG < AEROGATE_* environment variables < flags that were set. fs may be
// nil, and its flags must be parsed. Every problem is reported at once, naming the key
// and where the value came from, never a secret's value. Load does not call Validate:
// the caller does once it knows whether it runs in dev mode.
func Load(fs *pflag.FlagSet) (Config, error) {
	return load(fs, os.Environ())
}

func load(fs *pflag.FlagSet, environ []string) (Config, error) {
	cfg := Default()
	var errs []error

	path := ""
	if fs != nil {
		if f := fs.Lookup("config"); f != nil && f.Changed {
			path = f.Value.String()
			if path == "" {
				errs = append(errs, errors.New("--config: empty path"))
			}
		}
	}
	if path == "" {
		path = lookupEnv(environ, EnvConfigFile)
	}
	if path != "" {
		b, err := file.Provider(path).ReadBytes()
		if err != nil {
			return cfg, fmt.Errorf("reading config file: %w", err)
		}
		errs = append(errs, applyYAML(&cfg, b, "config file "+path)...)
	}

	ke := koanf.New(".")
	err := ke.Load(env.Provider(".", env.Opt{
		Prefix:      EnvPrefix,
		EnvironFunc: func() []string { return environ },
		TransformFunc: func(name, value string) (string, any) {
			// Unknown AEROGATE_* names are left alone: other tools share the prefix.
			// An empty value counts as unset.
			k, ok := keys().byEnv[name]
			if !ok || value == "" {
				return "", nil
			}
			return k.key, value
		},
	}), nil)
	if err != nil {
		return cfg, fmt.Errorf("reading environment: %w", err)
	}
	errs = append(errs, apply(&cfg, ke, func(k *keyInfo) string { return "environment " + k.env })...)

	if fs != nil {
		kf := koanf.New(".")
		err := kf.Load(posflag.ProviderWithFlag(fs, ".", nil, func(f *pflag.Flag) (string, any) {
			k, ok := keys().byKey[f.Name]
			if !ok || k.secret || !f.Changed {
				return "", nil
			}
			return f.Name, posflag.FlagVal(fs, f)
		}), nil)
		if err != nil {
			return cfg, fmt.Errorf("reading flags: %w", err)
		}
		errs = append(errs, apply(&cfg, kf, func(k *keyInfo) string { return "flag --" + k.key })...)
	}
	return cfg, errors.Join(errs...)
}

func lookupEnv(environ []string, name string) string {
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && k == name {
			return v
		}
	}
	return ""
}

// bytesProvider feeds YAML bytes to koanf; the file provider reads the real file.
type bytesProvider []byte

func (b bytesProvider) ReadBytes() ([]byte, error) { return b, nil }
func (b bytesProvider) Read() (map[string]any, error) {
	return nil, errors.New("bytes provider needs a parser")
}

// applyYAML overlays a YAML document on cfg. Unknown keys are errors: a typo would
// otherwise silently leave a default in force.
func applyYAML(cfg *Config, b []byte, source string) (errs []error) {
	defer func() {
		// A parser panic on a malformed file must not take the process down. The fuzz
		// target calls decodeYAML directly so such a panic is still found.
		if r := recover(); r != nil {
			errs = []error{fmt.Errorf("%s: invalid YAML", source)}
		}
	}()
	return decodeYAML(cfg, b, source)
}

func decodeYAML(cfg *Config, b []byte, source string) (errs []error) {
	k := koanf.New(".")
	if err := k.Load(bytesProvider(b), yaml.Parser()); err != nil {
		return []error{fmt.Errorf("%s: %s", source, yamlError(err))}
	}
	t := keys()
	for _, key := range k.Keys() {
		if _, ok := t.byKey[key]; ok {
			continue
		}
		if t.sections[key] {
			switch v := k.Get(key).(type) {
			case nil, map[string]any:
				// An empty section (`meta:` with every key commented out) is fine.
				if m, ok := v.(map[string]any); !ok || len(m) == 0 {
					continue
				}
			}
			errs = append(errs, fmt.Errorf("%s: %s: want a mapping of keys", source, key))
			continue
		}
		if underLeaf(t, key) {
			continue // a mapping where a value belongs: apply names the key's type
		}
		errs = append(errs, fmt.Errorf("%s: unknown key %q", source, key))
	}
	return append(errs, apply(cfg, k, func(*keyInfo) string { return source })...)
}

func underLeaf(t *keyTable, key string) bool {
	for i := range len(key) {
		if key[i] == '.' {
			if _, ok := t.byKey[key[:i]]; ok {
				return true
			}
		}
	}
	return false
}

// yamlQuoted matches the snippets of the document that YAML errors quote, which could
// be a secret on a malformed line.
var yamlQuoted = regexp.MustCompile("`[^`]*`")

func yamlError(err error) string {
	return "invalid YAML: " + yamlQuoted.ReplaceAllString(err.Error(), "`…`")
}

// apply sets every known key present in k, collecting one error per bad value.
func apply(cfg *Config, k *koanf.Koanf, source func(*keyInfo) string) []error {
	var errs []error
	rv := reflect.ValueOf(cfg).Elem()
	for i := range keys().list {
		ki := &keys().list[i]
		if !k.Exists(ki.key) {
			continue
		}
		raw := k.Get(ki.key)
		if raw == nil {
			continue // `key:` with no value keeps the default
		}
		if err := set(rv.FieldByIndex(ki.index), ki, raw); err != nil {
			errs = append(errs, fmt.Errorf("%s: %s: %w", source(ki), ki.key, err))
		}
	}
	return errs
}

// set converts raw (a YAML scalar or list, an environment string or a flag value)
// to the field's type. Its errors quote the value only when the key is not secret.
func set(f reflect.Value, ki *keyInfo, raw any) error {
	shown := func() string {
		if ki.secret {
			return ""
		}
		s := fmt.Sprint(raw)
		if len(s) > 64 {
			s = s[:64] + "…"
		}
		return fmt.Sprintf(", got %q", s)
	}
	switch {
	case ki.typ == durationType:
		d, ok := toDuration(raw)
		if !ok {
			return fmt.Errorf("want a duration like 5s or 250ms%s", shown())
		}
		f.SetInt(int64(d))
	case ki.typ.Kind() == reflect.String:
		s, ok := toString(raw)
		if !ok {
			return errors.New("want a string")
		}
		f.SetString(s)
	case ki.typ.Kind() == reflect.Int:
		n, ok := toInt(raw)
		if !ok {
			return fmt.Errorf("want an integer%s", shown())
		}
		f.SetInt(n)
	case ki.typ.Kind() == reflect.Bool:
		b, ok := toBool(raw)
		if !ok {
			return fmt.Errorf("want true or false%s", shown())
		}
		f.SetBool(b)
	case ki.typ.Kind() == reflect.Slice:
		l, ok := toList(raw)
		if !ok {
			return errors.New("want a list of strings (comma-separated in the environment)")
		}
		f.Set(reflect.ValueOf(l))
	}
	return nil
}

func toString(raw any) (string, bool) {
	switch v := raw.(type) {
	case string:
		return v, true
	case int:
		return strconv.Itoa(v), true
	case int64:
		return strconv.FormatInt(v, 10), true
	case uint64:
		return strconv.FormatUint(v, 10), true
	case float64:
		// An unquoted number in YAML, e.g. meta.app_id: 1234567890.
		return strconv.FormatFloat(v, 'f', -1, 64), true
	case bool:
		return strconv.FormatBool(v), true
	}
	return "", false
}

func toInt(raw any) (int64, bool) {
	switch v := raw.(type) {
	case int:
		return int64(v), true
	case int64:
		return v, true
	case uint64:
		if v > math.MaxInt64 {
			return 0, false
		}
		return int64(v), true
	case float64:
		if v != math.Trunc(v) || v < math.MinInt64 || v >= math.MaxInt64 {
			return 0, false
		}
		return int64(v), true
	case string:
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 0)
		return n, err == nil
	}
	return 0, false
}

func toDuration(raw any) (time.Duration, bool) {
	switch v := raw.(type) {
	case time.Duration:
		return v, true
	case string:
		d, err := time.ParseDuration(strings.TrimSpace(v))
		return d, err == nil
	case int:
		// A bare 0 is unambiguous; any other bare number lacks its unit.
		return 0, v == 0
	}
	return 0, false
}

func toBool(raw any) (bool, bool) {
	switch v := raw.(type) {
	case bool:
		return v, true
	case string:
		b, err := strconv.ParseBool(strings.TrimSpace(v))
		return b, err == nil
	}
	return false, false
}

// toList accepts a YAML list of scalars, a flag's []string, or a comma-separated
// string. Blank items are dropped.
func toList(raw any) ([]string, bool) {
	var items []string
	switch v := raw.(type) {
	case []string:
		items = v
	case string:
		items = strings.Split(v, ",")
	case []any:
		for _, e := range v {
			s, ok := toString(e)
			if !ok {
				return nil, false
			}
			items = append(items, s)
		}
	default:
		return nil, false
	}
	var out []string // nil when empty, like the defaults
	for _, s := range items {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out, true
}

// otherEnv are AEROGATE_* variables that are not configuration keys but are read
// elsewhere (the config file path, `accounts add`, the test suite).
var otherEnv = map[string]bool{
	EnvConfigFile:                true,
	"AEROGATE_ACCESS_TOKEN":      true,
	"AEROGATE_TEST_DATABASE_URL": true,
}

// UnknownEnv names the AEROGATE_* variables in environ that aerogate does not read, each
// with the closest variable it does read when one is near: a mistyped name would
// otherwise do nothing at all. Only names are returned, never values.
func UnknownEnv(environ []string) []string {
	var out []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, EnvPrefix) || otherEnv[name] {
			continue
		}
		if _, ok := keys().byEnv[name]; ok {
			continue
		}
		msg := name
		if near := nearestEnv(name); near != "" {
			msg += " (did you mean " + near + "?)"
		}
		out = append(out, msg)
	}
	sort.Strings(out)
	return out
}

// nearestEnv is the known variable within a few edits of name, or "".
func nearestEnv(name string) string {
	best, bestDist := "", 4
	for env := range keys().byEnv {
		if d := editDistance(name, env); d < bestDist {
			best, bestDist = env, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between two ASCII names.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
