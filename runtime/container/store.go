package container

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/stowage/stowage/internal/atomicfile"

	"github.com/stowage/stowage/plugins/volume"
)

// Store keeps the containers under ROOT/containers.
type Store struct {
	dir string
}

// OpenStore returns the store of containers below root (the runtime root),
// creating ROOT/containers if needed.
func OpenStore(root string) (*Store, error) {
	dir := filepath.Join(root, "containers")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("make container dir: %w", err)
	}
	return &Store{dir: dir}, nil
}

// Dir returns the directory of the container with ID id.
func (s *Store) Dir(id string) string { return filepath.Join(s.dir, id) }

// Create records a new container with the state Created, owned by this
// process. An empty cfg.Name becomes the first 12 digits of the ID. A name
// in use is ErrExists.
func (s *Store) Create(cfg Config) (Container, error) {
	if !isID(cfg.ID) {
		return Container{}, fmt.Errorf("%w: container ID %q", volume.ErrInvalid, cfg.ID)
	}
	if cfg.Name == "" {
		cfg.Name = cfg.ID[:12]
	}
	if err := ValidateName(cfg.Name); err != nil {
		return Container{}, err
	}
	unlock, err := lockFile(filepath.Join(s.dir, ".lock"))
	if err != nil {
		return Container{}, err
	}
	defer unlock()
	all, err := s.List()
	if err != nil {
		return Container{}, err
	}
	for _, c := range all {
		if c.Config.Name == cfg.Name {
			return Container{}, fmt.Errorf("container name %q: %w: in use by container %s", cfg.Name, volume.ErrExists, c.ID()[:12])
		}
	}
	dir := s.Dir(cfg.ID)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return Container{}, fmt.Errorf("make container dir: %w", err)
	}
	for _, sub := range []string{"upper", "work", "rootfs"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o755); err != nil {
			os.RemoveAll(dir)
			return Container{}, fmt.Errorf("make container dir: %w", err)
		}
	}
	c := Container{Config: cfg, Dir: dir, State: State{Status: Created, MonitorPID: os.Getpid()}}
	c.State.MonitorStart, _ = procStart(os.Getpid())
	// The state first: a reader that finds config.json finds the state.
	if err := writeState(dir, c.State); err != nil {
		os.RemoveAll(dir)
		return Container{}, err
	}
	write := writeJSON
	if cfg.AutoRemove {
		// A container removed when it ends has nothing to keep across a
		// host crash: its configuration goes to disk as its state does,
		// without the two flushes that would delay its start.
		write = replaceJSON
	}
	if err := write(filepath.Join(dir, "config.json"), cfg); err != nil {
		os.RemoveAll(dir)
		return Container{}, err
	}
	return c, nil
}

// load reads the container with ID id.
func (s *Store) load(id string) (Container, error) {
	c := Container{Dir: s.Dir(id)}
	if err := readJSON(filepath.Join(c.Dir, "config.json"), &c.Config); err != nil {
		return c, err
	}
	if err := readJSON(filepath.Join(c.Dir, "state.json"), &c.State); err != nil {
		// State is written without fsync (see writeState): after the host
		// crashed it may be gone, and so is everything it described.
		c.State = State{Status: Exited, ExitCode: -1, Error: "state lost when the host stopped"}
	}
	return c, nil
}

// List returns every container, oldest first.
func (s *Store) List() ([]Container, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	var out []Container
	for _, e := range entries {
		if !e.IsDir() || !isID(e.Name()) {
			continue
		}
		c, err := s.load(e.Name())
		if errors.Is(err, fs.ErrNotExist) {
			continue // being created or removed
		}
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Config.Created.Before(out[j].Config.Created) })
	return out, nil
}

// Get returns the container that ref names: a full ID, a name, or a unique
// prefix of an ID. ErrNotFound when none matches; ErrInvalid when a prefix
// matches several.
func (s *Store) Get(ref string) (Container, error) {
	if ref == "" {
		return Container{}, fmt.Errorf("%w: empty container name", volume.ErrInvalid)
	}
	if isID(ref) {
		c, err := s.load(ref)
		if errors.Is(err, fs.ErrNotExist) {
			return Container{}, fmt.Errorf("container %q: %w", ref, volume.ErrNotFound)
		}
		return c, err
	}
	all, err := s.List()
	if err != nil {
		return Container{}, err
	}
	for _, c := range all {
		if c.Config.Name == ref {
			return c, nil
		}
	}
	var found []Container
	for _, c := range all {
		if strings.HasPrefix(c.ID(), ref) {
			found = append(found, c)
		}
	}
	switch len(found) {
	case 0:
		return Container{}, fmt.Errorf("container %q: %w", ref, volume.ErrNotFound)
	case 1:
		return found[0], nil
	}
	return Container{}, fmt.Errorf("%w: container ID prefix %q matches %d containers", volume.ErrInvalid, ref, len(found))
}

// SaveState replaces the state of the container with ID id.
func (s *Store) SaveState(id string, st State) error {
	return writeState(s.Dir(id), st)
}

// writeState replaces state.json in the container directory dir. Unlike
// config.json it is not fsynced: it says what processes, mounts and cgroups
// a container has now, none of which outlives the host, as runc keeps its
// state under /run. A process crash still leaves the old or the new state;
// a host crash may leave none, which load reads as exited. This keeps two
// disk flushes off every container start and stop.
func writeState(dir string, st State) error {
	file := filepath.Join(dir, "state.json")
	if err := atomicfile.ReplaceJSON(file, st); err != nil {
		return fmt.Errorf("write %s: %w", file, err)
	}
	return nil
}

// Remove deletes the container's directory with its upper layer and logs.
func (s *Store) Remove(id string) error {
	if err := os.RemoveAll(s.Dir(id)); err != nil {
		return fmt.Errorf("remove container %s: %w", id[:12], err)
	}
	return nil
}

// writeJSON writes v to file durably.
func writeJSON(file string, v any) error {
	if err := atomicfile.WriteJSON(file, v); err != nil {
		return fmt.Errorf("write %s: %w", file, err)
	}
	return nil
}

// replaceJSON writes v to file atomically, without fsync.
func replaceJSON(file string, v any) error {
	if err := atomicfile.ReplaceJSON(file, v); err != nil {
		return fmt.Errorf("write %s: %w", file, err)
	}
	return nil
}

func readJSON(file string, v any) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("read %s: %w", file, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decode %s: %w", file, err)
	}
	return nil
}
