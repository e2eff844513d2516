package csi

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/plugins/volume/volumetest"
)

func TestListen(t *testing.T) {
	t.Run("forms", func(t *testing.T) {
		dir := socketDir(t)
		for _, ep := range []string{"unix://" + filepath.Join(dir, "a.sock"), filepath.Join(dir, "b.sock"), "unix:" + filepath.Join(dir, "c.sock")} {
			l, err := Listen(ep)
			if err != nil {
				t.Fatalf("Listen(%q): %v", ep, err)
			}
			fi, err := os.Stat(l.Addr().String())
			if err != nil || fi.Mode().Perm() != 0o660 || fi.Mode().Type() != os.ModeSocket {
				t.Errorf("Listen(%q): socket %v, %v; want a socket with mode 0660", ep, fi.Mode(), err)
			}
			l.Close()
		}
	})
	t.Run("bad endpoints", func(t *testing.T) {
		for _, ep := range []string{"", "relative.sock", "unix://relative.sock", "tcp://127.0.0.1:1", "/" + strings.Repeat("x", 120)} {
			if _, err := Listen(ep); !errors.Is(err, volume.ErrInvalid) {
				t.Errorf("Listen(%q) = %v; want ErrInvalid", ep, err)
			}
			if _, err := Dial(ep, ClientOptions{}); !errors.Is(err, volume.ErrInvalid) {
				t.Errorf("Dial(%q) = %v; want ErrInvalid", ep, err)
			}
		}
	})
	t.Run("stale socket", func(t *testing.T) {
		path := filepath.Join(socketDir(t), "s.sock")
		l, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		l.(*net.UnixListener).SetUnlinkOnClose(false) // as a killed process leaves it
		l.Close()
		l, err = Listen(path)
		if err != nil {
			t.Fatalf("Listen over a stale socket: %v", err)
		}
		l.Close()
	})
	t.Run("live socket", func(t *testing.T) {
		path := filepath.Join(socketDir(t), "s.sock")
		l, err := Listen(path)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		if _, err := Listen(path); !errors.Is(err, volume.ErrInUse) {
			t.Fatalf("Listen over a live socket = %v; want ErrInUse", err)
		}
		if _, err := os.Stat(path); err != nil {
			t.Errorf("the live socket was removed: %v", err)
		}
	})
	t.Run("not a socket", func(t *testing.T) {
		path := filepath.Join(socketDir(t), "file")
		if err := os.WriteFile(path, []byte("keep"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Listen(path); !errors.Is(err, volume.ErrExists) {
			t.Fatalf("Listen over a file = %v; want ErrExists", err)
		}
		if b, err := os.ReadFile(path); err != nil || string(b) != "keep" {
			t.Errorf("the file was touched: %q, %v", b, err)
		}
	})
}

// TestServeStops checks that Serve returns nil once its context is done,
// and that the socket is gone.
func TestServeStops(t *testing.T) {
	path := filepath.Join(socketDir(t), "s.sock")
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- NewServer(volumetest.NewFake(t.TempDir(), false), ServerOptions{}).Serve(ctx, l) }()
	c := dial(t, path)
	if err := c.Probe(testContext(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve = %v; want nil", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket after Serve: %v; want it removed", err)
	}
}

// rawClients connects plain CSI clients to a server of f.
func rawClients(t *testing.T, f volume.Provider, opts ServerOptions) (csipb.IdentityClient, csipb.ControllerClient, csipb.NodeClient) {
	t.Helper()
	conn, err := grpc.NewClient(serve(t, f, opts), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return csipb.NewIdentityClient(conn), csipb.NewControllerClient(conn), csipb.NewNodeClient(conn)
}

func capability(block bool, mode csipb.VolumeCapability_AccessMode_Mode) *csipb.VolumeCapability {
	c := &csipb.VolumeCapability{AccessMode: &csipb.VolumeCapability_AccessMode{Mode: mode}}
	if block {
		c.AccessType = &csipb.VolumeCapability_Block{Block: &csipb.VolumeCapability_BlockVolume{}}
	} else {
		c.AccessType = &csipb.VolumeCapability_Mount{Mount: &csipb.VolumeCapability_MountVolume{}}
	}
	return c
}

func TestCreateVolumeChecks(t *testing.T) {
	_, ctl, _ := rawClients(t, volumetest.NewFake(t.TempDir(), false), ServerOptions{})
	ctx := testContext(t, time.Minute)
	mount := capability(false, csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)
	tests := []struct {
		name string
		req  *csipb.CreateVolumeRequest
		want codes.Code
	}{
		{"no name", &csipb.CreateVolumeRequest{VolumeCapabilities: []*csipb.VolumeCapability{mount}}, codes.InvalidArgument},
		{"no capabilities", &csipb.CreateVolumeRequest{Name: "v"}, codes.InvalidArgument},
		{"block", &csipb.CreateVolumeRequest{Name: "v", VolumeCapabilities: []*csipb.VolumeCapability{capability(true, csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)}}, codes.InvalidArgument},
		{"multi node", &csipb.CreateVolumeRequest{Name: "v", VolumeCapabilities: []*csipb.VolumeCapability{capability(false, csipb.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER)}}, codes.InvalidArgument},
		{"no access type", &csipb.CreateVolumeRequest{Name: "v", VolumeCapabilities: []*csipb.VolumeCapability{{AccessMode: mount.AccessMode}}}, codes.InvalidArgument},
		{"required over limit", &csipb.CreateVolumeRequest{Name: "v", VolumeCapabilities: []*csipb.VolumeCapability{mount}, CapacityRange: &csipb.CapacityRange{RequiredBytes: 2 << 20, LimitBytes: 1 << 20}}, codes.OutOfRange},
		{"negative", &csipb.CreateVolumeRequest{Name: "v", VolumeCapabilities: []*csipb.VolumeCapability{mount}, CapacityRange: &csipb.CapacityRange{RequiredBytes: -1}}, codes.InvalidArgument},
		{"source", &csipb.CreateVolumeRequest{Name: "v", VolumeCapabilities: []*csipb.VolumeCapability{mount}, VolumeContentSource: &csipb.VolumeContentSource{}}, codes.InvalidArgument},
		{"bad parameter", &csipb.CreateVolumeRequest{Name: "v", VolumeCapabilities: []*csipb.VolumeCapability{mount}, Parameters: map[string]string{"colour": "red"}}, codes.InvalidArgument},
		{"reader only", &csipb.CreateVolumeRequest{Name: "ro", VolumeCapabilities: []*csipb.VolumeCapability{capability(false, csipb.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY)}}, codes.OK},
		{"single writer", &csipb.CreateVolumeRequest{Name: "sw", VolumeCapabilities: []*csipb.VolumeCapability{capability(false, csipb.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER)}}, codes.OK},
		{"multi writer", &csipb.CreateVolumeRequest{Name: "mw", VolumeCapabilities: []*csipb.VolumeCapability{capability(false, csipb.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER)}}, codes.OK},
		{"within limit", &csipb.CreateVolumeRequest{Name: "lim", VolumeCapabilities: []*csipb.VolumeCapability{mount}, CapacityRange: &csipb.CapacityRange{RequiredBytes: 1 << 20, LimitBytes: 1 << 20}}, codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := ctl.CreateVolume(ctx, tt.req)
			if status.Code(err) != tt.want {
				t.Fatalf("CreateVolume = %v, %v; want %v", resp, err, tt.want)
			}
			if err != nil && status.Convert(err).Message() == "" {
				t.Error("error without a message")
			}
		})
	}
}

// bigProvider gives every volume more capacity than asked, to check
// limit_bytes.
type bigProvider struct{ *volumetest.Fake }

func (p bigProvider) Create(ctx context.Context, req volume.CreateRequest) (volume.Volume, error) {
	v, err := p.Fake.Create(ctx, req)
	v.CapacityBytes *= 2
	return v, err
}

func TestCreateVolumeLimit(t *testing.T) {
	_, ctl, _ := rawClients(t, bigProvider{volumetest.NewFake(t.TempDir(), false)}, ServerOptions{})
	_, err := ctl.CreateVolume(testContext(t, time.Minute), &csipb.CreateVolumeRequest{
		Name:               "v",
		VolumeCapabilities: []*csipb.VolumeCapability{capability(false, csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)},
		CapacityRange:      &csipb.CapacityRange{RequiredBytes: 1 << 20, LimitBytes: 1 << 20},
	})
	if status.Code(err) != codes.OutOfRange {
		t.Fatalf("CreateVolume over the limit = %v; want OutOfRange", err)
	}
}

func TestListVolumesPages(t *testing.T) {
	f := volumetest.NewFake(t.TempDir(), false)
	_, ctl, _ := rawClients(t, f, ServerOptions{})
	ctx := testContext(t, time.Minute)
	for _, n := range []string{"a", "b", "c", "d", "e"} {
		if _, err := f.Create(ctx, volume.CreateRequest{Name: n}); err != nil {
			t.Fatal(err)
		}
	}
	page := func(tok string, max int32) ([]string, string) {
		t.Helper()
		resp, err := ctl.ListVolumes(ctx, &csipb.ListVolumesRequest{StartingToken: tok, MaxEntries: max})
		if err != nil {
			t.Fatalf("ListVolumes(%q, %d): %v", tok, max, err)
		}
		var ids []string
		for _, e := range resp.GetEntries() {
			ids = append(ids, e.GetVolume().GetVolumeId())
		}
		return ids, resp.GetNextToken()
	}
	ids, tok := page("", 2)
	if strings.Join(ids, ",") != "a,b" || tok == "" {
		t.Fatalf("first page = %v, %q; want a,b and a token", ids, tok)
	}
	// Deleting the last entry of a page and adding one before the token
	// neither breaks the token nor repeats entries.
	if err := f.Delete(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Create(ctx, volume.CreateRequest{Name: "aa"}); err != nil {
		t.Fatal(err)
	}
	ids, tok = page(tok, 2)
	if strings.Join(ids, ",") != "c,d" || tok == "" {
		t.Fatalf("second page = %v, %q; want c,d and a token", ids, tok)
	}
	ids, tok = page(tok, 2)
	if strings.Join(ids, ",") != "e" || tok != "" {
		t.Fatalf("last page = %v, %q; want e and no token", ids, tok)
	}
	if ids, _ := page("", 0); len(ids) != 5 {
		t.Errorf("all = %v; want 5 volumes", ids)
	}
	for _, bad := range []string{"invalid-token", "after.", "after.!!!"} {
		if _, err := ctl.ListVolumes(ctx, &csipb.ListVolumesRequest{StartingToken: bad}); status.Code(err) != codes.Aborted {
			t.Errorf("ListVolumes(%q) = %v; want Aborted", bad, err)
		}
	}
	if _, err := ctl.ListVolumes(ctx, &csipb.ListVolumesRequest{MaxEntries: -1}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("ListVolumes(max_entries -1) = %v; want InvalidArgument", err)
	}
}

// notLister hides the fake's List.
type notLister struct{ volume.Provider }

func TestWithoutLister(t *testing.T) {
	f := volumetest.NewFake(t.TempDir(), false)
	endpoint := serve(t, notLister{f}, ServerOptions{})
	c := dial(t, endpoint)
	ctx := testContext(t, time.Minute)
	if _, err := c.List(ctx); !errors.Is(err, volume.ErrNotSupported) {
		t.Errorf("List without LIST_VOLUMES = %v; want ErrNotSupported", err)
	}
}

func TestNodeChecks(t *testing.T) {
	f := volumetest.NewFake(t.TempDir(), true)
	_, _, n := rawClients(t, f, ServerOptions{NodeID: "n1"})
	ctx := testContext(t, time.Minute)
	if _, err := f.Create(ctx, volume.CreateRequest{Name: "v"}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	mount := capability(false, csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)
	tests := []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"stage block", func() error {
			_, err := n.NodeStageVolume(ctx, &csipb.NodeStageVolumeRequest{VolumeId: "v", StagingTargetPath: dir, VolumeCapability: capability(true, csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)})
			return err
		}, codes.FailedPrecondition},
		{"stage unknown volume", func() error {
			_, err := n.NodeStageVolume(ctx, &csipb.NodeStageVolumeRequest{VolumeId: "nope", StagingTargetPath: dir, VolumeCapability: mount})
			return err
		}, codes.NotFound},
		{"publish without staging path", func() error {
			_, err := n.NodePublishVolume(ctx, &csipb.NodePublishVolumeRequest{VolumeId: "v", TargetPath: filepath.Join(dir, "t"), VolumeCapability: mount})
			return err
		}, codes.FailedPrecondition},
		{"publish multi node", func() error {
			_, err := n.NodePublishVolume(ctx, &csipb.NodePublishVolumeRequest{VolumeId: "v", StagingTargetPath: dir, TargetPath: filepath.Join(dir, "t"), VolumeCapability: capability(false, csipb.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY)})
			return err
		}, codes.FailedPrecondition},
		{"stats relative path", func() error {
			_, err := n.NodeGetVolumeStats(ctx, &csipb.NodeGetVolumeStatsRequest{VolumeId: "v", VolumePath: "some/path"})
			return err
		}, codes.NotFound},
		{"stats missing path", func() error {
			_, err := n.NodeGetVolumeStats(ctx, &csipb.NodeGetVolumeStatsRequest{VolumeId: "v", VolumePath: filepath.Join(dir, "missing")})
			return err
		}, codes.NotFound},
		{"stats unknown volume", func() error {
			_, err := n.NodeGetVolumeStats(ctx, &csipb.NodeGetVolumeStatsRequest{VolumeId: "nope", VolumePath: dir})
			return err
		}, codes.NotFound},
		{"unstage without path", func() error {
			_, err := n.NodeUnstageVolume(ctx, &csipb.NodeUnstageVolumeRequest{VolumeId: "v"})
			return err
		}, codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); status.Code(err) != tt.want {
				t.Errorf("err = %v; want %v", err, tt.want)
			}
		})
	}
	info, err := n.NodeGetInfo(ctx, &csipb.NodeGetInfoRequest{})
	if err != nil || info.GetNodeId() != "n1" {
		t.Errorf("NodeGetInfo = %v, %v; want n1", info, err)
	}
}

func TestNodeWithoutStage(t *testing.T) {
	f := volumetest.NewFake(t.TempDir(), false)
	_, _, n := rawClients(t, f, ServerOptions{})
	ctx := testContext(t, time.Minute)
	_, err := n.NodeStageVolume(ctx, &csipb.NodeStageVolumeRequest{VolumeId: "v", StagingTargetPath: t.TempDir(),
		VolumeCapability: capability(false, csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)})
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("NodeStageVolume on a provider that does not stage = %v; want Unimplemented", err)
	}
}

func TestIdentity(t *testing.T) {
	f := volumetest.NewFake(t.TempDir(), false)
	ctx := testContext(t, time.Minute)
	id, _, _ := rawClients(t, f, ServerOptions{})
	info, err := id.GetPluginInfo(ctx, &csipb.GetPluginInfoRequest{})
	if err != nil || info.GetName() != "stowage.fake" || info.GetVendorVersion() != "0" {
		t.Errorf("GetPluginInfo = %v, %v; want the provider's name and version", info, err)
	}
	id, _, _ = rawClients(t, f, ServerOptions{Name: "stowage.local", Version: "1.2"})
	info, err = id.GetPluginInfo(ctx, &csipb.GetPluginInfoRequest{})
	if err != nil || info.GetName() != "stowage.local" || info.GetVendorVersion() != "1.2" {
		t.Errorf("GetPluginInfo = %v, %v; want the options' name and version", info, err)
	}
	id, _, _ = rawClients(t, f, ServerOptions{Name: "not a name!", Version: "1"})
	if _, err := id.GetPluginInfo(ctx, &csipb.GetPluginInfoRequest{}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("GetPluginInfo with a bad name = %v; want FailedPrecondition", err)
	}
	resp, err := id.Probe(ctx, &csipb.ProbeRequest{})
	if err != nil || !resp.GetReady().GetValue() {
		t.Errorf("Probe = %v, %v; want ready", resp, err)
	}
	f.Fail(volume.ErrUnavailable)
	if _, err := id.Probe(ctx, &csipb.ProbeRequest{}); status.Code(err) != codes.Unavailable {
		t.Errorf("Probe of an unhealthy provider = %v; want Unavailable", err)
	}
}
