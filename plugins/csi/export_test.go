package csi

// ServeTest serves a provider on a fresh socket until the test ends and
// returns the endpoint, for the tests of package csi_test.
var ServeTest = serve
