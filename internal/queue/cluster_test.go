package queue

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go/sasl/plain"

	"github.com/aerostic/aerogate/config"
)

// writePEMs writes a self-signed CA and a client certificate and key it signed into dir.
func writePEMs(t *testing.T, dir string) (caFile, certFile, keyFile string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	clientKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	clientTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "aerogate"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	clientDER, err := x509.CreateCertificate(rand.Reader, clientTmpl, caTmpl, &clientKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(clientKey)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, der []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("client.pem", "CERTIFICATE", clientDER), write("client-key.pem", "EC PRIVATE KEY", keyDER)
}

func TestTLSConfig(t *testing.T) {
	dir := t.TempDir()
	caFile, certFile, keyFile := writePEMs(t, dir)
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	unreadable := filepath.Join(dir, "no-such-ca.pem")

	tests := []struct {
		name    string
		cfg     config.KafkaTLS
		check   func(t *testing.T, c *tls.Config)
		wantErr string // the key the error must name
	}{
		{name: "off", cfg: config.KafkaTLS{CAFile: caFile}, check: func(t *testing.T, c *tls.Config) {
			if c != nil {
				t.Fatalf("TLS off built %+v", c)
			}
		}},
		{name: "system roots", cfg: config.KafkaTLS{Enabled: true}, check: func(t *testing.T, c *tls.Config) {
			if c == nil || c.RootCAs != nil || len(c.Certificates) != 0 || c.ServerName != "" || c.InsecureSkipVerify {
				t.Fatalf("got %+v", c)
			}
			if c.MinVersion != tls.VersionTLS12 {
				t.Errorf("MinVersion = %x, want TLS 1.2", c.MinVersion)
			}
		}},
		{name: "ca, client certificate and server name", cfg: config.KafkaTLS{Enabled: true, CAFile: caFile, CertFile: certFile, KeyFile: keyFile, ServerName: "kafka.internal"},
			check: func(t *testing.T, c *tls.Config) {
				if c.ServerName != "kafka.internal" {
					t.Errorf("ServerName = %q", c.ServerName)
				}
				if c.RootCAs == nil || !c.RootCAs.Equal(caPool(t, caFile)) {
					t.Error("RootCAs is not the configured CA")
				}
				if len(c.Certificates) != 1 || c.Certificates[0].Leaf == nil || c.Certificates[0].Leaf.Subject.CommonName != "aerogate" {
					t.Errorf("client certificate not loaded: %+v", c.Certificates)
				}
			}},
		{name: "unreadable ca file", cfg: config.KafkaTLS{Enabled: true, CAFile: unreadable}, wantErr: "kafka.tls.ca_file"},
		{name: "ca file without a certificate", cfg: config.KafkaTLS{Enabled: true, CAFile: notPEM}, wantErr: "kafka.tls.ca_file"},
		{name: "key does not match", cfg: config.KafkaTLS{Enabled: true, CertFile: certFile, KeyFile: notPEM}, wantErr: "kafka.tls.key_file"},
		{name: "cert without key", cfg: config.KafkaTLS{Enabled: true, CertFile: certFile}, wantErr: "kafka.tls.key_file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := TLSConfig(tc.cfg)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one naming %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}

func caPool(t *testing.T, file string) *x509.CertPool {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	p := x509.NewCertPool()
	p.AppendCertsFromPEM(b)
	return p
}

func TestSASLMechanism(t *testing.T) {
	const password = "sasl-password-do-not-print"
	tests := []struct {
		cfg      config.KafkaSASL
		wantName string // "" means no mechanism
		wantErr  bool
	}{
		{cfg: config.KafkaSASL{}},
		{cfg: config.KafkaSASL{Mechanism: "PLAIN", Username: "aerogate", Password: password}, wantName: "PLAIN"},
		{cfg: config.KafkaSASL{Mechanism: "SCRAM-SHA-256", Username: "aerogate", Password: password}, wantName: "SCRAM-SHA-256"},
		{cfg: config.KafkaSASL{Mechanism: "scram-sha-512", Username: "aerogate", Password: password}, wantName: "SCRAM-SHA-512"},
		{cfg: config.KafkaSASL{Mechanism: "GSSAPI", Username: "aerogate", Password: password}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.cfg.Mechanism, func(t *testing.T) {
			m, err := SASLMechanism(tc.cfg)
			if tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), "kafka.sasl.mechanism") || strings.Contains(err.Error(), password) {
					t.Fatalf("err = %v, want one naming kafka.sasl.mechanism without the password", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantName == "" {
				if m != nil {
					t.Fatalf("no mechanism configured, got %s", m.Name())
				}
				return
			}
			if m == nil || m.Name() != tc.wantName {
				t.Fatalf("mechanism = %v, want %s", m, tc.wantName)
			}
			if p, ok := m.(plain.Mechanism); ok && (p.Username != "aerogate" || p.Password != password) {
				t.Errorf("PLAIN credentials = %q / %q", p.Username, p.Password)
			}
		})
	}
}

// TestClusterAppliesSecurityEverywhere: the dialer (consumer groups, readers, admin) and
// the transport (producers) carry the same TLS and SASL settings built from config.
func TestClusterAppliesSecurityEverywhere(t *testing.T) {
	caFile, _, _ := writePEMs(t, t.TempDir())
	c, err := NewCluster(config.Kafka{
		Brokers: []string{"kafka-1:9093"}, ClientID: "aerogate-test",
		TLS:  config.KafkaTLS{Enabled: true, CAFile: caFile, ServerName: "kafka"},
		SASL: config.KafkaSASL{Mechanism: "SCRAM-SHA-512", Username: "u", Password: "p"},
	})
	if err != nil {
		t.Fatal(err)
	}
	d := c.Dialer()
	tr := c.transport(time.Second, TopicSends)
	p, err := NewProducer(ProducerConfig{Cluster: c, Topic: TopicSends})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for name, got := range map[string]struct {
		tls  *tls.Config
		mech string
		id   string
	}{
		"dialer":             {d.TLS, d.SASLMechanism.Name(), d.ClientID},
		"transport":          {tr.TLS, tr.SASL.Name(), tr.ClientID},
		"producer transport": {p.transport.TLS, p.transport.SASL.Name(), p.transport.ClientID},
	} {
		if got.tls != c.TLS || got.tls.ServerName != "kafka" || got.mech != "SCRAM-SHA-512" || got.id != "aerogate-test" {
			t.Errorf("%s: tls %p (want %p), sasl %s, client id %s", name, got.tls, c.TLS, got.mech, got.id)
		}
	}
	if _, err := NewCluster(config.Kafka{TLS: config.KafkaTLS{Enabled: true, CAFile: filepath.Join(t.TempDir(), "missing.pem")}}); err == nil ||
		!strings.Contains(err.Error(), "kafka.tls.ca_file") {
		t.Errorf("NewCluster with a missing CA file: %v, want an error naming kafka.tls.ca_file", err)
	}
}
