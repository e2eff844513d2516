package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func TestParse(t *testing.T) {
	root := t.TempDir()
	tests := []struct {
		name string
		args []string
		want string // error text; "" for success
	}{
		{"ok", []string{"local", "--endpoint", "unix:///run/x.sock", "--root", root}, ""},
		{"no type", []string{"--endpoint", "unix:///run/x.sock"}, "missing provider type (types: local)"},
		{"unknown type", []string{"nfs", "--endpoint", "unix:///run/x.sock", "--root", root}, `unknown provider type "nfs" (types: local)`},
		{"no endpoint", []string{"local", "--root", root}, "--endpoint is required, as unix:///PATH"},
		{"no root", []string{"local", "--endpoint", "unix:///run/x.sock"}, "--root is required"},
		{"bad log level", []string{"local", "--endpoint", "unix:///x.sock", "--root", root, "--log-level", "loud"}, `invalid --log-level "loud"`},
		{"extra argument", []string{"local", "--endpoint", "unix:///x.sock", "--root", root, "more"}, `unexpected argument "more"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := parse(tt.args, io.Discard)
			if tt.want == "" {
				if err != nil || o.typ != "local" || o.root != root {
					t.Fatalf("parse = %+v, %v", o, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("parse err = %v; want %q", err, tt.want)
			}
		})
	}
	if _, err := parse([]string{"--help"}, io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("--help: %v", err)
	}
}

// TestServe serves the local provider, asks it who it is over CSI, and
// stops it by cancelling the context, as SIGTERM does.
func TestServe(t *testing.T) {
	dir, err := os.MkdirTemp("", "stowprov") // a short socket path
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "csi.sock")
	o, err := parse([]string{"local", "--endpoint", "unix://" + sock, "--root", filepath.Join(dir, "root"), "--node-id", "n1"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var logs bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- serve(ctx, o, &logs) }()

	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	callCtx, callCancel := context.WithTimeout(ctx, 30*time.Second)
	defer callCancel()
	wait := grpc.WaitForReady(true) // until serve listens
	info, err := csipb.NewIdentityClient(conn).GetPluginInfo(callCtx, &csipb.GetPluginInfoRequest{}, wait)
	if err != nil || info.GetName() != "stowage.local" {
		t.Fatalf("GetPluginInfo = %v, %v; want stowage.local", info, err)
	}
	node, err := csipb.NewNodeClient(conn).NodeGetInfo(callCtx, &csipb.NodeGetInfoRequest{}, wait)
	if err != nil || node.GetNodeId() != "n1" {
		t.Fatalf("NodeGetInfo = %v, %v; want node n1", node, err)
	}
	probe, err := csipb.NewIdentityClient(conn).Probe(callCtx, &csipb.ProbeRequest{}, wait)
	if err != nil || !probe.GetReady().GetValue() {
		t.Errorf("Probe = %v, %v; want ready", probe, err)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve after its context ended: %v\n%s", err, logs.String())
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left behind: %v", err)
	}
	for _, want := range []string{"serving provider over CSI", "stopped"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
}
