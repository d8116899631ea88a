package role

import (
	"log/slog"
	"net/url"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/aerostic/aerogate/config"
)

// BuildInfo is what the binary says about itself.
type BuildInfo struct {
	Version  string // module version, (devel) for a build from a work tree
	Revision string // VCS revision, "unknown" when not stamped
	Time     string // VCS commit time, RFC 3339
	Modified bool   // built from a work tree with changes
	Go       string
}

// version and revision may be stamped at build time where the VCS is not at hand (a
// container build without .git): -ldflags "-X github.com/aerostic/aerogate/internal/role.version=v1.2.3
// -X github.com/aerostic/aerogate/internal/role.revision=<sha>".
var version, revision string

// Build reads the binary's build information.
func Build() (b BuildInfo) {
	b = BuildInfo{Version: "(devel)", Revision: "unknown", Go: runtime.Version()}
	defer func() {
		if version != "" {
			b.Version = version
		}
		if revision != "" {
			b.Revision = revision
		}
	}()
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return b
	}
	if bi.Main.Version != "" {
		b.Version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			b.Revision = s.Value
		case "vcs.time":
			b.Time = s.Value
		case "vcs.modified":
			b.Modified = s.Value == "true"
		}
	}
	return b
}

// String is "aerogate <version> (revision <rev>[, modified][, <time>]) <go version>".
func (b BuildInfo) String() string {
	out := "aerogate " + b.Version + " (revision " + b.Revision
	if b.Modified {
		out += ", modified"
	}
	if b.Time != "" {
		out += ", " + b.Time
	}
	return out + ") " + b.Go
}

// LogStart writes a process's start-up summary: a few lines naming what it is and what
// it talks to, never a secret (the database is named by host and database only).
func LogStart(log *slog.Logger, cfg config.Config, role string) {
	b := Build()
	rev := b.Revision
	if len(rev) > 12 {
		rev = rev[:12]
	}
	log.Info("aerogate starting", "version", b.Version, "revision", rev, "go", b.Go, "role", role)
	log.Info("aerogate dependencies", "database", DatabaseName(cfg.Database.URL), "kafka", strings.Join(cfg.Kafka.Brokers, ","),
		"graph", cfg.Graph.BaseURL, "admin", cfg.Admin.Addr, "log_level", cfg.Log.Level, "log_format", cfg.Log.Format)
}

// DatabaseName is host/database of a Postgres URL, without user or password.
func DatabaseName(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.Host == "" {
		return "(not a URL)"
	}
	return u.Host + u.Path
}
