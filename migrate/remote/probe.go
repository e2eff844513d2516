package remote

import "crypto/ed25519"

// probeKey is an ed25519 public key no host has: 32 bytes of 0x01.
var probeKey = ed25519.PublicKey{
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
	1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
}
