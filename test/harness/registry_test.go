package harness

import "testing"

func TestParsePushLine(t *testing.T) {
	d := "sha256:" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	got, err := ParsePushLine(d + " 12 layers, uploaded 3 blobs, 4096 bytes\n")
	if err != nil || got != (PushStats{Digest: d, Layers: 12, Blobs: 3, Sent: 4096}) {
		t.Errorf("ParsePushLine: %+v, %v", got, err)
	}
	if _, err := ParsePushLine("pushed\n"); err == nil {
		t.Error("ParsePushLine took a line that is not push's summary")
	}
}
