package agent

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// defaultSessionDir holds a record of the agent serving each target tree.
const defaultSessionDir = "/run/stowage/migrate"

// session is the record of the agent serving a tree: its PID and that of
// the sshd process of its SSH connection.
type session struct {
	PID  int `json:"pid"`
	SSHD int `json:"sshd"`
}

func sessionPath(dir, root string) string {
	sum := sha256.Sum256([]byte(root))
	return filepath.Join(dir, hex.EncodeToString(sum[:8])+".json")
}

// hashesPath is where the agents of root keep the hashes of its files.
func hashesPath(dir, root string) string {
	return strings.TrimSuffix(sessionPath(dir, root), ".json") + ".hashes"
}

// releaseSession removes the record of root if it is this agent's.
func releaseSession(dir, root string) {
	path := sessionPath(dir, root)
	b, err := os.ReadFile(path)
	var rec session
	if err == nil && json.Unmarshal(b, &rec) == nil && rec.PID == os.Getpid() {
		os.Remove(path)
	}
}

// takeOver ends the SSH connection of an earlier agent on the same tree
// that is still running, and records this agent as the tree's. A
// connection whose link was cut lives on at this end until TCP gives up,
// and its SFTP server keeps files open in the volume, which then cannot be
// unmounted; the new run of the same migration ends it.
func takeOver(dir, root string) error {
	path := sessionPath(dir, root)
	if b, err := os.ReadFile(path); err == nil {
		var old session
		if json.Unmarshal(b, &old) == nil && old.PID != os.Getpid() && isAgent(old.PID) {
			if err := endSession(old); err != nil {
				return fmt.Errorf("end the earlier migration session on this volume (pid %d): %w", old.PID, err)
			}
		}
	}
	me := session{PID: os.Getpid(), SSHD: sshdAncestor(os.Getppid())}
	b, err := json.Marshal(me)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("record the migration session: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("record the migration session: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("record the migration session: %w", err)
	}
	return nil
}

// endSession stops an earlier agent and its sshd connection process, and
// waits until they and the connection's other children (its SFTP server)
// are gone.
func endSession(old session) error {
	pids := []int{old.PID}
	if old.SSHD > 0 && comm(old.SSHD) == "sshd" {
		pids = append(pids, old.SSHD)
		pids = append(pids, children(old.SSHD)...)
		_ = syscall.Kill(old.SSHD, syscall.SIGTERM)
	}
	_ = syscall.Kill(old.PID, syscall.SIGKILL)
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range pids {
		for alive(pid) {
			if time.Now().After(deadline) {
				return fmt.Errorf("process %d still runs 10s after it was told to stop", pid)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

// isAgent reports whether pid runs `stow migrate agent`.
func isAgent(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && bytes.Contains(b, []byte("migrate\x00agent"))
}

// sshdAncestor returns the nearest ancestor of pid (pid included) named
// sshd, or 0.
func sshdAncestor(pid int) int {
	for i := 0; i < 8 && pid > 1; i++ {
		if comm(pid) == "sshd" {
			return pid
		}
		pid = parent(pid)
	}
	return 0
}

func comm(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// parent returns the parent PID of pid from /proc/PID/stat, 0 if unknown.
func parent(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name, in parentheses, may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0
	}
	n, _ := strconv.Atoi(f[1])
	return n
}

// children returns the PIDs whose parent is pid.
func children(pid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err == nil && parent(n) == pid {
			out = append(out, n)
		}
	}
	return out
}

func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	if errors.Is(err, syscall.ESRCH) {
		return false
	}
	// A zombie has not let go of nothing but its PID.
	b, rerr := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if rerr != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || !strings.HasPrefix(strings.TrimSpace(string(b[i+1:])), "Z")
}
