package bytesize

import "testing"

func TestFormatFixed(t *testing.T) {
	for n, want := range map[int64]string{0: "0B", 512: "512B", 4096: "4.0KiB", 1536 << 20: "1.5GiB"} {
		if got := FormatFixed(n); got != want {
			t.Errorf("FormatFixed(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestFormat(t *testing.T) {
	for n, want := range map[int64]string{512: "512B", 4096: "4KiB", 10 << 20: "10MiB", 1536 << 20: "1.5GiB"} {
		if got := Format(n); got != want {
			t.Errorf("Format(%d) = %q, want %q", n, got, want)
		}
	}
}
