//go:build !linux

package agent

func space(string) (int64, int64, error) { return 0, 0, errNotSupported }
