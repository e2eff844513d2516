package csi

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"

	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/plugins/volume/volumetest"
)

// attachingController is the server's controller with
// PUBLISH_UNPUBLISH_VOLUME, recording the attach calls, as drivers of
// network block devices have it.
type attachingController struct {
	controller
	mu    sync.Mutex
	calls []string // "publish <volume> <node>" and "unpublish <volume> <node>"
}

func (a *attachingController) ControllerGetCapabilities(ctx context.Context, req *csipb.ControllerGetCapabilitiesRequest) (*csipb.ControllerGetCapabilitiesResponse, error) {
	resp, err := a.controller.ControllerGetCapabilities(ctx, req)
	if err == nil {
		resp.Capabilities = append(resp.Capabilities, &csipb.ControllerServiceCapability{Type: &csipb.ControllerServiceCapability_Rpc{
			Rpc: &csipb.ControllerServiceCapability_RPC{Type: csipb.ControllerServiceCapability_RPC_PUBLISH_UNPUBLISH_VOLUME},
		}})
	}
	return resp, err
}

func (a *attachingController) record(call string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls = append(a.calls, call)
}

func (a *attachingController) ControllerPublishVolume(_ context.Context, req *csipb.ControllerPublishVolumeRequest) (*csipb.ControllerPublishVolumeResponse, error) {
	a.record("publish " + req.GetVolumeId() + " " + req.GetNodeId())
	return &csipb.ControllerPublishVolumeResponse{PublishContext: map[string]string{"device": "/dev/x"}}, nil
}

func (a *attachingController) ControllerUnpublishVolume(_ context.Context, req *csipb.ControllerUnpublishVolumeRequest) (*csipb.ControllerUnpublishVolumeResponse, error) {
	a.record("unpublish " + req.GetVolumeId() + " " + req.GetNodeId())
	return &csipb.ControllerUnpublishVolumeResponse{}, nil
}

// serveGRPC serves g on a fresh socket until the test ends.
func serveGRPC(t *testing.T, g *grpc.Server) string {
	t.Helper()
	path := filepath.Join(socketDir(t), "s.sock")
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- g.Serve(l) }()
	t.Cleanup(func() {
		g.Stop()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return path
}

// TestClientAttaches checks that the client calls ControllerPublishVolume
// before staging and ControllerUnpublishVolume after unstaging when the
// driver asks for it, with the node ID NodeGetInfo reports.
func TestClientAttaches(t *testing.T) {
	s := NewServer(volumetest.NewFake(t.TempDir(), true), ServerOptions{NodeID: "n1"})
	ctl := &attachingController{controller: controller{s: s}}
	g := grpc.NewServer()
	csipb.RegisterIdentityServer(g, identity{s: s})
	csipb.RegisterControllerServer(g, ctl)
	csipb.RegisterNodeServer(g, node{s: s})
	path := serveGRPC(t, g)

	c := dial(t, path)
	ctx := testContext(t, time.Minute)
	v, err := c.Create(ctx, volume.CreateRequest{Name: "v"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	staging, target := filepath.Join(dir, "staging"), filepath.Join(dir, "target")
	if err := os.Mkdir(staging, 0o755); err != nil {
		t.Fatal(err)
	}
	steps := []func() error{
		func() error { return c.Stage(ctx, volume.StageRequest{VolumeID: v.ID, StagingPath: staging}) },
		func() error {
			return c.Publish(ctx, volume.PublishRequest{VolumeID: v.ID, StagingPath: staging, TargetPath: target})
		},
		func() error { return c.Unpublish(ctx, v.ID, target) },
		func() error { return c.Unstage(ctx, v.ID, staging) },
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	want := []string{"publish v n1", "publish v n1", "unpublish v n1"}
	ctl.mu.Lock()
	defer ctl.mu.Unlock()
	if !slices.Equal(ctl.calls, want) {
		t.Errorf("controller calls = %q; want %q", ctl.calls, want)
	}
}

// TestClientNodeOnly checks that a driver without a controller service can
// still be staged and published.
func TestClientNodeOnly(t *testing.T) {
	f := volumetest.NewFake(t.TempDir(), false)
	s := NewServer(f, ServerOptions{})
	g := grpc.NewServer()
	csipb.RegisterIdentityServer(g, identity{s: s})
	csipb.RegisterNodeServer(g, node{s: s})
	path := serveGRPC(t, g)

	c := dial(t, path)
	ctx := testContext(t, time.Minute)
	if _, err := f.Create(ctx, volume.CreateRequest{Name: "v"}); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(t.TempDir(), "target")
	if err := c.Publish(ctx, volume.PublishRequest{VolumeID: "v", TargetPath: target}); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	if err := c.Unpublish(ctx, "v", target); err != nil {
		t.Fatalf("Unpublish: %v", err)
	}
	if _, err := c.Create(ctx, volume.CreateRequest{Name: "w"}); !errors.Is(err, volume.ErrNotSupported) {
		t.Errorf("Create without a controller = %v; want ErrNotSupported", err)
	}
	if _, err := c.List(ctx); !errors.Is(err, volume.ErrNotSupported) {
		t.Errorf("List without a controller = %v; want ErrNotSupported", err)
	}
}
