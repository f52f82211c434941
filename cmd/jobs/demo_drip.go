package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"database/sql"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/cronkit/cronkit/lib/mail/mailsink"
)

// dripDemo is the onboarding funnel's part of the demo: the fresh signups go through
// it over simulated days, one converts midway (the web app records a card), one
// unsubscribes with a one-click POST to the running unsubscribe server, found in the
// List-Unsubscribe header of the mail it received.
type dripDemo struct {
	e      *env
	db     *sql.DB
	sink   *mailsink.Sink
	dir    string
	client *http.Client // trusts the server's self-signed certificate
	url    string       // the unsubscribe server's base URL
	server *exec.Cmd
}

// The signups the story follows: created without a card, so they stay in the funnel.
const (
	demoConverts     = 1801
	demoUnsubscribes = 1802
)

// dripEnvNames are the variables start adds, in the order it appends them.
func dripEnvNames() []string {
	return []string{"CRONKIT_UNSUBSCRIBE_URL", "CRONKIT_UNSUBSCRIBE_SECRET", "CRONKIT_UNSUBSCRIBE_MAILTO",
		"CRONKIT_CONSOLE_URL", "CRONKIT_DOCS_URL", "CRONKIT_BILLING_URL", "CRONKIT_SUPPORT_EMAIL"}
}

// start runs `cronkit drip unsubscribe-server` over TLS on a free loopback port (RFC 8058
// wants https) and returns the environment the drip runs need.
func (d *dripDemo) start(ctx context.Context, env []string) ([]string, error) {
	certFile, keyFile, pool, err := selfSigned(d.dir)
	if err != nil {
		return nil, err
	}
	d.client = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	d.url = "https://" + addr + "/unsubscribe"
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	vals := map[string]string{
		"CRONKIT_UNSUBSCRIBE_URL":    d.url,
		"CRONKIT_UNSUBSCRIBE_SECRET": hex.EncodeToString(secret),
		"CRONKIT_UNSUBSCRIBE_MAILTO": "unsubscribe@cronkit.example",
		"CRONKIT_CONSOLE_URL":        "https://console.cronkit.example/",
		"CRONKIT_DOCS_URL":           "https://docs.cronkit.example/getting-started",
		"CRONKIT_BILLING_URL":        "https://console.cronkit.example/billing",
		"CRONKIT_SUPPORT_EMAIL":      "support@cronkit.example",
	}
	for _, name := range dripEnvNames() {
		env = append(env, name+"="+vals[name])
	}
	d.server = exec.CommandContext(ctx, d.e.self, "drip", "unsubscribe-server", "--listen", addr,
		"--tls-cert", certFile, "--tls-key", keyFile, "--org", "Cronkit Demo Cloud")
	d.server.Env = env
	d.server.Stdout, d.server.Stderr = d.e.stderr, d.e.stderr
	if err := d.server.Start(); err != nil {
		return nil, fmt.Errorf("unsubscribe server: %w", err)
	}
	for i := 0; ; i++ {
		resp, err := d.client.Get("https://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if i == 100 {
			d.stop()
			return nil, fmt.Errorf("unsubscribe server did not answer on %s: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	fmt.Fprintf(d.e.stdout, "unsubscribe server %s (cronkit drip unsubscribe-server, TLS)\n", d.url)
	return env, nil
}

// stop ends the server as systemd would: SIGTERM, then wait.
func (d *dripDemo) stop() {
	if d.server == nil || d.server.Process == nil {
		return
	}
	_ = d.server.Process.Signal(syscall.SIGTERM)
	_ = d.server.Wait()
}

// convert is the web app recording a verified card: the funnel's goal.
func (d *dripDemo) convert(ctx context.Context) error {
	d.e.section(fmt.Sprintf("account %d adds a card in the console (the web app sets payment_method_verified)", demoConverts))
	_, err := d.db.ExecContext(ctx, "UPDATE accounts SET payment_method_verified = 1 WHERE id = ?", demoConverts)
	return err
}

// unsubscribe does what Gmail's "Unsubscribe" button does: a one-click POST (RFC
// 8058) to the https URL in List-Unsubscribe of the mail the account received.
func (d *dripDemo) unsubscribe(ctx context.Context) error {
	d.e.section(fmt.Sprintf("account %d clicks unsubscribe in its mail client (RFC 8058 one-click POST)", demoUnsubscribes))
	var email string
	if err := d.db.QueryRowContext(ctx, "SELECT email FROM accounts WHERE id = ?", demoUnsubscribes).Scan(&email); err != nil {
		return err
	}
	var link string
	for _, m := range d.sink.Messages() {
		if len(m.To) == 1 && m.To[0] == email && m.Header != nil {
			link = m.Header.Get("List-Unsubscribe")
		}
	}
	if link == "" {
		return fmt.Errorf("no mail with List-Unsubscribe reached %s", email)
	}
	fmt.Fprintf(d.e.stdout, "List-Unsubscribe: %s\n", link)
	var target string
	for _, part := range strings.Split(link, ",") {
		u := strings.Trim(strings.TrimSpace(part), "<>")
		if strings.HasPrefix(u, "https://") {
			target = u
		}
	}
	if _, err := url.Parse(target); err != nil || target == "" {
		return fmt.Errorf("no https link in List-Unsubscribe %q", link)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, strings.NewReader("List-Unsubscribe=One-Click"))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := d.client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	fmt.Fprintf(d.e.stdout, "POST %s -> %s\n", strings.SplitN(target, "?", 2)[0]+"?token=...", resp.Status)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("one-click unsubscribe answered %s", resp.Status)
	}
	return nil
}

// selfSigned writes a certificate for 127.0.0.1 and its key into dir.
func selfSigned(dir string) (certFile, keyFile string, pool *x509.CertPool, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "cronkit demo"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return "", "", nil, err
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", "", nil, err
	}
	certFile, keyFile = filepath.Join(dir, "unsubscribe.crt"), filepath.Join(dir, "unsubscribe.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return "", "", nil, err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return "", "", nil, err
	}
	return certFile, keyFile, pool, nil
}

// dripSteps is the funnel's story, after the abuse days: each run at 14:00 UTC of a
// simulated day, when most of the signups' zones are inside the send window.
func dripSteps(d *dripDemo, day func(int) time.Time, roDSN string) []demoStep {
	at := func(n int) string {
		t := day(n)
		return time.Date(t.Year(), t.Month(), t.Day(), 14, 0, 0, 0, time.UTC).Format(time.RFC3339)
	}
	since := day(-4).Format(time.RFC3339)
	converted, unsubscribed := fmt.Sprint(demoConverts), fmt.Sprint(demoUnsubscribes)
	return []demoStep{
		{title: "drip, dry run: who would get which step, when, in their own time zone", args: []string{"drip", "--dry-run", "--now", at(0), "--since", since}, dsn: roDSN, ok: []int{0, 3}},
		{title: "drip for real: the funnel starts; fresh signups are welcomed (the miner's accounts exit: open abuse case)", args: []string{"drip", "--now", at(0), "--since", since}, ok: []int{0, 3}},
		{title: "drip, the next day", args: []string{"drip", "--now", at(1)}, ok: []int{0, 3}},
		{title: "", do: d.convert},
		{title: "", do: d.unsubscribe},
		{title: "drip, day 2: the converted and the unsubscribed leave the funnel, the others get their next step", args: []string{"drip", "--now", at(2)}, ok: []int{0, 3}},
		{title: "drip, day 5", args: []string{"drip", "--now", at(5)}, ok: []int{0, 3}},
		{title: "drip, day 13: nothing is due (trial_ending waits for 3 days before each trial ends, last_call comes after it)", args: []string{"drip", "--now", at(13)}, ok: []int{0, 3}},
		{title: "what happened to the signup who added a card?", args: []string{"drip", "show", converted}, ok: []int{0}},
		{title: "what happened to the signup who unsubscribed?", args: []string{"drip", "show", unsubscribed}, ok: []int{0}},
	}
}

// demoUnsubscribeFor names a message's one-click header for the mail listing.
func demoUnsubscribeFor(m mailsink.Received) string {
	if m.Header == nil || m.Header.Get("List-Unsubscribe-Post") == "" {
		return ""
	}
	return " [List-Unsubscribe, one-click]"
}
