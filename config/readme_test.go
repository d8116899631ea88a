package config_test

import (
	"os"
	"strings"
	"testing"

	"github.com/aerostic/aerogate/config"
)

// TestREADMEDocumentsEveryKey keeps the README's configuration reference true: every key
// and its environment variable must be in it.
func TestREADMEDocumentsEveryKey(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	for _, k := range config.Keys() {
		if !strings.Contains(readme, "`"+k+"`") {
			t.Errorf("README.md does not document key %s", k)
		}
		if !strings.Contains(readme, "`"+config.EnvName(k)+"`") {
			t.Errorf("README.md does not name %s's environment variable %s", k, config.EnvName(k))
		}
	}
}
