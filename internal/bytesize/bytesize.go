// Package bytesize formats byte counts for messages, in one way for every
// package that names a size to a person.
package bytesize

import (
	"strconv"
	"strings"
)

// Format formats n in binary units: 10MiB, 1.5GiB, 512B.
func Format(n int64) string {
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	if n < 1024 && n > -1024 {
		return strconv.FormatInt(n, 10) + "B"
	}
	f := float64(n) / 1024
	i := 0
	for (f >= 1024 || f <= -1024) && i < len(units)-1 {
		f /= 1024
		i++
	}
	s := strconv.FormatFloat(f, 'f', 1, 64)
	return strings.TrimSuffix(s, ".0") + units[i]
}
