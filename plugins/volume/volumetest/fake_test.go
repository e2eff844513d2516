package volumetest

import (
	"testing"

	"github.com/stowage/stowage/plugins/volume"
)

func TestFakeConformance(t *testing.T) {
	for _, stage := range []bool{false, true} {
		for _, variant := range []string{"", "-basic", "-snapshots-only"} {
			name := map[bool]string{false: "publish-only", true: "staged"}[stage] + variant
			t.Run(name, func(t *testing.T) {
				Run(t, Harness{
					New: func(t *testing.T) volume.Provider {
						f := NewFake(t.TempDir(), stage)
						switch variant {
						case "-basic":
							return f.Basic()
						case "-snapshots-only":
							f.CopyVolumes(false)
						}
						return f
					},
					Parameters:    [2]map[string]string{{"label": "a"}, {"label": "b"}},
					CapacityBytes: 1 << 20,
					Lock: func(t *testing.T, p volume.Provider, volumeID string) string {
						if err := p.(*Fake).SetLockHolder(volumeID, "host-b"); err != nil {
							t.Fatal(err)
						}
						return "host-b"
					},
				})
			})
		}
	}
}
