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

// Client sends requests to an agent. It is safe for concurrent use.
// Requests are answered one at a time, in the order sent; a request may be
// sent before the answers to earlier ones arrived (CommitAsync), so that
// the agent finds the next one waiting when it finishes one.
type Client struct {
	wmu sync.Mutex // guards enc and sent
	enc *gob.Encoder
	// sent counts the requests sent; read the answers read. An answer is
	// read by the caller of its request, in turn.
	sent uint64
	rmu  sync.Mutex // guards dec, read and broken
	turn *sync.Cond // on rmu: read changed
	dec  *gob.Decoder
	read uint64
	// broken is set once the stream failed: no answer comes any more.
	broken error
	// TempPath is the absolute path of TempDir on the target, known after
	// Hello.
	TempPath string
}

// NewClient returns a client that writes requests to w and reads answers
// from r.
func NewClient(r io.Reader, w io.Writer) *Client {
	c := &Client{enc: gob.NewEncoder(w), dec: gob.NewDecoder(r)}
	c.turn = sync.NewCond(&c.rmu)
	return c
}

func (c *Client) call(req *Request) (Response, error) {
	return c.send(req)()
}

// send sends req and returns the function that waits for its answer, which
// must be called (answers are read in turn).
func (c *Client) send(req *Request) func() (Response, error) {
	c.wmu.Lock()
	err := c.enc.Encode(req)
	n := c.sent
	if err == nil {
		c.sent++
	}
	c.wmu.Unlock()
	if err != nil {
		err = fmt.Errorf("send %s to the target agent: %w", req.Op, err)
		c.rmu.Lock()
		if c.broken == nil {
			c.broken = err
		}
		c.turn.Broadcast()
		c.rmu.Unlock()
		return func() (Response, error) { return Response{}, err }
	}
	return func() (Response, error) {
		c.rmu.Lock()
		defer c.rmu.Unlock()
		for c.read != n && c.broken == nil {
			c.turn.Wait()
		}
		if c.broken != nil {
			return Response{}, c.broken
		}
		var res Response
		err := c.dec.Decode(&res)
		c.read++
		c.turn.Broadcast()
		if err != nil {
			c.broken = fmt.Errorf("read the target agent's answer to %s: %w", req.Op, err)
			return Response{}, c.broken
		}
		if res.Err != "" {
			return Response{}, fmt.Errorf("%w: %s: %s", ErrAgent, req.Op, res.Err)
		}
		return res, nil
	}
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

// Blocks returns the checksums of the blocks of bs bytes of the target file
// path, and whether the agent lets the sender patch it in place (asked
// with inPlace, for a sender's file of size bytes); otherwise it copied the
// file to the temporary file temp to patch.
func (c *Client) Blocks(path, temp string, bs int, size int64, inPlace bool) ([]byte, bool, error) {
	res, err := c.call(&Request{Op: OpBlocks, Paths: []string{path}, Temp: temp, BlockSize: bs, Size: size, InPlace: inPlace})
	if err != nil {
		return nil, false, err
	}
	return res.Sums, res.InPlace, nil
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

// CommitAsync sends a Commit request and returns the function that waits
// for its answer; it must be called, and answers are read in the order
// the requests were sent. Another goroutine than the one sending further
// requests must wait: the agent writes an answer before it reads on.
func (c *Client) CommitAsync(commits []Commit) func() error {
	if len(commits) == 0 {
		return func() error { return nil }
	}
	wait := c.send(&Request{Op: OpCommit, Commits: commits})
	return func() error {
		_, err := wait()
		return err
	}
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
