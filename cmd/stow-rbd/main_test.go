package main

import (
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	good := []string{"--endpoint", "unix:///tmp/x.sock", "--ceph-conf", "/etc/ceph/ceph.conf", "--pool", "rbd"}
	o, err := parse(append(good, "--keyring", "/k", "--host-id", "a"), io.Discard)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	if o.Endpoint != "unix:///tmp/x.sock" || o.conf != "/etc/ceph/ceph.conf" || o.pool != "rbd" || o.keyring != "/k" || o.hostID != "a" || o.user != "admin" {
		t.Errorf("parse = %+v", o)
	}
	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"--ceph-conf", "c", "--pool", "p"}, "--endpoint"},
		{[]string{"--endpoint", "unix:///x", "--pool", "p"}, "--ceph-conf"},
		{[]string{"--endpoint", "unix:///x", "--ceph-conf", "c"}, "--pool"},
		{append(good, "extra"), "unexpected argument"},
		{append(good, "--log-level", "loud"), "--log-level"},
		{append(good, "--no-such-flag"), "not defined"},
	} {
		if _, err := parse(tc.args, io.Discard); err == nil || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("parse(%q) = %v; want an error saying %q", tc.args, err, tc.says)
		}
	}
	if _, err := parse([]string{"-h"}, io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("parse(-h) = %v; want ErrHelp", err)
	}
}
