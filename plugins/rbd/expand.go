//go:build ceph && linux && cgo

package rbd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	librbd "github.com/ceph/go-ceph/rbd"

	"github.com/stowage/stowage/plugins/volume"
)

// Expand grows the image to req.CapacityBytes (rounded up to 1MiB) and,
// when the volume is staged read-write here, its file system online;
// otherwise, and for ext4 when the process lacks CAP_SYS_RESOURCE, which
// the kernel demands for growing a mounted ext4, the next read-write
// Stage grows the file system. It returns the new capacity.
func (p *Provider) Expand(ctx context.Context, req volume.ExpandRequest) (int64, error) {
	unlock, err := p.lockID(ctx, "volume", req.VolumeID)
	if err != nil {
		return 0, err
	}
	defer unlock()
	id := req.VolumeID
	have, err := p.describe(id)
	if err != nil {
		return 0, fmt.Errorf("expand volume %q: %w", id, err)
	}
	want, err := checkSize(req.CapacityBytes, have.spec.FS)
	switch {
	case req.CapacityBytes <= 0:
		return 0, fmt.Errorf("%w: expand volume %q: no size given", volume.ErrInvalid, id)
	case err != nil:
		return 0, fmt.Errorf("expand volume %q: %w", id, err)
	case req.CapacityBytes < have.size:
		return 0, fmt.Errorf("%w: expand volume %q: %s is less than its size %s (volumes never shrink)",
			volume.ErrInvalid, id, volume.FormatSize(req.CapacityBytes), volume.FormatSize(have.size))
	case want <= have.size:
		return have.size, nil
	}
	st := p.stagedAt(id)
	online := st != nil && !st.readOnly && canGrowOnline(st.fs)
	img := (*librbd.Image)(nil)
	if st != nil && !st.readOnly {
		img = st.img
	} else {
		if img, err = librbd.OpenImage(p.ioctx, id, librbd.NoSnapshot); err != nil {
			return 0, wrap(err, "open image", strconv.Quote(id))
		}
		defer img.Close()
	}
	if !online {
		// Grow the file system at the next read-write Stage, wherever it
		// is; set before the resize so that no Stage misses it.
		if err := img.SetMetadata(metaGrow, "1"); err != nil {
			return 0, wrap(err, "write metadata of image", strconv.Quote(id))
		}
	}
	if err := img.Resize(uint64(want)); err != nil {
		return 0, wrap(err, "resize image", strconv.Quote(id))
	}
	// The recorded size is the volume's size from now on: a create of the
	// name (another host taking the volume over) asks for it.
	grown := have.spec
	grown.CapacityBytes = want
	if err := writeSpec(img, grown); err != nil {
		return 0, err
	}
	p.log.InfoContext(ctx, "grew image", "volume", id, "size", want)
	switch {
	case online:
		if err := st.loop.refreshSize(); err != nil {
			return 0, err
		}
		if err := growFS(ctx, st.loop.path, st.path, st.fs); err != nil {
			return 0, fmt.Errorf("expand volume %q: %w", id, err)
		}
		p.log.InfoContext(ctx, "grew file system", "volume", id)
	case st != nil && !st.readOnly:
		if err := st.loop.refreshSize(); err != nil {
			return 0, err
		}
		p.log.WarnContext(ctx, "the file system grows when the volume is next staged: growing a mounted ext4 needs CAP_SYS_RESOURCE",
			"volume", id)
	}
	return want, nil
}

// Unlock breaks the locks on the volume's image after blocklisting their
// holders' Ceph clients, so that a host that lost its lock can no longer
// write, and returns who held them ("" when nobody did). A lock this
// provider holds is not broken: unstage the volume instead.
func (p *Provider) Unlock(ctx context.Context, volumeID string) (string, error) {
	unlock, err := p.lockID(ctx, "volume", volumeID)
	if err != nil {
		return "", err
	}
	defer unlock()
	if _, err := p.describe(volumeID); err != nil {
		return "", fmt.Errorf("unlock volume %q: %w", volumeID, err)
	}
	img, err := librbd.OpenImageReadOnly(p.ioctx, volumeID, librbd.NoSnapshot)
	if err != nil {
		return "", wrap(err, "open image", strconv.Quote(volumeID))
	}
	defer img.Close()
	_, lockers, err := img.ListLockers()
	if err != nil {
		return "", wrap(err, "list locks of image", strconv.Quote(volumeID))
	}
	if len(lockers) == 0 {
		return "", nil
	}
	for _, l := range lockers {
		if l.Client == p.self {
			return "", fmt.Errorf("%w: unlock volume %q: this host holds it (staged here); unstage it instead",
				volume.ErrInUse, volumeID)
		}
	}
	holder := describeLockers(lockers)
	for _, l := range lockers {
		// Fence first: once the lock is gone, another host may write.
		if err := p.blocklist(l.Addr); err != nil {
			return "", fmt.Errorf("unlock volume %q: fence %s: %w", volumeID, l.Client, err)
		}
		if err := img.BreakLock(l.Client, l.Cookie); err != nil && !errors.Is(err, librbd.ErrNotFound) {
			return "", wrap(err, "break lock of image", strconv.Quote(volumeID))
		}
	}
	p.log.WarnContext(ctx, "broke the locks of a volume and fenced their holders", "volume", volumeID, "holder", holder)
	return holder, nil
}

// blocklist adds a client address to the cluster's blocklist, so that the
// OSDs refuse its requests.
func (p *Provider) blocklist(addr string) error {
	cmd, err := json.Marshal(map[string]string{"prefix": "osd blocklist", "blocklistop": "add", "addr": addr})
	if err != nil {
		return err
	}
	_, status, err := p.conn.MonCommand(cmd)
	if err != nil {
		if status = strings.TrimSpace(status); status != "" {
			return fmt.Errorf("%w (%s)", wrap(err, "blocklist", addr), status)
		}
		return wrap(err, "blocklist", addr)
	}
	return nil
}
