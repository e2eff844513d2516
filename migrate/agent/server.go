package agent

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/gob"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/stowage/stowage/migrate/manifest"
)

// Config configures an agent.
type Config struct {
	Log *slog.Logger
	// SessionDir holds the records of the agents serving each tree, by
	// which a new agent ends an earlier one of the same tree whose
	// connection was cut; default /run/stowage/migrate.
	SessionDir string
}

// Serve answers requests read from r on w until r ends (nil) or ctx is
// done. A failed request is answered with its error and the session goes
// on; a broken stream ends Serve with the error.
func Serve(ctx context.Context, r io.Reader, w io.Writer, cfg Config) error {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.SessionDir == "" {
		cfg.SessionDir = defaultSessionDir
	}
	log := cfg.Log
	s := &server{log: log, sessions: cfg.SessionDir}
	defer s.release()
	enc := gob.NewEncoder(w)
	// The next request is read and decoded while one is handled.
	type next struct {
		req *Request
		err error
	}
	reqs := make(chan next, 1)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		dec := gob.NewDecoder(r)
		for {
			req := &Request{}
			err := dec.Decode(req)
			select {
			case reqs <- next{req, err}:
			case <-stop:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	for {
		n := <-reqs
		if err := n.err; err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("read request: %w", err)
		}
		req := n.req
		if err := ctx.Err(); err != nil {
			return err
		}
		res, err := s.handle(ctx, req)
		if err != nil {
			log.Debug("agent request", "op", string(req.Op), "error", err)
			res = Response{Err: err.Error()}
		}
		if err := enc.Encode(&res); err != nil {
			return fmt.Errorf("write response: %w", err)
		}
	}
}

type server struct {
	log      *slog.Logger
	sessions string
	root     string
	// prev is the last manifest with hashes, to reuse hashes of files that
	// did not change.
	prev *manifest.Manifest
	// known holds the hashes of files committed since the last manifest,
	// with the inode facts that make them valid.
	known   map[string]manifest.Entry
	knownMu sync.Mutex // guards known while a commit request runs
	// prevIndex is prev's index (of prevIndexOf), for OpBlocks.
	prevIndex   map[string]*manifest.Entry
	prevIndexOf *manifest.Manifest
}

// release removes this agent's session record.
func (s *server) release() {
	if s.root != "" {
		releaseSession(s.sessions, s.root)
	}
}

func (s *server) abs(rel string) string {
	if rel == "." {
		return s.root
	}
	return s.root + "/" + rel
}

func (s *server) temp() string { return filepath.Join(s.root, TempDir) }

// hashesPath is where the hashes of the tree's files are kept between
// agents of one migration.
func (s *server) hashesPath() string {
	return hashesPath(s.sessions, s.root)
}

func (s *server) handle(ctx context.Context, req *Request) (Response, error) {
	if req.Op != OpHello && s.root == "" {
		return Response{}, errNoSession
	}
	switch req.Op {
	case OpHello:
		if req.Version != Version {
			return Response{}, fmt.Errorf("protocol version %d is not supported: this agent speaks version %d; install the same stow release on both hosts", req.Version, Version)
		}
		if !filepath.IsAbs(req.Root) {
			return Response{}, fmt.Errorf("invalid root %q: must be an absolute path", req.Root)
		}
		fi, err := os.Stat(req.Root)
		if err != nil {
			return Response{}, fmt.Errorf("open root: %w", err)
		}
		if !fi.IsDir() {
			return Response{}, fmt.Errorf("open root %s: not a directory", req.Root)
		}
		root := filepath.Clean(req.Root)
		if err := takeOver(s.sessions, root); err != nil {
			return Response{}, err
		}
		s.root = root
		// Hashes an earlier agent of the same tree kept.
		s.prev = manifest.LoadHashes(s.hashesPath())
		return Response{Version: Version, TempPath: s.temp()}, nil
	case OpManifest:
		opts := manifest.WalkOptions{Hash: req.Hash, Exclude: []string{TempDir}}
		if req.Hash && !req.Fresh {
			opts.Previous = s.previous()
		}
		// A fresh walk waits for young files to settle, so that the
		// verification can reuse its hashes.
		opts.Settle = req.Fresh
		if req.Settled {
			// Hashes that came with a commit (the sender's) have no
			// HashedAt and are taken afresh.
			opts.Settled = manifest.SettledHash
		}
		m, err := manifest.Walk(ctx, s.root, opts)
		if err != nil {
			return Response{}, fmt.Errorf("walk target: %w", err)
		}
		if req.Hash {
			s.prev, s.known = m, nil
		}
		if req.Settled {
			// The verification: the migration is at its end.
			_ = manifest.RemoveHashes(s.hashesPath())
		}
		return Response{Manifest: m}, nil
	case OpSpace:
		free, size, err := space(s.root)
		if err != nil {
			return Response{}, err
		}
		return Response{Free: free, Size: size}, nil
	case OpBlocks:
		if len(req.Paths) != 1 {
			return Response{}, fmt.Errorf("blocks: want one path, have %d", len(req.Paths))
		}
		sums, inPlace, err := s.blocks(ctx, req.Paths[0], req.Temp, req.BlockSize, req.InPlace, req.Size)
		if err != nil {
			return Response{}, err
		}
		return Response{Sums: sums, InPlace: inPlace}, nil
	case OpPrepare:
		if err := os.RemoveAll(s.temp()); err != nil {
			return Response{}, fmt.Errorf("clear temporary directory: %w", err)
		}
		for _, dir := range append([]string{s.temp()}, s.workerDirs()...) {
			if err := os.Mkdir(dir, 0o700); err != nil {
				return Response{}, fmt.Errorf("make temporary directory: %w", err)
			}
		}
		return Response{TempPath: s.temp()}, nil
	case OpRemove:
		paths := slices.Clone(req.Paths)
		slices.Sort(paths)
		slices.Reverse(paths)
		for _, p := range paths {
			if err := checkPath(p); err != nil {
				return Response{}, err
			}
			if p == "." {
				return Response{}, errors.New("invalid path \".\": the root cannot be removed")
			}
			if err := os.RemoveAll(s.abs(p)); err != nil {
				return Response{}, fmt.Errorf("remove %s: %w", manifest.Quote(p), err)
			}
		}
		return Response{}, nil
	case OpApply:
		for i := range req.Entries {
			if err := s.apply(&req.Entries[i]); err != nil {
				return Response{}, err
			}
		}
		return Response{}, nil
	case OpCommit:
		return Response{}, s.commitAll(req.Commits)
	case OpLink:
		for i := range req.Entries {
			if err := s.link(&req.Entries[i]); err != nil {
				return Response{}, err
			}
		}
		return Response{}, nil
	case OpFinish:
		if err := os.RemoveAll(s.temp()); err != nil {
			return Response{}, fmt.Errorf("remove temporary directory: %w", err)
		}
		// Keep the hashes for an agent that resumes after this one is cut
		// off; they are only a cache.
		if m := s.previous(); m != nil && s.hashesPath() != "" {
			if err := manifest.SaveHashes(s.hashesPath(), m); err != nil {
				s.log.Debug("keep hashes", "error", err)
			}
		}
		dirs := slices.Clone(req.Entries)
		slices.SortFunc(dirs, func(a, b manifest.Entry) int { return cmp.Compare(b.Path, a.Path) })
		for i := range dirs {
			e := &dirs[i]
			if err := checkPath(e.Path); err != nil {
				return Response{}, err
			}
			if e.Type != manifest.Dir {
				return Response{}, fmt.Errorf("finish %s: not a directory entry", manifest.Quote(e.Path))
			}
			if err := setMeta(s.abs(e.Path), e, true); err != nil {
				return Response{}, err
			}
		}
		return Response{}, nil
	}
	return Response{}, fmt.Errorf("unknown request %q", req.Op)
}

// apply makes e exist with its metadata (directory mtime aside).
func (s *server) apply(e *manifest.Entry) error {
	if err := checkPath(e.Path); err != nil {
		return err
	}
	path := s.abs(e.Path)
	if e.Type == manifest.Regular {
		if e.LinkTo != "" {
			return s.link(e)
		}
		return setMeta(path, e, false)
	}
	if err := create(path, e); err != nil {
		return fmt.Errorf("create %s: %w", manifest.Quote(e.Path), err)
	}
	return setMeta(path, e, e.Type == manifest.Dir)
}

func (s *server) commit(c *Commit, dir string) error {
	e := &c.Entry
	if err := checkPath(e.Path); err != nil {
		return err
	}
	if e.Type != manifest.Regular || e.LinkTo != "" {
		return fmt.Errorf("commit %s: not a regular file", manifest.Quote(e.Path))
	}
	// A file patched in place (OpBlocks) is committed where it is.
	inPlace := c.InPlace && !c.Inline
	if !inPlace && (c.Temp == "" || filepath.Base(c.Temp) != c.Temp || c.Temp == "." || c.Temp == "..") {
		return fmt.Errorf("commit %s: invalid temporary name %q", manifest.Quote(e.Path), c.Temp)
	}
	tmp := filepath.Join(s.temp(), c.Temp)
	final := s.abs(e.Path)
	if inPlace {
		if fi, err := os.Lstat(final); err != nil || !fi.Mode().IsRegular() {
			return fmt.Errorf("commit %s in place: not a regular file any more", manifest.Quote(e.Path))
		}
		tmp = final
	}
	if c.Inline {
		// A small file is written with its metadata through one
		// descriptor, which saves the lookups of its path. One new to
		// the target is written in place, which saves a rename: there is
		// nothing to replace, and what an interruption leaves short, or
		// without its metadata (the mtime comes last), the next round's
		// manifest shows and sends again. Otherwise it is written in the
		// directory of the commit worker (dir) and takes its place.
		have, err := writeFile(final, c.Data, e, "")
		if errors.Is(err, errExist) {
			have, err = writeFile(filepath.Join(dir, c.Temp), c.Data, e, final)
		}
		if err != nil {
			return fmt.Errorf("commit %s: %w", manifest.Quote(e.Path), err)
		}
		s.remember(c, have)
		return nil
	}
	if err := os.Truncate(tmp, e.Size); err != nil {
		return fmt.Errorf("commit %s: %w", manifest.Quote(e.Path), err)
	}
	if err := setMeta(tmp, e, false); err != nil {
		return err
	}
	if !inPlace {
		if err := replace(tmp, final); err != nil {
			return fmt.Errorf("commit %s: %w", manifest.Quote(e.Path), err)
		}
	}
	if c.Hashed {
		if have, _, err := manifest.Stat(final, e.Path); err == nil {
			s.remember(c, have)
		}
	}
	return nil
}

// remember keeps the hash of the content that c committed, with the facts
// have of the file after the commit, for the next manifest.
func (s *server) remember(c *Commit, have manifest.Entry) {
	e := &c.Entry
	sum := ""
	switch {
	case c.Hashed:
		sum = e.SHA256
	case c.Inline && int64(len(c.Data)) == e.Size:
		h := sha256.Sum256(c.Data)
		sum = hex.EncodeToString(h[:])
	}
	if sum == "" || have.Size != e.Size {
		return
	}
	have.SHA256 = sum
	s.knownMu.Lock()
	defer s.knownMu.Unlock()
	if s.known == nil {
		s.known = map[string]manifest.Entry{}
	}
	s.known[e.Path] = have
}

// commitWorkers is the number of files a commit request writes at the same
// time (the sender mixes directories in a request: files created in the
// same directory wait for each other on its lock).
const commitWorkers = 4

// workerDirs are the directories of the commit workers in the temporary
// directory, made by OpPrepare.
func (s *server) workerDirs() []string {
	dirs := make([]string, commitWorkers)
	for k := range dirs {
		dirs[k] = filepath.Join(s.temp(), "c"+strconv.Itoa(k))
	}
	return dirs
}

// commitAll commits cs, several at a time; the error is that of the first
// commit in cs that failed.
func (s *server) commitAll(cs []Commit) error {
	errs := make([]error, len(cs))
	var next atomic.Int64
	var wg sync.WaitGroup
	dirs := s.workerDirs()
	for k := range min(commitWorkers, len(cs)) {
		dir := dirs[k]
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(cs) {
					return
				}
				if errs[i] = s.commit(&cs[i], dir); errs[i] != nil {
					next.Store(int64(len(cs)))
					return
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// previous returns the last manifest with the hashes of the files
// committed since, for a walk to reuse.
func (s *server) previous() *manifest.Manifest {
	if len(s.known) == 0 {
		return s.prev
	}
	m := &manifest.Manifest{}
	if s.prev != nil {
		for _, e := range s.prev.Entries {
			if _, ok := s.known[e.Path]; !ok {
				m.Entries = append(m.Entries, e)
			}
		}
	}
	for _, e := range s.known {
		m.Entries = append(m.Entries, e)
	}
	return m
}

func (s *server) link(e *manifest.Entry) error {
	if err := checkPath(e.Path); err != nil {
		return err
	}
	if err := checkPath(e.LinkTo); err != nil {
		return err
	}
	if e.LinkTo == "" {
		return fmt.Errorf("link %s: no link target", manifest.Quote(e.Path))
	}
	path := s.abs(e.Path)
	if err := os.RemoveAll(path); err != nil {
		return fmt.Errorf("link %s: %w", manifest.Quote(e.Path), err)
	}
	if err := os.Link(s.abs(e.LinkTo), path); err != nil {
		return fmt.Errorf("link %s to %s: %w", manifest.Quote(e.Path), manifest.Quote(e.LinkTo), err)
	}
	return nil
}

// errExist says that a file to create exists already.
var errExist = errors.New("file exists")

// replace renames tmp to path, first removing a directory that is in the
// way (rename replaces anything else).
func replace(tmp, path string) error {
	err := rename(tmp, path)
	if err == nil {
		return nil
	}
	if fi, lerr := os.Lstat(path); lerr == nil && fi.IsDir() {
		if err := os.RemoveAll(path); err != nil {
			return err
		}
		return rename(tmp, path)
	}
	return err
}
