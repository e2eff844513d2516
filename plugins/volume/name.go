package volume

// NameRule is Docker's rule for volume and container names, which stowage
// follows for the names of volumes, snapshots, containers and providers.
const NameRule = "[a-zA-Z0-9][a-zA-Z0-9_.-]*"

// ValidName reports whether s follows NameRule. Such a name is never "."
// or "..", never starts with a dot and has no slash, so it is one file
// name that is not hidden.
func ValidName(s string) bool {
	if s == "" || s[0] == '_' || s[0] == '.' || s[0] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}
