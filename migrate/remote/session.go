package remote

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strings"
	"sync"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"github.com/stowage/stowage/migrate/agent"
	"github.com/stowage/stowage/plugins/volume"
)

// DialUnix opens a stream to the unix socket at path on the target host
// (direct-streamlocal@openssh.com), e.g. volumed's control API socket.
func (c *Conn) DialUnix(ctx context.Context, path string) (net.Conn, error) {
	nc, err := c.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("%w: open %s on the target over SSH: %v", volume.ErrUnavailable, path, err)
	}
	return nc, nil
}

// SFTP opens the SFTP subsystem with pipelined, concurrent writes.
func (c *Conn) SFTP() (*sftp.Client, error) {
	sc, err := sftp.NewClient(c.Client,
		sftp.UseConcurrentWrites(true),
		sftp.MaxConcurrentRequestsPerFile(64),
	)
	if err != nil {
		return nil, fmt.Errorf("%w: start SFTP on the target: %v", volume.ErrUnavailable, err)
	}
	return sc, nil
}

// Agent is a migrate agent running on the target.
type Agent struct {
	*agent.Client
	sess   *ssh.Session
	stderr *tailBuffer
}

// StartAgent runs `STOW migrate agent` on the target and connects to it.
// stow is the stow command on the target (a name on its PATH or a path).
func (c *Conn) StartAgent(stow string) (*Agent, error) {
	sess, err := c.NewSession()
	if err != nil {
		return nil, fmt.Errorf("%w: open an SSH session for the migrate agent: %v", volume.ErrUnavailable, err)
	}
	in, err := sess.StdinPipe()
	if err != nil {
		sess.Close()
		return nil, fmt.Errorf("start the migrate agent: %w", err)
	}
	out, err := sess.StdoutPipe()
	if err != nil {
		sess.Close()
		return nil, fmt.Errorf("start the migrate agent: %w", err)
	}
	stderr := &tailBuffer{max: 4096}
	sess.Stderr = stderr
	cmd := shellQuote(stow) + " migrate agent"
	if err := sess.Start(cmd); err != nil {
		sess.Close()
		return nil, fmt.Errorf("%w: start %q on the target: %v", volume.ErrUnavailable, cmd, err)
	}
	return &Agent{Client: agent.NewClient(out, in), sess: sess, stderr: stderr}, nil
}

// Hello opens the agent's session on root. A failure includes what the
// agent printed, e.g. that stow is not installed on the target.
func (a *Agent) Hello(root string) error {
	if err := a.Client.Hello(root); err != nil {
		if s := strings.TrimSpace(a.stderr.String()); s != "" {
			return fmt.Errorf("%w (the target said: %s)", err, s)
		}
		return err
	}
	return nil
}

// Close ends the agent: its standard input closes and it exits.
func (a *Agent) Close() error {
	return a.sess.Close()
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-+=:", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
	max int
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	if over := b.buf.Len() - b.max; over > 0 {
		b.buf.Next(over)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
