//go:build !race

package warptest

// bulkSize is the size of the bulk transfers in the tests.
const bulkSize = 32 << 20
