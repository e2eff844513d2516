package rbd

import (
	"fmt"
	"os"

	"github.com/stowage/stowage/plugins/volume"
)

// Name is the provider's driver name.
const Name = "stowage.rbd"

// version is reported by Info.
const version = "0.1.0"

// DefaultRunDir is where the provider mounts the FUSE files of staged
// volumes when Config.RunDir is empty.
const DefaultRunDir = "/run/stowage-rbd"

// Config says which cluster, pool and identity the provider uses.
type Config struct {
	// ConfFile is the path of ceph.conf (mon host and auth settings).
	ConfFile string
	// Keyring is the path of the keyring holding the user's key; empty
	// means the keyring that ConfFile names. The provider hands the path
	// to librados and never reads the key itself.
	Keyring string
	// User is the Ceph user without "client."; empty means "admin".
	User string
	// Pool is the RBD pool the volumes live in.
	Pool string
	// Namespace is the RADOS namespace in the pool; empty means none.
	Namespace string
	// HostID names this host in the locks it takes; empty means the host
	// name.
	HostID string
	// RunDir is where FUSE files of staged volumes are mounted; empty
	// means DefaultRunDir.
	RunDir string
}

// resolve checks c and fills in the defaults.
func (c Config) resolve() (Config, error) {
	if c.ConfFile == "" {
		return c, fmt.Errorf("%w: no ceph.conf given (--ceph-conf FILE)", volume.ErrInvalid)
	}
	if _, err := os.Stat(c.ConfFile); err != nil {
		return c, fmt.Errorf("%w: ceph.conf: %w", volume.ErrInvalid, err)
	}
	if c.Keyring != "" {
		if _, err := os.Stat(c.Keyring); err != nil {
			return c, fmt.Errorf("%w: keyring: %w", volume.ErrInvalid, err)
		}
	}
	if c.Pool == "" {
		return c, fmt.Errorf("%w: no pool given (--pool POOL)", volume.ErrInvalid)
	}
	if c.User == "" {
		c.User = "admin"
	}
	if c.HostID == "" {
		h, err := os.Hostname()
		if err != nil {
			return c, fmt.Errorf("%w: host ID: %w", volume.ErrInvalid, err)
		}
		c.HostID = h
	}
	if err := checkHostID(c.HostID); err != nil {
		return c, err
	}
	if c.RunDir == "" {
		c.RunDir = DefaultRunDir
	}
	return c, nil
}
