package csi

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/plugins/volume/volumetest"
)

// TestAbilitiesAdvertised checks that the server advertises snapshots,
// clones and expansion exactly when the provider has them.
func TestAbilitiesAdvertised(t *testing.T) {
	abilities := []string{"CREATE_DELETE_SNAPSHOT", "LIST_SNAPSHOTS", "CLONE_VOLUME", "EXPAND_VOLUME"}
	for _, basic := range []bool{false, true} {
		f := volumetest.NewFake(t.TempDir(), true)
		var p volume.Provider = f
		if basic {
			p = f.Basic()
		}
		id, ctl, node := rawClients(t, p, ServerOptions{})
		ctx := testContext(t, time.Minute)
		cc, err := ctl.ControllerGetCapabilities(ctx, &csipb.ControllerGetCapabilitiesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, c := range cc.GetCapabilities() {
			got = append(got, c.GetRpc().GetType().String())
		}
		for _, a := range abilities {
			if slices.Contains(got, a) == basic {
				t.Errorf("basic=%v: controller capabilities %v: %s advertised = %v", basic, got, a, !basic)
			}
		}
		nc, err := node.NodeGetCapabilities(ctx, &csipb.NodeGetCapabilitiesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		nodeExpand := slices.ContainsFunc(nc.GetCapabilities(), func(c *csipb.NodeServiceCapability) bool {
			return c.GetRpc().GetType() == csipb.NodeServiceCapability_RPC_EXPAND_VOLUME
		})
		pc, err := id.GetPluginCapabilities(ctx, &csipb.GetPluginCapabilitiesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		online := slices.ContainsFunc(pc.GetCapabilities(), func(c *csipb.PluginCapability) bool {
			return c.GetVolumeExpansion().GetType() == csipb.PluginCapability_VolumeExpansion_ONLINE
		})
		if nodeExpand == basic || online == basic {
			t.Errorf("basic=%v: node EXPAND_VOLUME = %v, online expansion = %v", basic, nodeExpand, online)
		}
	}
}

// TestClientWithoutAbilities checks that a client of a driver without the
// abilities says so with ErrNotSupported and a message naming what is
// missing.
func TestClientWithoutAbilities(t *testing.T) {
	c := dial(t, serve(t, volumetest.NewFake(t.TempDir(), false).Basic(), ServerOptions{}))
	ctx := testContext(t, time.Minute)
	v, err := c.Create(ctx, volume.CreateRequest{Name: "v", CapacityBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		call func() error
		want string
	}{
		{"CreateSnapshot", func() error { _, err := c.CreateSnapshot(ctx, v.ID, "s"); return err }, "cannot take snapshots"},
		{"DeleteSnapshot", func() error { return c.DeleteSnapshot(ctx, "s") }, "cannot delete snapshots"},
		{"ListSnapshots", func() error { _, err := c.ListSnapshots(ctx, ""); return err }, "cannot list snapshots"},
		{"CreateFromSnapshot", func() error {
			_, err := c.Create(ctx, volume.CreateRequest{Name: "w", Source: &volume.Source{SnapshotID: "s"}})
			return err
		}, "cannot create volumes from snapshots"},
		{"CreateFromVolume", func() error {
			_, err := c.Create(ctx, volume.CreateRequest{Name: "w", Source: &volume.Source{VolumeID: v.ID}})
			return err
		}, "cannot copy volumes"},
		{"Expand", func() error {
			_, err := c.Expand(ctx, volume.ExpandRequest{VolumeID: v.ID, CapacityBytes: 2 << 20})
			return err
		}, "cannot expand volumes"},
		{"Unlock", func() error { _, err := c.Unlock(ctx, v.ID); return err }, "keeps no write locks"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if !errors.Is(err, volume.ErrNotSupported) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v; want ErrNotSupported saying %q", err, tt.want)
			}
		})
	}
}

// TestListSnapshotsPages checks max_entries, starting_token and the
// filters of ListSnapshots.
func TestListSnapshotsPages(t *testing.T) {
	f := volumetest.NewFake(t.TempDir(), false)
	_, ctl, _ := rawClients(t, f, ServerOptions{})
	ctx := testContext(t, time.Minute)
	for _, name := range []string{"a", "b"} {
		if _, err := f.Create(ctx, volume.CreateRequest{Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range [][2]string{{"a", "a1"}, {"a", "a2"}, {"a", "a3"}, {"b", "b1"}} {
		if _, err := f.CreateSnapshot(ctx, s[0], s[1]); err != nil {
			t.Fatal(err)
		}
	}
	ids := func(r *csipb.ListSnapshotsResponse) []string {
		var out []string
		for _, e := range r.GetEntries() {
			out = append(out, e.GetSnapshot().GetSnapshotId())
		}
		return out
	}
	r, err := ctl.ListSnapshots(ctx, &csipb.ListSnapshotsRequest{MaxEntries: 3})
	if err != nil || !slices.Equal(ids(r), []string{"a1", "a2", "a3"}) || r.GetNextToken() == "" {
		t.Fatalf("first page = %v (next %q), %v", ids(r), r.GetNextToken(), err)
	}
	r, err = ctl.ListSnapshots(ctx, &csipb.ListSnapshotsRequest{StartingToken: r.GetNextToken()})
	if err != nil || !slices.Equal(ids(r), []string{"b1"}) || r.GetNextToken() != "" {
		t.Fatalf("second page = %v (next %q), %v", ids(r), r.GetNextToken(), err)
	}
	if r, err := ctl.ListSnapshots(ctx, &csipb.ListSnapshotsRequest{SourceVolumeId: "b"}); err != nil || !slices.Equal(ids(r), []string{"b1"}) {
		t.Errorf("source b = %v, %v", ids(r), err)
	}
	if r, err := ctl.ListSnapshots(ctx, &csipb.ListSnapshotsRequest{SnapshotId: "a2"}); err != nil || !slices.Equal(ids(r), []string{"a2"}) {
		t.Errorf("snapshot a2 = %v, %v", ids(r), err)
	}
	if _, err := ctl.ListSnapshots(ctx, &csipb.ListSnapshotsRequest{StartingToken: "garbage"}); err == nil {
		t.Error("a bad starting_token was accepted")
	}

	// Over the client, every page is read.
	c := dial(t, serve(t, f, ServerOptions{}))
	all, err := c.ListSnapshots(ctx, "a")
	if err != nil || len(all) != 3 || all[0].SourceVolumeID != "a" || all[0].CreatedAt.IsZero() || !all[0].ReadyToUse {
		t.Errorf("client ListSnapshots(a) = %+v, %v", all, err)
	}
}
