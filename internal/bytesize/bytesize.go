// Package bytesize formats byte counts for messages, in one way for every
// package that names a size to a person.
package bytesize

import (
	"strconv"
	"strings"
)

// Format formats n in binary units: 10MiB, 1.5GiB, 512B.
func Format(n int64) string {
	num, unit := scaled(n)
	return strings.TrimSuffix(num, ".0") + unit
}

// FormatFixed formats n as Format does, but keeps the one decimal past
// bytes, as the CLI's tables print sizes, like nerdctl: 512B, 4.0KiB, 1.5GiB.
func FormatFixed(n int64) string {
	num, unit := scaled(n)
	return num + unit
}

// scaled is n in the largest binary unit below it, with one decimal past
// bytes, and the unit.
func scaled(n int64) (num, unit string) {
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	if n < 1024 && n > -1024 {
		return strconv.FormatInt(n, 10), "B"
	}
	f := float64(n) / 1024
	i := 0
	for (f >= 1024 || f <= -1024) && i < len(units)-1 {
		f /= 1024
		i++
	}
	return strconv.FormatFloat(f, 'f', 1, 64), units[i]
}
