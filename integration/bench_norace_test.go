//go:build !race

package integration

// raceEnabled tells that this test binary has the race detector, which
// would distort every figure of the benchmarks.
const raceEnabled = false
