// Package remote reaches the target host of a migration: it parses the
// target URL, opens one SSH connection with verified host keys and carries
// over it volumed's sockets on the target, SFTP and the migrate agent.
package remote

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/stowage/stowage/plugins/volume"
)

// Target is where a volume goes.
type Target struct {
	// User is the SSH user; empty for the local user's name.
	User string
	Host string
	Port int
	// Volume is the volume's name on the target; empty for the same name.
	Volume string
}

// Addr is host:port for dialing.
func (t Target) Addr() string { return net.JoinHostPort(t.Host, strconv.Itoa(t.Port)) }

// String is the target as a URL, without secrets.
func (t Target) String() string {
	u := url.URL{Scheme: "ssh", Host: t.Host}
	if t.Port != 22 {
		u.Host = t.Addr()
	} else if strings.Contains(t.Host, ":") {
		u.Host = "[" + t.Host + "]"
	}
	if t.User != "" {
		u.User = url.User(t.User)
	}
	if t.Volume != "" {
		u.Path = "/"
		u.RawQuery = url.Values{"volume": {t.Volume}}.Encode()
	}
	return u.String()
}

const targetForm = "ssh://[user@]host[:port][/?volume=NAME]"

// ParseTarget parses ssh://[user@]host[:port][/?volume=NAME]. The error
// names what is wrong and never repeats a password.
func ParseTarget(s string) (Target, error) {
	bad := func(format string, args ...any) (Target, error) {
		return Target{}, fmt.Errorf("%w: target: %s; use %s", volume.ErrInvalid, fmt.Sprintf(format, args...), targetForm)
	}
	u, err := url.Parse(s)
	if err != nil {
		// url's error repeats the input, which may hold a password.
		return bad("not a URL")
	}
	if u.Scheme != "ssh" {
		return bad("scheme %q is not supported", u.Scheme)
	}
	if u.Opaque != "" || u.Host == "" {
		return bad("no host")
	}
	t := Target{Host: u.Hostname(), Port: 22}
	if u.User != nil {
		if _, ok := u.User.Password(); ok {
			return bad("passwords are not accepted in the URL (use a key or an SSH agent)")
		}
		t.User = u.User.Username()
		if t.User == "" {
			return bad("empty user name")
		}
	}
	if t.Host == "" {
		return bad("no host")
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return bad("port %q is not a number from 1 to 65535", p)
		}
		t.Port = n
	} else if strings.HasSuffix(u.Host, ":") {
		return bad("empty port")
	}
	if u.Path != "" && u.Path != "/" {
		return bad("path %q is not supported (the target volume is given as ?volume=NAME)", u.Path)
	}
	if u.Fragment != "" {
		return bad("fragment %q is not supported", u.Fragment)
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return bad("query %q: %v", u.RawQuery, err)
	}
	for k, vs := range q {
		if k != "volume" {
			return bad("unknown parameter %q (known: volume)", k)
		}
		if len(vs) != 1 {
			return bad("parameter volume given %d times", len(vs))
		}
		if !volume.ValidName(vs[0]) {
			return bad("invalid volume name %q: must match "+volume.NameRule, vs[0])
		}
		t.Volume = vs[0]
	}
	return t, nil
}
