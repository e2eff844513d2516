package csi

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/stowage/stowage/plugins/volume"
)

func TestCodeOf(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want codes.Code
	}{
		{"not found", volume.ErrNotFound, codes.NotFound},
		{"exists", volume.ErrExists, codes.AlreadyExists},
		{"in use", volume.ErrInUse, codes.FailedPrecondition},
		{"invalid", volume.ErrInvalid, codes.InvalidArgument},
		{"unavailable", volume.ErrUnavailable, codes.Unavailable},
		{"not supported", volume.ErrNotSupported, codes.Unimplemented},
		{"deadline", context.DeadlineExceeded, codes.DeadlineExceeded},
		{"deadline wins over unavailable", fmt.Errorf("%w: hung: %w", volume.ErrUnavailable, context.DeadlineExceeded), codes.DeadlineExceeded},
		{"cancelled", context.Canceled, codes.Canceled},
		{"other", errors.New("disk on fire"), codes.Internal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := toStatus(fmt.Errorf("op volume %q: %w", "v", tt.err))
			st, ok := status.FromError(err)
			if !ok || st.Code() != tt.want {
				t.Fatalf("toStatus = %v; want code %v", err, tt.want)
			}
			if want := fmt.Sprintf("op volume %q: %v", "v", tt.err); st.Message() != want {
				t.Errorf("message = %q; want the provider's %q", st.Message(), want)
			}
		})
	}
	if toStatus(nil) != nil {
		t.Error("toStatus(nil) != nil")
	}
	own := status.Error(codes.Aborted, "bad token")
	if got := toStatus(own); status.Code(got) != codes.Aborted {
		t.Errorf("toStatus(status) = %v; want it unchanged", got)
	}
}

func TestClassOf(t *testing.T) {
	tests := []struct {
		code codes.Code
		want error
	}{
		{codes.NotFound, volume.ErrNotFound},
		{codes.AlreadyExists, volume.ErrExists},
		{codes.FailedPrecondition, volume.ErrInUse},
		{codes.InvalidArgument, volume.ErrInvalid},
		{codes.OutOfRange, volume.ErrInvalid},
		{codes.Unavailable, volume.ErrUnavailable},
		{codes.DeadlineExceeded, volume.ErrUnavailable},
		{codes.ResourceExhausted, volume.ErrUnavailable},
		{codes.Aborted, volume.ErrUnavailable},
		{codes.Unimplemented, volume.ErrNotSupported},
		{codes.Internal, volume.ErrUnavailable},
		{codes.Unknown, volume.ErrUnavailable},
	}
	c := &Client{path: "/run/x.sock"}
	for _, tt := range tests {
		t.Run(tt.code.String(), func(t *testing.T) {
			if got := classOf(tt.code); got != tt.want {
				t.Errorf("classOf(%v) = %v; want %v", tt.code, got, tt.want)
			}
			err := c.fail(context.Background(), "CreateVolume", status.Error(tt.code, "driver says no"))
			if !errors.Is(err, tt.want) {
				t.Errorf("fail = %v; want class %v", err, tt.want)
			}
			if tt.code != codes.DeadlineExceeded && err.Error() != fmt.Sprintf("%v: CreateVolume: driver says no", tt.want) {
				t.Errorf("fail = %q; want the driver's message kept", err)
			}
		})
	}
}

// TestRoundTrip checks that every class survives Server then Client.
func TestRoundTrip(t *testing.T) {
	c := &Client{path: "/run/x.sock"}
	for _, class := range []error{volume.ErrNotFound, volume.ErrExists, volume.ErrInUse, volume.ErrInvalid, volume.ErrUnavailable, volume.ErrNotSupported} {
		err := c.fail(context.Background(), "op", toStatus(fmt.Errorf("x: %w", class)))
		if !errors.Is(err, class) {
			t.Errorf("%v came back as %v", class, err)
		}
	}
}
