package remote

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// server is an in-process SSH server on loopback that accepts one client
// key and answers global requests.
type server struct {
	addr    string
	hostKey ssh.PublicKey
}

func newKey(t *testing.T) (ssh.Signer, []byte) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	return s, pem.EncodeToMemory(block)
}

func startServer(t *testing.T, client ssh.PublicKey) *server {
	t.Helper()
	host, _ := newKey(t)
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(_ ssh.ConnMetadata, k ssh.PublicKey) (*ssh.Permissions, error) {
			if string(k.Marshal()) == string(client.Marshal()) {
				return nil, nil
			}
			return nil, errors.New("unknown key")
		},
	}
	cfg.AddHostKey(host)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			nc, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer nc.Close()
				_, chans, reqs, err := ssh.NewServerConn(nc, cfg)
				if err != nil {
					return
				}
				go func() {
					for c := range chans {
						c.Reject(ssh.Prohibited, "no channels here")
					}
				}()
				for r := range reqs {
					if r.WantReply {
						r.Reply(true, nil)
					}
				}
			})
		}
	})
	return &server{addr: l.Addr().String(), hostKey: host.PublicKey()}
}

func TestDialHostKeys(t *testing.T) {
	clientKey, pemKey := newKey(t)
	srv := startServer(t, clientKey.PublicKey())
	home := t.TempDir()
	if err := os.MkdirAll(filepath.Join(home, ".ssh"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, ".ssh", "id_ed25519"), pemKey, 0o600); err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(srv.addr)
	target, err := ParseTarget("ssh://tester@" + net.JoinHostPort(host, port))
	if err != nil {
		t.Fatal(err)
	}
	known := filepath.Join(home, ".ssh", "known_hosts")
	fp := ssh.FingerprintSHA256(srv.hostKey)

	// Unknown: refused, nothing written.
	_, err = Dial(t.Context(), target, Config{Home: home})
	if !errors.Is(err, ErrHostKey) || !strings.Contains(err.Error(), "is not known") || !strings.Contains(err.Error(), fp) ||
		!strings.Contains(err.Error(), known) || !strings.Contains(err.Error(), "--accept-new-host-key") {
		t.Fatalf("unknown host: %v; want ErrHostKey naming %s, %s and --accept-new-host-key", err, fp, known)
	}
	if _, err := os.Stat(known); !os.IsNotExist(err) {
		t.Fatalf("known_hosts exists after a refusal: %v", err)
	}

	// Accepted on request, then known.
	c, err := Dial(t.Context(), target, Config{Home: home, AcceptNewHostKey: true})
	if err != nil {
		t.Fatalf("dial with AcceptNewHostKey: %v", err)
	}
	c.Close()
	b, err := os.ReadFile(known)
	if err != nil || string(b) != knownhosts.Line([]string{knownhosts.Normalize(srv.addr)}, srv.hostKey)+"\n" {
		t.Fatalf("known_hosts = %q, %v", b, err)
	}
	c, err = Dial(t.Context(), target, Config{Home: home})
	if err != nil {
		t.Fatalf("dial a known host: %v", err)
	}
	c.Close()

	// Another key for the host: refused even with AcceptNewHostKey.
	other, _ := newKey(t)
	if err := os.WriteFile(known, []byte(knownhosts.Line([]string{knownhosts.Normalize(srv.addr)}, other.PublicKey())+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Dial(t.Context(), target, Config{Home: home, AcceptNewHostKey: true})
	if !errors.Is(err, ErrHostKey) || !strings.Contains(err.Error(), "has changed") || !strings.Contains(err.Error(), known+":1") ||
		!strings.Contains(err.Error(), fp) {
		t.Fatalf("changed host key: %v; want ErrHostKey naming %s:1 and %s", err, known, fp)
	}
}

func TestDialAuthentication(t *testing.T) {
	clientKey, pemKey := newKey(t)
	srv := startServer(t, clientKey.PublicKey())
	home := t.TempDir()
	target, err := ParseTarget("ssh://tester@" + srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	known := filepath.Join(home, "kh")
	if err := os.WriteFile(known, []byte(knownhosts.Line([]string{knownhosts.Normalize(srv.addr)}, srv.hostKey)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Dial(t.Context(), target, Config{Home: home, KnownHosts: known})
	if err == nil || !strings.Contains(err.Error(), "--identity") {
		t.Fatalf("no key: %v; want an error that mentions --identity", err)
	}
	_, wrongPEM := newKey(t)
	id := filepath.Join(home, "wrong")
	if err := os.WriteFile(id, wrongPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err = Dial(t.Context(), target, Config{Home: home, KnownHosts: known, Identity: id}); err == nil {
		t.Fatal("dial with a key the server does not accept succeeded")
	}
	if err := os.WriteFile(id, pemKey, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Dial(t.Context(), target, Config{Home: home, KnownHosts: known, Identity: id})
	if err != nil {
		t.Fatalf("dial with --identity: %v", err)
	}
	c.Close()
}
