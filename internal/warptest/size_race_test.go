//go:build race

package warptest

// bulkSize is the size of the bulk transfers in the tests; smaller under the
// race detector, which slows the userspace stacks down several times.
const bulkSize = 8 << 20
