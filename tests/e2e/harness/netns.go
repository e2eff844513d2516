package harness

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/stowage/stowage/internal/testenv"
)

var netnsSeq atomic.Int64

// Netns is a network namespace the test created, one end of a veth pair.
type Netns struct {
	t    testing.TB
	Name string
	// IP is this end's address (a /30 shared with the peer).
	IP string
	// Veth is this end's interface.
	Veth string
}

// NetnsPair creates two network namespaces joined by a veth pair, with
// addresses 10.213.N.1 and 10.213.N.2, and lo up in both: two hosts on one
// link. A cleanup deletes them.
func NetnsPair(t testing.TB) (a, b *Netns) {
	t.Helper()
	testenv.Require(t, "root", "ip", "nsenter")
	seq := netnsSeq.Add(1)
	tag := fmt.Sprintf("%d%d", os.Getpid()%100000, seq)
	a = &Netns{t: t, Name: "stw-a" + tag, IP: fmt.Sprintf("10.213.%d.1", seq%250)}
	b = &Netns{t: t, Name: "stw-b" + tag, IP: fmt.Sprintf("10.213.%d.2", seq%250)}
	vethA, vethB := "stwa"+tag, "stwb"+tag
	a.Veth, b.Veth = vethA, vethB
	for _, n := range []*Netns{a, b} {
		mustIP(t, "netns", "add", n.Name)
		name := n.Name
		t.Cleanup(func() {
			if r := run(nil, nil, "ip", "netns", "del", name); r.Code != 0 {
				t.Errorf("ip netns del %s: %s", name, r)
			}
		})
	}
	mustIP(t, "link", "add", vethA, "netns", a.Name, "type", "veth", "peer", "name", vethB, "netns", b.Name)
	for _, x := range []struct {
		n    *Netns
		veth string
	}{{a, vethA}, {b, vethB}} {
		mustIP(t, "-n", x.n.Name, "addr", "add", x.n.IP+"/30", "dev", x.veth)
		mustIP(t, "-n", x.n.Name, "link", "set", x.veth, "up")
		mustIP(t, "-n", x.n.Name, "link", "set", "lo", "up")
	}
	return a, b
}

func mustIP(t testing.TB, args ...string) {
	t.Helper()
	if r := run(nil, nil, "ip", args...); r.Code != 0 {
		t.Fatalf("ip %s: %s", strings.Join(args, " "), r)
	}
}

// SetLink sets n's end of the link up or down, as a cut cable would.
func (n *Netns) SetLink(up bool) {
	n.t.Helper()
	state := "down"
	if up {
		state = "up"
	}
	mustIP(n.t, "-n", n.Name, "link", "set", n.Veth, state)
}

// Command returns a command that runs name with args inside n.
//
// Only the network namespace is entered (nsenter --net), not a mount
// namespace as `ip netns exec` makes: volumed mounts volumes in the host's
// mount namespace, and the processes of both hosts must see them.
func (n *Netns) Command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command("nsenter", n.nsenterArgs(name, args)...)
	cmd.Env = environ(nil)
	return cmd
}

func (n *Netns) nsenterArgs(name string, args []string) []string {
	return append([]string{"--net=/run/netns/" + n.Name, "--", name}, args...)
}

// Run runs name with args inside n, with extra environment.
func (n *Netns) Run(env []string, name string, args ...string) Result {
	return run(env, nil, "nsenter", n.nsenterArgs(name, args)...)
}

// Sshd is an OpenSSH server the test started inside a namespace.
type Sshd struct {
	// Addr is host:port to connect to.
	Addr string
	// Port is the port of Addr.
	Port int
	// HostKey is the server's public host key.
	HostKey ssh.PublicKey
	// Identity is a private key file that root may log in with.
	Identity string
	// KnownHosts is a known_hosts file that holds HostKey for Addr.
	KnownHosts string
	LogPath    string

	proc *process
}

// StartSshd starts sshd inside n on n.IP, port 2222, with a new ed25519
// host key and a new client key that may log in as root; waits until it
// accepts connections; and stops it by its PID in a cleanup.
func StartSshd(t testing.TB, n *Netns) *Sshd {
	t.Helper()
	testenv.Require(t, "root", "sshd")
	sshd, err := testenv.LookPath("sshd")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	hostPub := writeKey(t, filepath.Join(dir, "host_key"))
	clientPub := writeKey(t, filepath.Join(dir, "id_ed25519"))
	authorized := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(authorized, ssh.MarshalAuthorizedKey(clientPub), 0o600); err != nil {
		t.Fatal(err)
	}
	const port = 2222
	s := &Sshd{
		Addr:     net.JoinHostPort(n.IP, fmt.Sprint(port)),
		Port:     port,
		HostKey:  hostPub,
		Identity: filepath.Join(dir, "id_ed25519"),
		LogPath:  filepath.Join(dir, "sshd.log"),
	}
	s.KnownHosts = filepath.Join(dir, "known_hosts")
	line := fmt.Sprintf("[%s]:%d %s", n.IP, port, ssh.MarshalAuthorizedKey(hostPub))
	if err := os.WriteFile(s.KnownHosts, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := strings.Join([]string{
		fmt.Sprintf("Port %d", port),
		"ListenAddress " + n.IP,
		"HostKey " + filepath.Join(dir, "host_key"),
		"PidFile none",
		"PermitRootLogin prohibit-password",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"UsePAM no",
		"StrictModes no",
		"AuthorizedKeysFile " + authorized,
		"Subsystem sftp internal-sftp",
		"AllowStreamLocalForwarding yes",
		"MaxStartups 100:30:200",
		"LogLevel VERBOSE",
	}, "\n") + "\n"
	cfgPath := filepath.Join(dir, "sshd_config")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	// sshd needs its privilege separation directory.
	if _, err := os.Stat("/run/sshd"); os.IsNotExist(err) {
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			t.Fatal(err)
		}
	}
	p, err := startProcess(s.LogPath, nil, "nsenter", n.nsenterArgs(sshd, []string{"-D", "-e", "-f", cfgPath})...)
	if err != nil {
		t.Fatal(err)
	}
	s.proc = p
	t.Cleanup(func() {
		if !p.exited() {
			p.kill()
		}
		if t.Failed() {
			t.Logf("sshd log (tail):\n%s", Tail(s.LogPath, 60))
		}
	})
	err = Poll(20*time.Second, func() error {
		if p.exited() {
			return fmt.Errorf("sshd exited: %v", p.err)
		}
		r := n.Run(nil, "bash", "-c", fmt.Sprintf("exec 3<>/dev/tcp/%s/%d", n.IP, port))
		if r.Code != 0 {
			return fmt.Errorf("connect: %s", r)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("start sshd: %v\nsshd log:\n%s", err, Tail(s.LogPath, 40))
	}
	return s
}

// writeKey writes a new ed25519 private key in OpenSSH format to path and
// returns its public key.
func writeKey(t testing.TB, path string) ssh.PublicKey {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return sp
}
