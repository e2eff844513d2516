// Package rbd is stowage's Ceph RBD provider: each volume is an RBD image
// in one pool (and optionally one RADOS namespace) of a Ceph cluster,
// reached through librados and librbd with go-ceph.
//
// The provider proper needs cgo and Ceph's client libraries (Debian
// packages librados-dev and librbd-dev) and is built only with the build
// tags "ceph" and Ceph's release tag, "pacific" for Debian 12's Ceph 16:
// `make build-rbd` sets both. Without them the package holds only its
// pure-Go parts, so that the module builds everywhere without cgo.
//
// # Options
//
// Options are the Parameters of a create request (Docker's -o key=value);
// the size is its CapacityBytes (Docker's -o size=SIZE). Unknown keys are
// rejected.
//
//	fs=ext4|xfs   the file system; default ext4. ext4 needs a size of at
//	              least 4MiB, xfs at least 300MiB.
//
// Sizes are rounded up to a multiple of 1MiB; a request without a size
// gets DefaultSize (1GiB). Images are thin: they take space in the cluster
// only as data is written. Creating a name again with the same size (the
// one it has now, after any Expand) and options returns the existing
// volume; with others it fails with ErrExists,
// as it does when an image of that name exists that the provider did not
// create. The provider records each volume's options in the image's
// metadata (key "stowage.spec") and treats images without it as foreign:
// it neither lists nor deletes them.
//
// # Mapping without kernel modules
//
// Stage needs root. The kernel's RBD client (krbd, /sys/bus/rbd) and
// rbd-nbd are not used even where present: the provider serves the open
// image in-process as a single file of a FUSE mount below its run
// directory, attaches that file to a loop device with direct I/O, creates
// the file system if the image has none, and mounts it at the staging
// path. A read that lies in one RBD object reaches the kernel from
// librbd's buffer of it, without a copy in between. Unstage undoes each
// step. The data path lives in the provider's process: a volume staged
// when it stops keeps failing I/O until it is unstaged and staged again,
// so Close unstages what it can.
//
// Other mount namespaces (a container runtime setting up a container, for
// one) copy every mount of the host, and a copy keeps the file system
// alive after the unmount here; attaching the image again would then give
// two live file systems on one image. So Unstage waits (up to 15s) until
// the loop device is no longer in use anywhere before it detaches it, and
// fails with ErrInUse naming the processes whose namespaces still hold it
// otherwise; the volume stays staged, and is never attached twice.
//
// # One writer
//
// A read-write Stage takes an exclusive RBD lock whose cookie names the
// provider's host ID; a read-only Stage (access mode reader-only) takes a
// shared lock, so many hosts can read while none writes. Stage fails with
// ErrInUse naming the holder when the lock is taken; a lock of this host's
// ID left by an earlier run of the provider is broken. Unlock (the
// operator's explicit choice after a host died) blocklists the holder's
// Ceph client, so that it can never write again, and breaks its lock.
// Images are created without librbd's exclusive-lock feature (and so
// without object-map and fast-diff), whose managed lock would contend
// with this one.
//
// # Snapshots, clones, copies, expansion
//
// Snapshot IDs are VOLUME@SNAPSHOT, and a snapshot name is unique in the
// pool. A snapshot taken while the volume is staged read-write here is
// taken with the file system frozen, so it is consistent. A volume created
// from a snapshot is an RBD clone (the snapshot is protected); a snapshot
// with clones cannot be deleted (ErrInUse), nor can a volume with
// snapshots. A volume created from a volume is a full copy, made from a
// snapshot of the source that is removed afterwards. Expand grows the
// image and, when the volume is staged here, the file system online,
// except ext4 when the process lacks CAP_SYS_RESOURCE, which the kernel
// demands for that; otherwise the next read-write Stage grows the file
// system (ext4 before mounting it).
package rbd
