package plan

import (
	"slices"
	"testing"

	"github.com/stowage/stowage/migrate/manifest"
)

func paths(es []manifest.Entry) []string {
	out := []string{}
	for _, e := range es {
		out = append(out, e.Path)
	}
	return out
}

func source() *manifest.Manifest {
	return &manifest.Manifest{Entries: []manifest.Entry{
		{Path: ".", Type: manifest.Dir, Mode: 0o755},
		{Path: "d", Type: manifest.Dir, Mode: 0o755},
		{Path: "d/f", Type: manifest.Regular, Size: 3, SHA256: "h1", MtimeNS: 1},
		{Path: "d/g", Type: manifest.Regular, Size: 4, SHA256: "h2", MtimeNS: 1},
		{Path: "l", Type: manifest.Symlink, Target: "d/f"},
		{Path: "link", Type: manifest.Regular, Size: 3, SHA256: "h1", MtimeNS: 1, LinkTo: "d/f"},
	}}
}

func TestMake(t *testing.T) {
	type want struct {
		remove, apply, send, link, finish []string
		bytes                             int64
	}
	tests := []struct {
		name string
		dst  func() *manifest.Manifest
		want want
	}{
		{"empty target", func() *manifest.Manifest { return &manifest.Manifest{} }, want{
			remove: []string{}, apply: []string{".", "d", "l"}, send: []string{"d/f", "d/g"}, link: []string{"link"},
			finish: []string{".", "d"}, bytes: 7,
		}},
		{"same", source, want{remove: []string{}, apply: []string{}, send: []string{}, link: []string{}, finish: []string{}}},
		{"content changed", func() *manifest.Manifest {
			m := source()
			m.Entries[3].SHA256 = "old"
			return m
		}, want{remove: []string{}, apply: []string{}, send: []string{"d/g"}, link: []string{}, finish: []string{".", "d"}, bytes: 4}},
		{"linked file changed: links are made again", func() *manifest.Manifest {
			m := source()
			m.Entries[2].Size = 1
			m.Entries[5].Size = 1
			return m
		}, want{remove: []string{}, apply: []string{}, send: []string{"d/f"}, link: []string{"link"}, finish: []string{".", "d"}, bytes: 3}},
		{"metadata only", func() *manifest.Manifest {
			m := source()
			m.Entries[2].Mode = 0o600
			m.Entries[1].UID = 5
			return m
		}, want{remove: []string{}, apply: []string{"d/f"}, send: []string{}, link: []string{}, finish: []string{"d"}}},
		{"extra and type change", func() *manifest.Manifest {
			m := source()
			m.Entries[4] = manifest.Entry{Path: "l", Type: manifest.Dir}
			m.Entries = append(m.Entries, manifest.Entry{Path: "l/x", Type: manifest.Regular}, manifest.Entry{Path: "zz", Type: manifest.FIFO})
			return m
		}, want{remove: []string{"l", "l/x", "zz"}, apply: []string{"l"}, send: []string{}, link: []string{}, finish: []string{"."}}},
		{"was a link on the target", func() *manifest.Manifest {
			m := source()
			m.Entries[3].LinkTo = "d/f"
			return m
		}, want{remove: []string{}, apply: []string{}, send: []string{"d/g"}, link: []string{}, finish: []string{".", "d"}, bytes: 4}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := Make(source(), tc.dst())
			got := want{remove: append([]string{}, p.Remove...), apply: paths(p.Apply), send: paths(p.Send), link: paths(p.Link), finish: paths(p.Finish), bytes: p.SendBytes}
			for _, f := range []struct {
				name      string
				got, want []string
			}{{"remove", got.remove, tc.want.remove}, {"apply", got.apply, tc.want.apply}, {"send", got.send, tc.want.send},
				{"link", got.link, tc.want.link}, {"finish", got.finish, tc.want.finish}} {
				if !slices.Equal(f.got, f.want) {
					t.Errorf("%s = %q, want %q", f.name, f.got, f.want)
				}
			}
			if got.bytes != tc.want.bytes {
				t.Errorf("SendBytes = %d, want %d", got.bytes, tc.want.bytes)
			}
			if p.Empty() != (tc.name == "same") {
				t.Errorf("Empty = %v", p.Empty())
			}
		})
	}
}
