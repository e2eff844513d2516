package volumetest

import (
	"testing"

	"github.com/stowage/stowage/plugins/volume"
)

func TestFakeConformance(t *testing.T) {
	for _, stage := range []bool{false, true} {
		name := map[bool]string{false: "publish-only", true: "staged"}[stage]
		t.Run(name, func(t *testing.T) {
			Run(t, Harness{
				New:        func(t *testing.T) volume.Provider { return NewFake(t.TempDir(), stage) },
				Parameters: [2]map[string]string{{"label": "a"}, {"label": "b"}},
			})
		})
	}
}
