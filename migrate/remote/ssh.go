package remote

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/stowage/stowage/plugins/volume"
)

// ErrHostKey marks a refused host key: unknown (and not accepted) or
// different from the one known.
var ErrHostKey = errors.New("host key refused")

// Config says how to authenticate the connection.
type Config struct {
	// KnownHosts is the known_hosts file; default ~/.ssh/known_hosts.
	KnownHosts string
	// AcceptNewHostKey appends the key of a host that KnownHosts does not
	// know instead of refusing. A different key is refused always.
	AcceptNewHostKey bool
	// Identity is a private key file; default the first of
	// ~/.ssh/id_ed25519, id_ecdsa and id_rsa that exists.
	Identity string
	// AgentSocket is an SSH agent's socket (SSH_AUTH_SOCK); empty for none.
	AgentSocket string
	// Home is the home directory holding .ssh; default the user's.
	Home string
	// Timeout bounds the TCP connect and the handshake; default 30s.
	Timeout time.Duration
	// KeepAlive is the interval of keepalive requests that detect a dead
	// link; default 15s, and three missed answers end the connection.
	KeepAlive time.Duration
}

// Conn is an authenticated SSH connection to the target host.
type Conn struct {
	*ssh.Client
	stop chan struct{}
	done chan struct{}
	// lost is set when keepalives went unanswered and the connection was
	// closed for it.
	lost     atomic.Bool
	interval time.Duration
	wire     *countingConn
}

// WireBytes returns the bytes the connection carried so far in both
// directions (encrypted, every channel included).
func (c *Conn) WireBytes() int64 {
	if c.wire == nil {
		return 0
	}
	return c.wire.n.Load()
}

// countingConn counts the bytes read and written.
type countingConn struct {
	net.Conn
	n atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// Lost returns a description of why the connection was given up, or ""
// while it is alive or was closed normally.
func (c *Conn) Lost() string {
	if !c.lost.Load() {
		return ""
	}
	return fmt.Sprintf("no answer to keepalives for %s", 3*c.interval)
}

// Close ends the connection and its keepalive.
func (c *Conn) Close() error {
	close(c.stop)
	err := c.Client.Close()
	<-c.done
	return err
}

// Dial connects and authenticates to t. Host keys are checked against
// KnownHosts: an unknown host is refused with the key's fingerprint unless
// AcceptNewHostKey; a changed key is refused always (ErrHostKey).
func Dial(ctx context.Context, t Target, cfg Config) (*Conn, error) {
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.KeepAlive == 0 {
		cfg.KeepAlive = 15 * time.Second
	}
	home := cfg.Home
	if home == "" {
		h, err := os.UserHomeDir()
		if err != nil {
			return nil, fmt.Errorf("find the home directory for ~/.ssh: %w", err)
		}
		home = h
	}
	if cfg.KnownHosts == "" {
		cfg.KnownHosts = filepath.Join(home, ".ssh", "known_hosts")
	}
	userName := t.User
	if userName == "" {
		u, err := user.Current()
		if err != nil {
			return nil, fmt.Errorf("find the local user name: %w", err)
		}
		userName = u.Username
	}
	auth, closeAgent, err := authMethods(cfg, home)
	if err != nil {
		return nil, err
	}
	defer closeAgent()
	hk := &hostKeys{file: cfg.KnownHosts, accept: cfg.AcceptNewHostKey}
	algos, err := hk.knownAlgorithms(t.Addr())
	if err != nil {
		return nil, err
	}
	sc := &ssh.ClientConfig{
		User:              userName,
		Auth:              auth,
		HostKeyCallback:   hk.check,
		HostKeyAlgorithms: algos,
		Timeout:           cfg.Timeout,
	}
	d := net.Dialer{Timeout: cfg.Timeout}
	tc, err := d.DialContext(ctx, "tcp", t.Addr())
	if err != nil {
		return nil, fmt.Errorf("%w: connect to %s: %v", volume.ErrUnavailable, t.Addr(), err)
	}
	nc := &countingConn{Conn: tc}
	// The handshake has its own deadline; ctx also ends it.
	_ = nc.SetDeadline(time.Now().Add(cfg.Timeout))
	stopWatch := context.AfterFunc(ctx, func() { nc.Close() })
	c, chans, reqs, err := ssh.NewClientConn(nc, t.Addr(), sc)
	stopWatch()
	if err != nil {
		nc.Close()
		if hk.err != nil {
			return nil, hk.err
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w: ssh handshake with %s as %s: %v", volume.ErrUnavailable, t.Addr(), userName, err)
	}
	_ = nc.SetDeadline(time.Time{})
	conn := &Conn{Client: ssh.NewClient(c, chans, reqs), stop: make(chan struct{}), done: make(chan struct{}), interval: cfg.KeepAlive, wire: nc}
	go conn.keepAlive(cfg.KeepAlive)
	return conn, nil
}

// keepAlive sends keepalive requests and closes the connection after three
// go unanswered, so that a cut link ends every pending operation.
func (c *Conn) keepAlive(every time.Duration) {
	defer close(c.done)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-tick.C:
		}
		answered := make(chan struct{})
		go func() {
			_, _, _ = c.SendRequest("keepalive@openssh.com", true, nil)
			close(answered)
		}()
		select {
		case <-c.stop:
			return
		case <-answered:
		case <-time.After(3 * every):
			c.lost.Store(true)
			c.Client.Close()
			return
		}
	}
}

// authMethods returns public-key authentication from the agent and the
// identity file.
func authMethods(cfg Config, home string) ([]ssh.AuthMethod, func(), error) {
	var signers []ssh.Signer
	closeAgent := func() {}
	if cfg.AgentSocket != "" {
		if ac, err := net.Dial("unix", cfg.AgentSocket); err == nil {
			closeAgent = func() { ac.Close() }
			if ss, err := agent.NewClient(ac).Signers(); err == nil {
				signers = append(signers, ss...)
			}
		}
	}
	files := []string{cfg.Identity}
	if cfg.Identity == "" {
		files = nil
		for _, n := range []string{"id_ed25519", "id_ecdsa", "id_rsa"} {
			files = append(files, filepath.Join(home, ".ssh", n))
		}
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if errors.Is(err, os.ErrNotExist) && cfg.Identity == "" {
			continue
		}
		if err != nil {
			closeAgent()
			return nil, nil, fmt.Errorf("%w: read identity: %v", volume.ErrInvalid, err)
		}
		s, err := ssh.ParsePrivateKey(b)
		var missing *ssh.PassphraseMissingError
		if errors.As(err, &missing) {
			if cfg.Identity != "" && len(signers) == 0 {
				closeAgent()
				return nil, nil, fmt.Errorf("%w: identity %s is encrypted: add it to an SSH agent (ssh-add) and set SSH_AUTH_SOCK", volume.ErrInvalid, f)
			}
			continue
		}
		if err != nil {
			closeAgent()
			return nil, nil, fmt.Errorf("%w: parse identity %s: %v", volume.ErrInvalid, f, err)
		}
		signers = append(signers, s)
	}
	if len(signers) == 0 {
		closeAgent()
		return nil, nil, fmt.Errorf("%w: no SSH key: none of ~/.ssh/id_ed25519, id_ecdsa, id_rsa exists and no agent answers at SSH_AUTH_SOCK; give one with --identity", volume.ErrInvalid)
	}
	return []ssh.AuthMethod{ssh.PublicKeys(signers...)}, closeAgent, nil
}

// hostKeys checks host keys against a known_hosts file.
type hostKeys struct {
	file   string
	accept bool
	// err is the refusal check returned, kept to report it as is.
	err error
}

func (h *hostKeys) callback() (ssh.HostKeyCallback, error) {
	cb, err := knownhosts.New(h.file)
	if errors.Is(err, os.ErrNotExist) {
		return func(string, net.Addr, ssh.PublicKey) error { return &knownhosts.KeyError{} }, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: read known hosts: %v", volume.ErrInvalid, err)
	}
	return cb, nil
}

// knownAlgorithms returns the host key algorithms of the keys known for
// addr, so that the server presents a key that can be checked; nil when
// none is known.
func (h *hostKeys) knownAlgorithms(addr string) ([]string, error) {
	cb, err := h.callback()
	if err != nil {
		return nil, err
	}
	// Any key that is surely not known makes the callback list the known
	// ones.
	probe, err := ssh.NewPublicKey(probeKey)
	if err != nil {
		return nil, err
	}
	var ke *knownhosts.KeyError
	if err := cb(addr, fakeAddr(addr), probe); !errors.As(err, &ke) {
		return nil, nil
	}
	var algos []string
	for _, k := range ke.Want {
		switch t := k.Key.Type(); t {
		case ssh.KeyAlgoRSA:
			algos = append(algos, ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA)
		default:
			algos = append(algos, t)
		}
	}
	return algos, nil
}

func (h *hostKeys) check(addr string, remote net.Addr, key ssh.PublicKey) error {
	cb, err := h.callback()
	if err != nil {
		h.err = err
		return err
	}
	err = cb(addr, remote, key)
	var ke *knownhosts.KeyError
	var revoked *knownhosts.RevokedError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &revoked):
		h.err = fmt.Errorf("%w: host key of %s (%s %s) is marked revoked in %s", ErrHostKey, addr, key.Type(), ssh.FingerprintSHA256(key), h.file)
	case errors.As(err, &ke) && len(ke.Want) > 0:
		where := make([]string, len(ke.Want))
		for i, w := range ke.Want {
			where[i] = fmt.Sprintf("%s:%d", w.Filename, w.Line)
		}
		h.err = fmt.Errorf("%w: host key of %s has changed: the server offers %s %s but %s holds another key; refusing to connect, since this may be an attack; if the host was reinstalled, remove the old key with `ssh-keygen -f %s -R %s` and connect again",
			ErrHostKey, addr, key.Type(), ssh.FingerprintSHA256(key), strings.Join(where, ", "), h.file, knownhosts.Normalize(addr))
	case errors.As(err, &ke):
		if !h.accept {
			h.err = fmt.Errorf("%w: host key of %s is not known: the server offers %s %s, which is not in %s; check the fingerprint and rerun with --accept-new-host-key to add it",
				ErrHostKey, addr, key.Type(), ssh.FingerprintSHA256(key), h.file)
			return h.err
		}
		if err := appendKnownHost(h.file, addr, key); err != nil {
			h.err = err
			return err
		}
		return nil
	default:
		h.err = fmt.Errorf("%w: check host key of %s: %v", ErrHostKey, addr, err)
	}
	return h.err
}

// appendKnownHost adds addr's key to file, making file and its directory
// when they do not exist.
func appendKnownHost(file, addr string, key ssh.PublicKey) error {
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return fmt.Errorf("add host key to %s: %w", file, err)
	}
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("add host key to %s: %w", file, err)
	}
	line := knownhosts.Line([]string{knownhosts.Normalize(addr)}, key) + "\n"
	if _, err := f.WriteString(line); err != nil {
		f.Close()
		return fmt.Errorf("add host key to %s: %w", file, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("add host key to %s: %w", file, err)
	}
	return nil
}

type fakeAddr string

func (a fakeAddr) Network() string { return "tcp" }
func (a fakeAddr) String() string  { return string(a) }
