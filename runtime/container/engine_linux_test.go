package container

import (
	"testing"

	"github.com/stowage/stowage/runtime/container/initproc"
)

func TestContainerEnv(t *testing.T) {
	got := containerEnv(Config{Env: []string{"A=1"}, Hostname: "h"}, []string{"A=2", "B=3"})
	want := []string{"PATH=" + initproc.DefaultPath, "A=2", "HOSTNAME=h", "HOME=/root", "B=3"}
	if len(got) != len(want) {
		t.Fatalf("containerEnv = %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("containerEnv = %q, want %q", got, want)
		}
	}
}
