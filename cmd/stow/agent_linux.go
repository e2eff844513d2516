package main

import "golang.org/x/sys/unix"

// clearUmask lets the agent create files with their modes as they are:
// what it creates gets the source's permission bits.
func clearUmask() { unix.Umask(0) }
