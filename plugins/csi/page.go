package csi

import (
	"fmt"
	"sort"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/stowage/stowage/plugins/volume"
)

// page returns one page of items for a List call of the server: items
// sorted by id, those after the starting token, at most maxEntries of them
// (0 is all), and the token of the next page ("" after the last).
func page[T any](op string, items []T, id func(T) string, maxEntries int32, token string) ([]T, string, error) {
	if maxEntries < 0 {
		return nil, "", invalid("%s: max_entries must not be negative", op)
	}
	var after string
	if token != "" {
		var ok bool
		if after, ok = decodeToken(token); !ok {
			return nil, "", status.Errorf(codes.Aborted, "%s: starting_token %q is not valid; start again without one", op, token)
		}
	}
	sort.Slice(items, func(i, j int) bool { return id(items[i]) < id(items[j]) })
	first := sort.Search(len(items), func(i int) bool { return strings.Compare(id(items[i]), after) > 0 })
	items = items[first:]
	if n := int(maxEntries); n > 0 && len(items) > n {
		return items[:n], encodeToken(id(items[n-1])), nil
	}
	return items, "", nil
}

// allPages reads every page of a List call of the client: fetch returns
// the entries of the page at token and the next token. Entries are
// deduplicated by id; entries without one are dropped.
func allPages[T any](op string, id func(T) string, fetch func(token string) ([]T, string, error)) ([]T, error) {
	out := []T{}
	seen := map[string]bool{}
	token := ""
	for {
		items, next, err := fetch(token)
		if err != nil {
			return nil, err
		}
		for _, it := range items {
			if k := id(it); k != "" && !seen[k] {
				seen[k] = true
				out = append(out, it)
			}
		}
		if next == "" {
			return out, nil
		}
		if next == token {
			return nil, fmt.Errorf("%w: %s: the driver returned the same next_token %q twice", volume.ErrUnavailable, op, next)
		}
		token = next
	}
}
