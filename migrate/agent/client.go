package agent

import (
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/stowage/stowage/migrate/manifest"
)

// ErrAgent marks an error the agent answered (as opposed to a broken
// stream).
var ErrAgent = errors.New("target agent")

// Client sends requests to an agent. It is safe for concurrent use; requests
// are answered one at a time.
type Client struct {
	mu  sync.Mutex // guards enc and dec: one request in flight
	enc *gob.Encoder
	dec *gob.Decoder
	// TempPath is the absolute path of TempDir on the target, known after
	// Hello.
	TempPath string
}

// NewClient returns a client that writes requests to w and reads answers
// from r.
func NewClient(r io.Reader, w io.Writer) *Client {
	return &Client{enc: gob.NewEncoder(w), dec: gob.NewDecoder(r)}
}

func (c *Client) call(req *Request) (Response, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.enc.Encode(req); err != nil {
		return Response{}, fmt.Errorf("send %s to the target agent: %w", req.Op, err)
	}
	var res Response
	if err := c.dec.Decode(&res); err != nil {
		return Response{}, fmt.Errorf("read the target agent's answer to %s: %w", req.Op, err)
	}
	if res.Err != "" {
		return Response{}, fmt.Errorf("%w: %s: %s", ErrAgent, req.Op, res.Err)
	}
	return res, nil
}

// Hello opens the session on root, the target tree.
func (c *Client) Hello(root string) error {
	res, err := c.call(&Request{Op: OpHello, Version: Version, Root: root})
	if err != nil {
		return err
	}
	c.TempPath = res.TempPath
	return nil
}

// Manifest returns the target's manifest, with hashes when hash is true
// (reusing those of files unchanged since the last one).
func (c *Client) Manifest(hash bool) (*manifest.Manifest, error) {
	return c.manifest(&Request{Op: OpManifest, Hash: hash})
}

// FreshManifest returns the target's manifest with every file hashed
// again (before the final pass; VerifyManifest reuses these hashes).
func (c *Client) FreshManifest() (*manifest.Manifest, error) {
	return c.manifest(&Request{Op: OpManifest, Hash: true, Fresh: true})
}

// VerifyManifest returns the target's manifest for the verification: a
// hash is reused only when the target's own walk took it and the file's
// inode, size, mtime and ctime are unchanged since, its ctime having been
// settled then; every other file is hashed afresh.
func (c *Client) VerifyManifest() (*manifest.Manifest, error) {
	return c.manifest(&Request{Op: OpManifest, Hash: true, Settled: true})
}

func (c *Client) manifest(req *Request) (*manifest.Manifest, error) {
	res, err := c.call(req)
	if err != nil {
		return nil, err
	}
	if res.Manifest == nil {
		return &manifest.Manifest{}, nil
	}
	return res.Manifest, nil
}

// Blocks copies the target file path to the temporary file temp and
// returns the checksums of its blocks of bs bytes.
func (c *Client) Blocks(path, temp string, bs int) ([]byte, error) {
	res, err := c.call(&Request{Op: OpBlocks, Paths: []string{path}, Temp: temp, BlockSize: bs})
	if err != nil {
		return nil, err
	}
	return res.Sums, nil
}

// Space returns the free space and the size of the target's file system.
func (c *Client) Space() (free, size int64, err error) {
	res, err := c.call(&Request{Op: OpSpace})
	if err != nil {
		return 0, 0, err
	}
	return res.Free, res.Size, nil
}

// Prepare empties the temporary directory.
func (c *Client) Prepare() error {
	_, err := c.call(&Request{Op: OpPrepare})
	return err
}

// Remove removes paths from the target.
func (c *Client) Remove(paths []string) error {
	if len(paths) == 0 {
		return nil
	}
	_, err := c.call(&Request{Op: OpRemove, Paths: paths})
	return err
}

// Apply creates entries and sets their metadata.
func (c *Client) Apply(entries []manifest.Entry) error {
	if len(entries) == 0 {
		return nil
	}
	_, err := c.call(&Request{Op: OpApply, Entries: entries})
	return err
}

// Commit moves temporary files into place.
func (c *Client) Commit(commits []Commit) error {
	if len(commits) == 0 {
		return nil
	}
	_, err := c.call(&Request{Op: OpCommit, Commits: commits})
	return err
}

// Link makes hard links.
func (c *Client) Link(entries []manifest.Entry) error {
	if len(entries) == 0 {
		return nil
	}
	_, err := c.call(&Request{Op: OpLink, Entries: entries})
	return err
}

// Finish removes the temporary directory and sets directory metadata.
func (c *Client) Finish(dirs []manifest.Entry) error {
	_, err := c.call(&Request{Op: OpFinish, Entries: dirs})
	return err
}
