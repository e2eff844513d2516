package csi

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/stowage/stowage/plugins/volume"
)

// The lock service breaks a volume's write lock, which CSI has no call
// for. It is described by hand with well-known message types, so it needs
// no generated code:
//
//	service stowage.csi.v1.Lock {
//	  // Unlock takes a volume ID and returns the holder it broke, "" when
//	  // the volume was not locked.
//	  rpc Unlock(google.protobuf.StringValue) returns (google.protobuf.StringValue);
//	}
const (
	lockServiceName = "stowage.csi.v1.Lock"
	unlockMethod    = "/" + lockServiceName + "/Unlock"
)

// lockHandler is what the lock service's handlers call.
type lockHandler interface {
	unlock(ctx context.Context, volumeID string) (string, error)
}

// lockServer serves the lock service for a volume.Unlocker.
type lockServer struct{ u volume.Unlocker }

func (s lockServer) unlock(ctx context.Context, volumeID string) (string, error) {
	if volumeID == "" {
		return "", invalid("Unlock: the volume ID is required")
	}
	return s.u.Unlock(ctx, volumeID)
}

var lockServiceDesc = grpc.ServiceDesc{
	ServiceName: lockServiceName,
	HandlerType: (*lockHandler)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Unlock",
		Handler: func(srv any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.StringValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			h := func(ctx context.Context, req any) (any, error) {
				holder, err := srv.(lockHandler).unlock(ctx, req.(*wrapperspb.StringValue).GetValue())
				if err != nil {
					return nil, err
				}
				return wrapperspb.String(holder), nil
			}
			if icpt == nil {
				return h(ctx, in)
			}
			return icpt(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: unlockMethod}, h)
		},
	}},
	Streams:  []grpc.StreamDesc{},
	Metadata: "stowage/csi/lock",
}
