package devenv

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/aerostic/aerogate/config"
	"github.com/aerostic/aerogate/internal/secret"
)

func TestLoadOrCreateKeysKeepsTheFirstKeys(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if _, err := LoadKeys(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("LoadKeys before dev ran: %v, want fs.ErrNotExist", err)
	}

	// Two dev commands starting at once must agree on one set of keys.
	var wg sync.WaitGroup
	got := make([]Keys, 4)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, err := LoadOrCreateKeys(dir)
			if err != nil {
				t.Error(err)
			}
			got[i] = k
		}()
	}
	wg.Wait()
	for _, k := range got[1:] {
		if k.JWTSecret != got[0].JWTSecret || k.TokenKeys[0] != got[0].TokenKeys[0] {
			t.Fatal("concurrent LoadOrCreateKeys returned different keys")
		}
	}
	if len(got[0].JWTSecret) < 32 {
		t.Errorf("jwt secret is %d bytes, want at least 32", len(got[0].JWTSecret))
	}
	if _, err := secret.ParseKeyRing(got[0].TokenKeys); err != nil {
		t.Errorf("generated token keys do not parse: %v", err)
	}
	info, err := os.Stat(filepath.Join(dir, keysFile))
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o600 {
		t.Errorf("keys file mode %v, want 0600", perm)
	}
	again, err := LoadOrCreateKeys(dir)
	if err != nil || again.JWTSecret != got[0].JWTSecret {
		t.Fatalf("a later dev run got other keys (%v)", err)
	}
}

func TestApplyKeysFillsOnlyWhatIsMissing(t *testing.T) {
	dir := t.TempDir()
	k, err := LoadOrCreateKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.Dev.DataDir = dir
	cfg.JWT.Secret = "configured-secret-configured-secret-0123"
	if _, err := ApplyKeys(&cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.JWT.Secret != "configured-secret-configured-secret-0123" {
		t.Error("ApplyKeys replaced a configured jwt.secret")
	}
	if len(cfg.Secrets.TokenKeys) != 1 || cfg.Secrets.TokenKeys[0] != k.TokenKeys[0] {
		t.Error("ApplyKeys did not fill secrets.token_keys from the dev data dir")
	}

	empty := config.Default()
	empty.Dev.DataDir = filepath.Join(dir, "never-ran")
	if _, err := ApplyKeys(&empty); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ApplyKeys without dev keys: %v, want fs.ErrNotExist", err)
	}
}

func TestLoadKeysRejectsAGarbledFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, keysFile), []byte(`{"jwt_secret":""}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKeys(dir); err == nil {
		t.Fatal("LoadKeys accepted a keys file without keys")
	}
	if _, err := LoadOrCreateKeys(dir); err == nil {
		t.Fatal("LoadOrCreateKeys silently replaced a garbled keys file")
	}
}

// TestApplyKeysFromASubdirectory: `aerogate token` run below the directory dev runs in
// finds dev's keys through the relative dev.data_dir, as git finds .git.
func TestApplyKeysFromASubdirectory(t *testing.T) {
	root := t.TempDir()
	want, err := LoadOrCreateKeys(filepath.Join(root, ".aerogate"))
	if err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(root, "a", "b")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(sub)
	cfg := config.Default()
	if ok, err := ApplyKeys(&cfg); err != nil || !ok {
		t.Fatalf("ApplyKeys from a subdirectory = %v, %v; want the keys of %s", ok, err, root)
	}
	if cfg.JWT.Secret != want.JWTSecret || cfg.Secrets.TokenKeys[0] != want.TokenKeys[0] {
		t.Fatal("ApplyKeys filled other keys than dev's")
	}

	// Elsewhere there are none: the error says so.
	t.Chdir(t.TempDir())
	cfg = config.Default()
	if _, err := ApplyKeys(&cfg); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("ApplyKeys with no dev data dir above = %v, want fs.ErrNotExist", err)
	}
}
