package main

import (
	"bufio"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/aerostic/aerogate/config"
)

// roleCommands are the long-running roles: each one the binary has must run in the
// compose file, with a health check.
var roleCommands = []string{"gateway", "webhooks", "sender", "ingest", "refresher"}

// notConfigKeys are AEROGATE_* variables that are not configuration keys but are read.
var notConfigKeys = []string{config.EnvConfigFile, "AEROGATE_ACCESS_TOKEN"}

type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

type composeService struct {
	Image       string            `yaml:"image"`
	Build       any               `yaml:"build"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	Volumes     []string          `yaml:"volumes"`
	Profiles    []string          `yaml:"profiles"`
	Healthcheck struct {
		Test    []string `yaml:"test"`
		Disable bool     `yaml:"disable"`
	} `yaml:"healthcheck"`
	DependsOn map[string]struct {
		Condition string `yaml:"condition"`
		Required  *bool  `yaml:"required"`
	} `yaml:"depends_on"`
	User string `yaml:"user"`
}

func readCompose(t *testing.T) composeFile {
	t.Helper()
	b, err := os.ReadFile("../../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.Unmarshal(b, &c); err != nil { // resolves the << merges
		t.Fatalf("docker-compose.yml: %v", err)
	}
	if len(c.Services) == 0 {
		t.Fatal("docker-compose.yml has no services")
	}
	return c
}

// readEnvFile reads KEY=value lines of a compose env file.
func readEnvFile(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: %q is not KEY=value", path, line)
		}
		env[k] = v
	}
	return env
}

var interpolation = regexp.MustCompile(`\$\{([A-Z0-9_]+)(?::?[-?]([^}]*))?\}`)

// defaultOf is what compose makes of a value with no variable set: ${X:-d} is d.
func defaultOf(v string) string {
	return interpolation.ReplaceAllString(v, "$2")
}

func isAerogate(s composeService) bool { return s.Image == "aerogate:local" || s.Build != nil }

// checkAerogateVar fails unless name, an AEROGATE_* variable, names a configuration key
// (or one of the few other variables aerogate reads).
func checkAerogateVar(t *testing.T, where, name string) {
	t.Helper()
	if !strings.HasPrefix(name, config.EnvPrefix) || slices.Contains(notConfigKeys, name) {
		return
	}
	for _, k := range config.Keys() {
		if config.EnvName(k) == name {
			return
		}
	}
	t.Errorf("%s: %s names no configuration key", where, name)
}

// TestComposeFile reads docker-compose.yml (there is no Docker engine here to start it)
// and checks it against the binary: every aerogate service's command is one the binary
// accepts, with flags it accepts; every AEROGATE_* variable names a real key; every role
// runs, with a health check, after the migrate job; Kafka keeps its log on a volume.
func TestComposeFile(t *testing.T) {
	c := readCompose(t)
	ran := map[string]bool{}
	for name, s := range c.Services {
		for k := range s.Environment {
			checkAerogateVar(t, "service "+name, k)
			// ${AEROGATE_X:-...} in a value names a variable too.
			for _, m := range interpolation.FindAllStringSubmatch(s.Environment[k], -1) {
				checkAerogateVar(t, "service "+name+" "+k, m[1])
			}
		}
		if !isAerogate(s) {
			continue
		}
		if s.User == "root" || s.User == "0" {
			t.Errorf("service %s runs as root", name)
		}
		if len(s.Command) == 0 {
			t.Errorf("service %s has no command (the image's default is not explicit)", name)
			continue
		}
		cmd := lookupCommand(s.Command[0])
		if cmd == nil {
			t.Errorf("service %s: the binary has no command %q", name, s.Command[0])
			continue
		}
		if err := cmd.flagSet(io.Discard).Parse(s.Command[1:]); err != nil {
			t.Errorf("service %s: aerogate %s does not take %q: %v", name, cmd.name, s.Command[1:], err)
		}
		if len(s.Profiles) == 0 {
			ran[cmd.name] = true
		}

		isRole := slices.Contains(roleCommands, cmd.name)
		if isRole || cmd.name == "fake-graph" {
			hc := s.Healthcheck
			switch {
			case hc.Disable || len(hc.Test) < 3:
				t.Errorf("service %s has no health check", name)
			case hc.Test[0] != "CMD" || hc.Test[1] != "/usr/local/bin/aerogate":
				t.Errorf("service %s: health check %q is not the binary's (the image has no shell)", name, hc.Test)
			default:
				check := lookupCommand(hc.Test[2])
				if check == nil {
					t.Errorf("service %s: health check runs unknown command %q", name, hc.Test[2])
				} else if err := check.flagSet(io.Discard).Parse(hc.Test[3:]); err != nil {
					t.Errorf("service %s: health check flags %q: %v", name, hc.Test[3:], err)
				}
			}
			if hc.Test != nil && len(hc.Test) == 3 && s.Environment[config.EnvName("admin.addr")] == "" {
				t.Errorf("service %s checks /readyz on admin.addr but sets no AEROGATE_ADMIN_ADDR", name)
			}
		}
		if isRole {
			if d, ok := s.DependsOn["migrate"]; !ok || d.Condition != "service_completed_successfully" {
				t.Errorf("service %s does not wait for the migrate job to complete", name)
			}
		}
		if cmd.name == "migrate" {
			if d := s.DependsOn["postgres"]; d.Condition != "service_healthy" {
				t.Errorf("migrate does not wait for Postgres to be healthy")
			}
			if _, ok := s.DependsOn["kafka"]; !ok {
				t.Error("migrate does not start after Kafka")
			}
			// It creates the topics, so it must wait for the brokers itself, boundedly.
			if !slices.Contains(s.Command, "--wait") {
				t.Error("migrate runs without --wait: a broker still starting would fail it")
			}
		}
	}
	for _, r := range roleCommands {
		if lookupCommand(r) != nil && !ran[r] {
			t.Errorf("the binary has the %s role but no compose service runs it", r)
		}
	}
	if !ran["migrate"] {
		t.Error("no migrate job")
	}

	// Kafka: KRaft, its log directory on a volume; the three-broker profile.
	brokers := 0
	for name, s := range c.Services {
		if !strings.HasPrefix(s.Image, "apache/kafka:") {
			continue
		}
		brokers++
		dir := s.Environment["KAFKA_LOG_DIRS"]
		if dir == "" {
			t.Errorf("%s: no KAFKA_LOG_DIRS: the image keeps its log in /tmp, lost with the container", name)
		}
		mounted := false
		for _, v := range s.Volumes {
			src, target, _ := strings.Cut(v, ":")
			if target == dir {
				if _, ok := c.Volumes[src]; !ok {
					t.Errorf("%s mounts %s, not a named volume", name, src)
				}
				mounted = true
			}
		}
		if !mounted {
			t.Errorf("%s: its log directory %s is not on a volume", name, dir)
		}
		if !strings.Contains(s.Environment["KAFKA_PROCESS_ROLES"], "controller") || s.Environment["CLUSTER_ID"] == "" {
			t.Errorf("%s is not a KRaft node with a cluster id", name)
		}
		if id := defaultOf(s.Environment["CLUSTER_ID"]); len(id) != 22 {
			t.Errorf("%s: CLUSTER_ID %q is not 16 bytes in base64url (22 characters)", name, id)
		}
	}
	if brokers != 3 {
		t.Errorf("%d Kafka services, want one plus two in the three-broker profile", brokers)
	}

	cluster := readEnvFile(t, "../../deploy/kafka-cluster.env")
	for k, want := range map[string]string{"COMPOSE_PROFILES": "kafka-cluster", "KAFKA_REPLICATION_FACTOR": "3",
		"KAFKA_MIN_INSYNC_REPLICAS": "2", "AEROGATE_KAFKA_REPLICATION_FACTOR": "3"} {
		if cluster[k] != want {
			t.Errorf("deploy/kafka-cluster.env: %s=%q, want %q", k, cluster[k], want)
		}
	}
	for _, b := range strings.Split(cluster["AEROGATE_KAFKA_BROKERS"], ",") {
		host, _, _ := strings.Cut(b, ":")
		if s, ok := c.Services[host]; !ok || !strings.HasPrefix(s.Image, "apache/kafka:") {
			t.Errorf("deploy/kafka-cluster.env: broker %s is no Kafka service", b)
		}
	}
	if n := len(strings.Split(cluster["KAFKA_VOTERS"], ",")); n != 3 {
		t.Errorf("deploy/kafka-cluster.env: %d controller voters, want 3", n)
	}
	fake := readEnvFile(t, "../../deploy/fake-graph.env")
	if fake["COMPOSE_PROFILES"] != "fake-graph" || !strings.HasPrefix(fake["AEROGATE_GRAPH_BASE_URL"], "http://fake-graph:") {
		t.Error("deploy/fake-graph.env does not turn the fake Graph API on and point graph.base_url at it")
	}
	for _, env := range []map[string]string{cluster, fake} {
		for k := range env {
			checkAerogateVar(t, "deploy env file", k)
		}
	}
}

// TestImage checks the Dockerfile builds a static binary into a non-root image with no
// shell, and that .dockerignore keeps dev keys, secrets and binaries out of the build.
func TestImage(t *testing.T) {
	b, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(b)
	if !strings.Contains(df, "CGO_ENABLED=0") {
		t.Error("Dockerfile: the binary is not built static (CGO_ENABLED=0)")
	}
	var lastFrom, user string
	for _, line := range strings.Split(df, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "FROM" {
			lastFrom, user = f[1], ""
		}
		if len(f) >= 2 && f[0] == "USER" {
			user = f[1]
		}
	}
	if !strings.HasPrefix(lastFrom, "gcr.io/distroless/static") && lastFrom != "scratch" {
		t.Errorf("Dockerfile: the runtime image is %s, want distroless static or scratch", lastFrom)
	}
	if u, _, _ := strings.Cut(user, ":"); u == "" || u == "root" || u == "0" {
		t.Errorf("Dockerfile: the runtime image runs as %q, want a non-root user", user)
	}

	ignore, err := os.ReadFile("../../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for _, line := range strings.Split(string(ignore), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			patterns = append(patterns, line)
		}
	}
	for _, path := range []string{".aerogate/keys.json", ".git/config", ".env", "bin/aerogate", "cmd/aerogate/aerogate.test"} {
		if !ignored(patterns, path) {
			t.Errorf(".dockerignore lets %s into the build context", path)
		}
	}
	for _, path := range []string{"go.mod", "cmd/aerogate/main.go", "internal/store/migrations/001_accounts_messages.sql"} {
		if ignored(patterns, path) {
			t.Errorf(".dockerignore keeps %s, which the build needs, out", path)
		}
	}
}

// ignored applies .dockerignore patterns as Docker does: a pattern matches the path or
// a directory above it, ** any number of directories, a later ! pattern re-includes.
func ignored(patterns []string, path string) bool {
	out := false
	parts := strings.Split(path, "/")
	for _, p := range patterns {
		neg := strings.HasPrefix(p, "!")
		p = strings.TrimPrefix(p, "!")
		for i := 1; i <= len(parts); i++ {
			if matchIgnore(p, strings.Join(parts[:i], "/")) {
				out = !neg
				break
			}
		}
	}
	return out
}

func matchIgnore(pattern, path string) bool {
	if rest, ok := strings.CutPrefix(pattern, "**/"); ok {
		parts := strings.Split(path, "/")
		for i := range parts {
			if matchIgnore(rest, strings.Join(parts[i:], "/")) {
				return true
			}
		}
		return false
	}
	m, _ := filepath.Match(pattern, path)
	return m
}
