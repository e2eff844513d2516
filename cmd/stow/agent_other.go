//go:build !linux

package main

func clearUmask() {}
