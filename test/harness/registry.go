package harness

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Registry is a CNCF distribution registry the harness started on
// localhost: TLS with a certificate of a CA made for it, htpasswd basic
// auth, filesystem storage in a temporary directory.
type Registry struct {
	// Host is "127.0.0.1:PORT", the registry part of a reference.
	Host string
	// CAFile is the PEM of the CA that signed its certificate.
	CAFile string
	// AuthFile is a docker-style config.json with its credentials;
	// ConfigDir is the directory that holds it, for $DOCKER_CONFIG.
	AuthFile, ConfigDir string
	// User and Password are the credentials.
	User, Password string
	// Storage is the registry's filesystem storage root.
	Storage string
	proc    *process
}

// StartRegistry starts the registry that hack/install-registry.sh built
// into the runtime cache (building it when missing) and waits until it
// answers; a cleanup ends it by its PID.
func StartRegistry(t TB) *Registry {
	t.Helper()
	bin := GoTool(t, "registry")
	dir := tempDir(t, "registry")
	r := &Registry{User: "pusher", Password: "s3cret-" + randomHex(t), Storage: filepath.Join(dir, "storage"), ConfigDir: filepath.Join(dir, "docker")}
	r.Host = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	ca, caKey := makeCA(t)
	r.CAFile = filepath.Join(dir, "ca.pem")
	writePEM(t, r.CAFile, "CERTIFICATE", ca.Raw)
	cert, key := makeLeaf(t, ca, caKey)
	writePEM(t, filepath.Join(dir, "cert.pem"), "CERTIFICATE", cert)
	writePEM(t, filepath.Join(dir, "key.pem"), "EC PRIVATE KEY", key)
	hash, err := bcrypt.GenerateFromPassword([]byte(r.Password), bcrypt.MinCost)
	if err != nil {
		t.Fatalf("bcrypt: %v", err)
	}
	mustWrite(t, filepath.Join(dir, "htpasswd"), r.User+":"+string(hash)+"\n")
	mustWrite(t, filepath.Join(dir, "config.yml"), fmt.Sprintf(`version: 0.1
log:
  level: info
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
  secret: %s
  tls:
    certificate: %s
    key: %s
auth:
  htpasswd:
    realm: nri-volumes-test
    path: %s
`, r.Storage, r.Host, randomHex(t), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), filepath.Join(dir, "htpasswd")))
	if err := os.MkdirAll(r.ConfigDir, 0o700); err != nil {
		t.Fatalf("%v", err)
	}
	r.AuthFile = filepath.Join(r.ConfigDir, "config.json")
	r.writeAuthFile(t, r.AuthFile, r.Host)

	cmd := exec.Command(bin, "serve", filepath.Join(dir, "config.yml"))
	r.proc = startProcess(t, "registry", cmd, filepath.Join(dir, "registry.log"))
	t.Cleanup(func() { r.proc.stop(5 * time.Second) })

	pool := x509.NewCertPool()
	pool.AddCert(ca)
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	ready := waitFor(30*time.Second, func() bool {
		resp, err := client.Get("https://" + r.Host + "/v2/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusUnauthorized
	})
	if !ready {
		log, _ := os.ReadFile(filepath.Join(dir, "registry.log"))
		t.Fatalf("registry on %s not ready: %s", r.Host, log)
	}
	return r
}

// AuthFileFor writes a docker-style config.json with the registry's
// credentials for host (a proxy's "127.0.0.1:PORT" in front of it) into a
// new temporary directory and returns its path.
func (r *Registry) AuthFileFor(t TB, host string) string {
	t.Helper()
	p := filepath.Join(tempDir(t, "auth"), "config.json")
	r.writeAuthFile(t, p, host)
	return p
}

func (r *Registry) writeAuthFile(t TB, path, host string) {
	t.Helper()
	auth, _ := json.Marshal(map[string]any{"auths": map[string]any{
		host: map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(r.User + ":" + r.Password))},
	}})
	mustWrite(t, path, string(auth))
}

// PushStats is what one `volume push` says it did: the manifest's digest,
// the layers of the artifact, and the blobs and bytes it uploaded.
type PushStats struct {
	Digest              string
	Layers, Blobs, Sent int64
}

// pushLineRE is the one line `volume push` prints on success, and nothing
// else.
var pushLineRE = regexp.MustCompile(`^(sha256:[0-9a-f]{64}) (\d+) layers, uploaded (\d+) blobs, (\d+) bytes\n$`)

// ParsePushLine reads the output of a `volume push` that succeeded.
func ParsePushLine(out string) (PushStats, error) {
	m := pushLineRE.FindStringSubmatch(out)
	if m == nil {
		return PushStats{}, fmt.Errorf("volume push printed %q, not its summary line", out)
	}
	n := func(s string) int64 { v, _ := strconv.ParseInt(s, 10, 64); return v }
	return PushStats{Digest: m[1], Layers: n(m[2]), Blobs: n(m[3]), Sent: n(m[4])}, nil
}

// RegistriesYAML is the plugin's registries section: pods of namespace may
// seed volumes from references matching refs, with the credentials of
// authFile and the CA of caFile. It goes in PluginConfig.Extra.
func RegistriesYAML(authFile, caFile, namespace, refs string) string {
	return fmt.Sprintf("registries:\n  authFile: %q\n  caFile: %q\n  allow:\n    - {namespaces: [%s], refs: [%q]}\n",
		authFile, caFile, namespace, refs)
}

// BlobBytes sums the sizes of the blobs the registry stores, and counts them.
func (r *Registry) BlobBytes(t TB) (n int, bytes int64) {
	t.Helper()
	blobs, err := r.Blobs()
	if err != nil {
		t.Fatalf("walk registry storage: %v", err)
	}
	for _, size := range blobs {
		bytes += size
	}
	return len(blobs), bytes
}

// Blobs maps each blob in the registry's storage (below
// docker/registry/v2/blobs) to its size. A registry keeps a blob once
// whichever repositories link it, so the blobs new between two listings are
// what it received and had not held before.
func (r *Registry) Blobs() (map[string]int64, error) {
	blobs := map[string]int64{}
	root := filepath.Join(r.Storage, "docker", "registry", "v2", "blobs")
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if os.IsNotExist(err) {
			return nil
		}
		if err != nil || d.IsDir() || d.Name() != "data" {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		// .../blobs/sha256/ab/abcd.../data
		hex := filepath.Base(filepath.Dir(p))
		alg := filepath.Base(filepath.Dir(filepath.Dir(filepath.Dir(p))))
		blobs[alg+":"+hex] = info.Size()
		return nil
	})
	return blobs, err
}

// BlobPath is where the registry keeps the blob of digest "sha256:HEX".
func (r *Registry) BlobPath(digest string) string {
	hex := digest[len("sha256:"):]
	return filepath.Join(r.Storage, "docker", "registry", "v2", "blobs", "sha256", hex[:2], hex, "data")
}

func randomHex(t TB) string {
	t.Helper()
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("%v", err)
	}
	return fmt.Sprintf("%x", b)
}

func makeCA(t TB) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("%v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "nri-volumes test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("%v", err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return ca, key
}

// makeLeaf returns a certificate for 127.0.0.1 and localhost signed by ca,
// and its key, both DER.
func makeLeaf(t TB, ca *x509.Certificate, caKey *ecdsa.PrivateKey) (cert, key []byte) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("%v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	cert, err = x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
	if err != nil {
		t.Fatalf("%v", err)
	}
	key, err = x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return cert, key
}

func writePEM(t TB, path, typ string, der []byte) {
	t.Helper()
	mustWrite(t, path, string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})))
}

func mustWrite(t TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatalf("%v", err)
	}
}
