// Package loopdev attaches files to loop devices, finds the loop devices
// that a file backs, detaches them, and mounts and unmounts what the
// providers stage on them.
//
// A loop device is found by the device and inode of its backing file, as
// LOOP_GET_STATUS64 reports them, never by the path the kernel shows in
// sysfs: that path is the one the file was opened by, in the mount
// namespace of whoever attached it, and a provider restarted in a new
// container, or reaching the file through a bind mount, sees the same file
// under another path (and another file under the same one).
//
// Everything here is Linux only; on other systems the package is empty.
package loopdev
