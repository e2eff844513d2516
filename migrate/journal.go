package migrate

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/stowage/stowage/migrate/manifest"
)

// journal is what the source host keeps of a migration between runs, so
// that a rerun after an interruption continues it: the target, and whether
// this migration created the target volume (then it is not "an existing
// volume" that needs --force).
type journal struct {
	Version int    `json:"version"`
	Volume  string `json:"volume"`
	// Target is the target URL (no secrets) and TargetVolume the name there.
	Target       string `json:"target"`
	TargetVolume string `json:"target_volume"`
	// CreatedTarget is set before the target volume is created; Forced
	// when the migration was started into an existing one with --force.
	// Either lets a rerun continue into the existing target.
	CreatedTarget bool      `json:"created_target"`
	Forced        bool      `json:"forced,omitempty"`
	Phase         string    `json:"phase"`
	StartedAt     time.Time `json:"started_at"`
	UpdatedAt     time.Time `json:"updated_at"`
	// Frozen lists the containers this migration froze, or is about to
	// freeze: each is written here before its freeze, so that a rerun
	// after a kill thaws exactly these, and cleared once they are
	// released.
	Frozen []Consumer `json:"frozen,omitempty"`
}

const journalVersion = 1

func journalPath(dir, vol string) string { return filepath.Join(dir, vol+".json") }

// loadJournal returns the journal of vol, or nil when there is none.
func loadJournal(dir, vol string) (*journal, error) {
	b, err := os.ReadFile(journalPath(dir, vol))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read migration journal: %w", err)
	}
	var j journal
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, fmt.Errorf("read migration journal %s: %w", journalPath(dir, vol), err)
	}
	if j.Version != journalVersion {
		return nil, fmt.Errorf("read migration journal %s: version %d is not supported (want %d)", journalPath(dir, vol), j.Version, journalVersion)
	}
	return &j, nil
}

// save writes the journal by temp file, fsync and rename.
func (j *journal) save(dir string) error {
	j.Version = journalVersion
	j.UpdatedAt = time.Now().UTC()
	b, err := json.MarshalIndent(j, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("write migration journal: %w", err)
	}
	path := journalPath(dir, j.Volume)
	tmp, err := os.CreateTemp(dir, ".journal-*")
	if err != nil {
		return fmt.Errorf("write migration journal: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("write migration journal: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write migration journal: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write migration journal: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write migration journal: %w", err)
	}
	return nil
}

// hashesPath is where the source's hashes of an unfinished migration are
// kept, next to its journal.
func hashesPath(dir, vol string) string { return filepath.Join(dir, vol+".hashes") }

func removeJournal(dir, vol string) error {
	if err := manifest.RemoveHashes(hashesPath(dir, vol)); err != nil {
		return err
	}
	if err := os.Remove(journalPath(dir, vol)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove migration journal: %w", err)
	}
	return nil
}
