package api

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/stowage/stowage/plugins/volume"
)

func TestClassOf(t *testing.T) {
	cases := []struct {
		err  error
		want string
	}{
		{fmt.Errorf("mount: %w", volume.ErrNotFound), ClassNotFound},
		{volume.ErrExists, ClassExists},
		{fmt.Errorf("x: %w", volume.ErrInUse), ClassInUse},
		{volume.ErrInvalid, ClassInvalid},
		{fmt.Errorf("%w: %w", volume.ErrUnavailable, context.DeadlineExceeded), ClassUnavailable},
		{volume.ErrNotSupported, ClassNotSupported},
		{errors.New("boom"), ClassInternal},
		{context.DeadlineExceeded, ClassInternal},
	}
	for _, tc := range cases {
		got := ClassOf(tc.err)
		if got != tc.want {
			t.Errorf("ClassOf(%v) = %q; want %q", tc.err, got, tc.want)
		}
		if back := ClassError(got); tc.want != ClassInternal && !errors.Is(tc.err, back) {
			t.Errorf("ClassError(%q) = %v; %v does not wrap it", got, back, tc.err)
		}
	}
	if ClassError(ClassInternal) != nil || ClassError("bogus") != nil {
		t.Error("ClassError of internal or an unknown class is not nil")
	}
}
