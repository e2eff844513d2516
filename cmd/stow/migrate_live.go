package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/stowage/stowage/migrate"
	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/runtime/container"
)

// What --after accepts.
const (
	afterResume = "resume"
	afterStop   = "stop"
)

// defaultDockerHost is dockerd's socket when DOCKER_HOST is not set.
const defaultDockerHost = "unix:///var/run/docker.sock"

// consumerKind says which runtime runs a consumer.
type consumerKind string

const (
	kindStow   consumerKind = "stow"
	kindDocker consumerKind = "docker"
)

// consumer is a container that holds a volume mounted.
type consumer struct {
	kind consumerKind
	id   string
	name string
	// running says it has processes to freeze; paused that it was paused
	// already, by someone else, and is left as it is.
	running, paused bool
}

func (c consumer) String() string { return string(c.kind) + ":" + c.name }

// dockerHolder is a Docker container with the mount IDs dockerd gave
// volumed for the volume.
type dockerHolder struct {
	ID, Name        string
	Running, Paused bool
	MountIDs        []string
}

// mapConsumers maps each of a volume's mount IDs to the container that
// holds it: a stow container records its mount IDs (its ID, "-" and the
// volume's index), a Docker container's come from dockerd's records. It
// returns the consumers, each once, and the mount IDs no container holds.
func mapConsumers(vol string, mounts map[string]int, stow []container.Container, docker []dockerHolder) ([]consumer, []string) {
	holder := map[string]consumer{}
	for _, c := range stow {
		for _, m := range c.State.Mounts {
			if m.Name == vol {
				holder[m.ID] = consumer{kind: kindStow, id: c.ID(), name: c.Config.Name, running: c.State.Status == container.Running}
			}
		}
	}
	for _, d := range docker {
		for _, id := range d.MountIDs {
			holder[id] = consumer{kind: kindDocker, id: d.ID, name: d.Name, running: d.Running, paused: d.Paused}
		}
	}
	var found []consumer
	var unknown []string
	for _, id := range slices.Sorted(maps.Keys(mounts)) {
		c, ok := holder[id]
		if !ok {
			unknown = append(unknown, id)
			continue
		}
		if !slices.ContainsFunc(found, func(f consumer) bool { return f.kind == c.kind && f.id == c.id }) {
			found = append(found, c)
		}
	}
	return found, unknown
}

// liveFreezer freezes a volume's consumers on this host for the final pass
// of `stow migrate --live`: stow containers with the cgroup freezer,
// Docker containers with docker pause.
type liveFreezer struct {
	engine *container.Engine
	root   string
	docker *dockerClient
	after  string
	log    *slog.Logger
}

var _ migrate.Freezer = (*liveFreezer)(nil)

// Freeze implements migrate.Freezer.
func (f *liveFreezer) Freeze(ctx context.Context, vol string, mounts map[string]int, record func(migrate.Consumer) error) (*migrate.Frozen, error) {
	stow, err := f.engine.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("list stow containers: %w", err)
	}
	var docker []dockerHolder
	var dockerErr error
	if f.docker != nil {
		docker, dockerErr = f.docker.holders(ctx, vol)
	}
	found, unknown := mapConsumers(vol, mounts, stow, docker)
	if len(unknown) > 0 {
		where := "stow containers below " + f.root
		switch {
		case f.docker == nil:
			where += "; no Docker daemon"
		case dockerErr != nil:
			where += fmt.Sprintf("; Docker containers at %s could not be listed: %v", f.docker.host, dockerErr)
		default:
			where += "; Docker containers at " + f.docker.host
		}
		return nil, fmt.Errorf("%w: volume %q is mounted under mount IDs %s, which belong to no container that can be frozen (looked at %s); stop what holds them and rerun",
			volume.ErrInUse, vol, strings.Join(unknown, ", "), where)
	}
	// A stow container paused by someone else is left as it is, as a
	// paused Docker one is.
	for i, c := range found {
		if c.kind == kindStow && c.running {
			j := slices.IndexFunc(stow, func(s container.Container) bool { return s.ID() == c.id })
			if found[i].paused, err = f.engine.Paused(stow[j]); err != nil {
				return nil, err
			}
		}
	}
	var frozen []consumer
	thaw := func(ctx context.Context) error {
		var errs []error
		for _, c := range slices.Backward(frozen) {
			errs = append(errs, f.resume(ctx, c))
		}
		return errors.Join(errs...)
	}
	for _, c := range found {
		if !c.running || c.paused {
			continue // nothing runs that could write, or it is paused already
		}
		err := record(migrate.Consumer{Kind: string(c.kind), ID: c.id, Name: c.name})
		if err == nil {
			err = f.pause(ctx, c)
		}
		if err != nil {
			tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			return nil, errors.Join(err, thaw(tctx))
		}
		frozen = append(frozen, c)
	}
	names := make([]string, 0, len(found))
	for _, c := range found {
		names = append(names, c.String())
	}
	return &migrate.Frozen{
		Consumers: names,
		After:     f.after,
		Release: func(ctx context.Context, switched bool) error {
			if !switched || f.after != afterStop {
				return thaw(ctx)
			}
			var errs []error
			for _, c := range found {
				if !c.running {
					continue
				}
				if err := f.stop(ctx, c); err != nil {
					// Not left frozen: resumed, on the source.
					errs = append(errs, err, f.resume(ctx, c))
				}
			}
			return errors.Join(errs...)
		},
	}, nil
}

func (f *liveFreezer) pause(ctx context.Context, c consumer) error {
	f.log.Debug("freeze", "container", c.String())
	if c.kind == kindStow {
		return f.engine.Pause(ctx, c.id)
	}
	return f.docker.post(ctx, "/containers/"+c.id+"/pause")
}

func (f *liveFreezer) resume(ctx context.Context, c consumer) error {
	f.log.Debug("thaw", "container", c.String())
	if c.kind == kindStow {
		return f.engine.Unpause(ctx, c.id)
	}
	return f.docker.post(ctx, "/containers/"+c.id+"/unpause")
}

// Thaw implements migrate.Thawer: it thaws those of cs that are still
// paused.
func (f *liveFreezer) Thaw(ctx context.Context, cs []migrate.Consumer) ([]migrate.Consumer, error) {
	var thawed []migrate.Consumer
	var errs []error
	for _, mc := range cs {
		c := consumer{kind: consumerKind(mc.Kind), id: mc.ID, name: mc.Name}
		paused, err := f.paused(ctx, c)
		if err == nil && paused {
			if err = f.resume(ctx, c); err == nil {
				thawed = append(thawed, mc)
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("thaw %s: %w", c, err))
		}
	}
	return thawed, errors.Join(errs...)
}

// paused says whether consumer c is paused; one that is gone is not.
func (f *liveFreezer) paused(ctx context.Context, c consumer) (bool, error) {
	switch c.kind {
	case kindStow:
		sc, err := f.engine.Get(ctx, c.id)
		if errors.Is(err, volume.ErrNotFound) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		return f.engine.Paused(sc)
	case kindDocker:
		if f.docker == nil {
			return false, fmt.Errorf("%w: no Docker daemon at this host's DOCKER_HOST", volume.ErrUnavailable)
		}
		var info struct {
			State struct{ Paused bool }
		}
		err := f.docker.do(ctx, http.MethodGet, "/containers/"+c.id+"/json", &info)
		if errors.Is(err, errDockerNotFound) {
			return false, nil
		}
		return info.State.Paused, err
	}
	return false, fmt.Errorf("%w: container kind %q in the migration journal: want stow or docker", volume.ErrInvalid, c.kind)
}

// lazyThawer opens the freezer only when there is something to thaw.
type lazyThawer struct {
	open func() (*liveFreezer, error)
}

// Thaw implements migrate.Thawer.
func (l lazyThawer) Thaw(ctx context.Context, cs []migrate.Consumer) ([]migrate.Consumer, error) {
	f, err := l.open()
	if err != nil {
		return nil, err
	}
	return f.Thaw(ctx, cs)
}

// stop kills a frozen consumer and waits until it has ended. Every process
// of it gets SIGKILL while it is still frozen, before the thaw: none runs
// another instruction, so none writes what the target would miss (no
// SIGTERM handler, no rename half done).
func (f *liveFreezer) stop(ctx context.Context, c consumer) error {
	f.log.Debug("stop", "container", c.String())
	if c.kind == kindStow {
		// With no grace period Stop kills the container's cgroup at once:
		// every process gets SIGKILL while the group is frozen (cgroup.kill
		// on v2), and only then is it thawed. The SIGTERM it sends PID 1
		// first is still pending then, and loses to the SIGKILL.
		return f.engine.Stop(ctx, c.id, 0)
	}
	// docker kill signals only the container's first process, and then
	// unpauses the container (moby's daemon/kill.go): its other processes
	// would run on until the kernel kills them as that process's PID
	// namespace ends, or, with --pid=host, until containerd does, many
	// milliseconds later. So every process of the container's frozen
	// cgroup is killed here first.
	var info struct {
		State struct {
			Pid     int
			Running bool
		}
	}
	if err := f.docker.do(ctx, http.MethodGet, "/containers/"+c.id+"/json", &info); err != nil {
		return err
	}
	if !info.State.Running {
		return nil
	}
	n, err := killCgroupOf(info.State.Pid, c.id)
	if err != nil {
		return fmt.Errorf("kill docker container %s: %w", c.name, err)
	}
	f.log.Debug("killed frozen", "container", c.String(), "processes", n)
	if err := f.docker.post(ctx, "/containers/"+c.id+"/kill"); err != nil && !errors.Is(err, errDockerConflict) {
		return err
	}
	return f.docker.post(ctx, "/containers/"+c.id+"/wait?condition=not-running")
}

// newLiveFreezer returns the freezer of `stow migrate --live`.
func (a *app) newLiveFreezer(pluginSocket, after string) (*liveFreezer, error) {
	log := slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	root := a.runtimeRoot()
	e, err := container.New(container.Options{Root: root, PluginSocket: pluginSocket, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("open the stow runtime at %s: %w", root, err)
	}
	f := &liveFreezer{engine: e, root: root, after: after, log: log}
	host := a.getenv("DOCKER_HOST")
	if host == "" {
		host = defaultDockerHost
	}
	if f.docker, err = newDockerClient(host); err != nil {
		return nil, err
	}
	return f, nil
}

// errDockerNotFound marks dockerd's HTTP 404, errDockerConflict its 409
// (such as a container that is not running).
var (
	errDockerNotFound = errors.New("not found")
	errDockerConflict = errors.New("conflict")
)

// dockerClient speaks dockerd's Engine API over its unix socket.
type dockerClient struct {
	host string
	http *http.Client
}

// newDockerClient returns a client of the dockerd at host
// (unix:///PATH), or nil when nothing listens there: then no Docker
// container holds a volume of this host.
func newDockerClient(host string) (*dockerClient, error) {
	path, ok := strings.CutPrefix(host, "unix://")
	if !ok || !strings.HasPrefix(path, "/") {
		return nil, fmt.Errorf("%w: DOCKER_HOST %q: --live reaches dockerd on this host only, as unix:///PATH", volume.ErrInvalid, host)
	}
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}
	return &dockerClient{host: host, http: &http.Client{Transport: tr}}, nil
}

func (d *dockerClient) do(ctx context.Context, method, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, "http://docker"+path, nil)
	if err != nil {
		return err
	}
	resp, err := d.http.Do(req)
	if err != nil {
		return fmt.Errorf("docker %s %s: %w: %w", method, path, volume.ErrUnavailable, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var e struct {
			Message string `json:"message"`
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(b, &e) != nil || e.Message == "" {
			e.Message = strings.TrimSpace(string(b))
		}
		err := fmt.Errorf("docker %s %s: %s (HTTP %d)", method, path, e.Message, resp.StatusCode)
		switch resp.StatusCode {
		case http.StatusNotFound:
			err = fmt.Errorf("%w: %w", errDockerNotFound, err)
		case http.StatusConflict:
			err = fmt.Errorf("%w: %w", errDockerConflict, err)
		}
		return err
	}
	if out == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("docker %s %s: read reply: %w", method, path, err)
	}
	return nil
}

func (d *dockerClient) post(ctx context.Context, path string) error {
	return d.do(ctx, http.MethodPost, path, nil)
}

// holders returns the Docker containers that use volume vol, with the
// mount IDs dockerd passed to the volume plugin for it. The Engine API
// does not show those IDs; dockerd keeps them in each container's
// config.v2.json below its root directory.
func (d *dockerClient) holders(ctx context.Context, vol string) ([]dockerHolder, error) {
	var info struct {
		DockerRootDir string
	}
	if err := d.do(ctx, http.MethodGet, "/info", &info); err != nil {
		return nil, err
	}
	filters, _ := json.Marshal(map[string][]string{"volume": {vol}})
	var list []struct {
		ID    string   `json:"Id"`
		Names []string `json:"Names"`
		State string   `json:"State"`
	}
	if err := d.do(ctx, http.MethodGet, "/containers/json?all=1&filters="+url.QueryEscape(string(filters)), &list); err != nil {
		return nil, err
	}
	var out []dockerHolder
	for _, c := range list {
		ids, err := dockerMountIDs(filepath.Join(info.DockerRootDir, "containers", c.ID, "config.v2.json"), vol)
		if err != nil {
			return nil, err
		}
		name := c.ID[:min(12, len(c.ID))]
		if len(c.Names) > 0 {
			name = strings.TrimPrefix(c.Names[0], "/")
		}
		out = append(out, dockerHolder{ID: c.ID, Name: name, Running: c.State == "running" || c.State == "paused",
			Paused: c.State == "paused", MountIDs: ids})
	}
	return out, nil
}

// dockerMountIDs reads the mount IDs of volume vol from a container's
// config.v2.json.
func dockerMountIDs(file, vol string) ([]string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read Docker's mount IDs: %w", err)
	}
	var cfg struct {
		MountPoints map[string]struct {
			Name string
			ID   string
		}
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return nil, fmt.Errorf("read Docker's mount IDs from %s: %w", file, err)
	}
	var ids []string
	for _, mp := range cfg.MountPoints {
		if mp.Name == vol && mp.ID != "" {
			ids = append(ids, mp.ID)
		}
	}
	return ids, nil
}

// checkLiveFlags checks --after.
func checkLiveFlags(cmd *cobra.Command, f *migrateFlags) error {
	if f.after != afterResume && f.after != afterStop {
		return fmt.Errorf("invalid --after %q: use resume or stop", f.after)
	}
	if cmd.Flags().Changed("after") && !f.live {
		return fmt.Errorf("--after goes with --live only")
	}
	return nil
}

// liveLine is the plain report of the frozen containers.
func liveLine(l *migrate.LiveResult) string {
	what := "resumed"
	if l.After == afterStop {
		what = "stopped"
	}
	if !l.Released {
		what = "NOT released (see the error above)"
	}
	return fmt.Sprintf("froze %s for %s, then %s", strings.Join(l.Consumers, ", "), l.Frozen.Round(time.Millisecond), what)
}
