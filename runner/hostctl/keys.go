package hostctl

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// signers caches parsed private keys by path. A shutdown dials every host
// of a group at once, usually with the same key file; parsing it once
// instead of a hundred times keeps the burst cheap. Entries are checked
// against the file's size and modification time, so a rotated key is
// picked up without a restart.
var signers sync.Map // path -> cachedSigner

type cachedSigner struct {
	size    int64
	modTime time.Time
	signer  ssh.Signer
}

// loadSigner returns the signer for the private key at path. Its errors
// name the file but never include its contents.
func loadSigner(path string) (ssh.Signer, error) {
	if path == "" {
		return nil, errors.New("no private key file configured")
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("read private key: %w", err)
	}
	if v, ok := signers.Load(path); ok {
		c := v.(cachedSigner)
		if c.size == fi.Size() && c.modTime.Equal(fi.ModTime()) {
			return c.signer, nil
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read private key: %w", err)
	}
	signer, err := ssh.ParsePrivateKey(data)
	if err != nil {
		var pp *ssh.PassphraseMissingError
		if errors.As(err, &pp) {
			return nil, fmt.Errorf("private key %s is passphrase-protected; an unattended service needs an unencrypted key", path)
		}
		return nil, fmt.Errorf("parse private key %s: not a valid private key", path)
	}
	signers.Store(path, cachedSigner{size: fi.Size(), modTime: fi.ModTime(), signer: signer})
	return signer, nil
}

var (
	probeOnce sync.Once
	probeKey  ssh.PublicKey
)

// hostKeyAlgorithms returns the host key algorithms known_hosts has keys
// for at addr, so the server is asked for a key we can check. Without it a
// host with both an ed25519 and an ECDSA key, listed in known_hosts by its
// ed25519 key only, may offer ECDSA first and be reported as a mismatch.
// It returns nil (library defaults) when the host is unknown or a key type
// is not recognised.
func hostKeyAlgorithms(cb ssh.HostKeyCallback, addr string, remote net.Addr) []string {
	probeOnce.Do(func() {
		// A key no known_hosts file lists: the callback's error then
		// names every key known for the host.
		pub, _, err := ed25519.GenerateKey(nil)
		if err == nil {
			probeKey, _ = ssh.NewPublicKey(pub)
		}
	})
	if probeKey == nil {
		return nil
	}
	var keyErr *knownhosts.KeyError
	if err := cb(addr, remote, probeKey); !errors.As(err, &keyErr) || len(keyErr.Want) == 0 {
		return nil
	}
	var algos []string
	seen := map[string]bool{}
	add := func(a string) {
		if !seen[a] {
			seen[a] = true
			algos = append(algos, a)
		}
	}
	// known_hosts reports @cert-authority lines like plain keys. A CA's key
	// must not put the plain algorithm of its type first: a host that has
	// only a certificate would then be asked for a plain key that no line
	// lists, and refused as a mismatch. Plain keys first, then certificates.
	var plain []knownhosts.KnownKey
	for _, k := range keyErr.Want {
		if !authorityLine(k) {
			plain = append(plain, k)
		}
	}
	for _, k := range plain {
		switch t := k.Key.Type(); t {
		case ssh.KeyAlgoRSA:
			add(ssh.KeyAlgoRSASHA512)
			add(ssh.KeyAlgoRSASHA256)
			add(ssh.KeyAlgoRSA)
		case ssh.KeyAlgoED25519, ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384,
			ssh.KeyAlgoECDSA521, ssh.KeyAlgoSKED25519, ssh.KeyAlgoSKECDSA256:
			add(t)
		default:
			return nil
		}
	}
	// A host that presents a certificate must still be able to: certificate
	// algorithms go last, and the callback checks the CA as usual.
	for _, a := range []string{ssh.CertAlgoED25519v01, ssh.CertAlgoECDSA256v01,
		ssh.CertAlgoECDSA384v01, ssh.CertAlgoECDSA521v01,
		ssh.CertAlgoRSASHA512v01, ssh.CertAlgoRSASHA256v01} {
		add(a)
	}
	return algos
}

// authorityLine reports whether k comes from an @cert-authority line of its
// known_hosts file (knownhosts does not say).
func authorityLine(k knownhosts.KnownKey) bool {
	data, err := os.ReadFile(k.Filename)
	if err != nil || k.Line < 1 {
		return false
	}
	lines := strings.Split(string(data), "\n")
	if k.Line > len(lines) {
		return false
	}
	return strings.HasPrefix(strings.TrimSpace(lines[k.Line-1]), "@cert-authority")
}
