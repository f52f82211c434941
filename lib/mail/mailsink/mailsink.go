// Package mailsink is an in-process SMTP server that keeps what it receives, for unit
// tests and the demo: real SMTP on loopback exercises the real sender (go-mail), where
// a fake Sender would not.
//
// It speaks EHLO/HELO, MAIL FROM, RCPT TO, DATA, RSET, NOOP and QUIT, advertises
// 8BITMIME, SMTPUTF8 and ENHANCEDSTATUSCODES (so a failure's reply text may carry an
// RFC 3463 code the client reads), and offers no STARTTLS and, unless RequireAuth is
// called, no AUTH. A mail.Sender talks to it with SMTPConfig{Host: "127.0.0.1", Port:
// <sink port>, TLS: "none"} and no Username: go-mail's default TLS policy would
// require STARTTLS, and with a Username it would require AUTH. After RequireAuth the
// sink offers AUTH PLAIN and refuses MAIL before a login with those credentials, so
// a test can give the sender a password (and look for it in what it captured).
package mailsink

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/mail"
	"net/textproto"
	"strings"
	"sync"
	"time"
)

// Limits that keep a misbehaving client from holding a test forever or filling memory.
const (
	idleTimeout    = 30 * time.Second
	maxMessageSize = 32 << 20
)

// Received is one accepted message, as the SMTP client sent it.
type Received struct {
	// From is the MAIL FROM address (without angle brackets).
	From string
	// To lists the accepted RCPT TO addresses.
	To []string
	// Data is the raw message, dot-unstuffed, with CRLF line ends.
	Data []byte
	// Header is Data's header, parsed by net/mail (nil if it did not parse).
	Header mail.Header
}

// Sink is a running SMTP sink.
type Sink struct {
	ln net.Listener
	// now sets I/O deadlines; a field so no package code calls the clock directly.
	now func() time.Time

	mu       sync.Mutex
	msgs     []Received
	failN    int
	failCode int
	failText string
	dropN    int
	user     string
	password string
	conns    map[net.Conn]struct{}
	closed   bool

	wg sync.WaitGroup
}

// Start listens on addr (use "127.0.0.1:0" for a free port) and serves until Close.
func Start(addr string) (*Sink, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("mailsink listen %s: %w", addr, err)
	}
	s := &Sink{ln: ln, now: time.Now, conns: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

// RequireAuth makes the sink offer AUTH PLAIN and accept mail only from a session
// that logged in as user with password (535 for other credentials, 530 for MAIL
// without a login).
func (s *Sink) RequireAuth(user, password string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.user, s.password = user, password
}

// credentials are what RequireAuth set ("" user: no AUTH).
func (s *Sink) credentials() (string, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.user, s.password
}

// Addr is the address the sink listens on (host:port).
func (s *Sink) Addr() string { return s.ln.Addr().String() }

// Port is the TCP port the sink listens on, for SMTPConfig.Port.
func (s *Sink) Port() int { return s.ln.Addr().(*net.TCPAddr).Port }

// Messages returns a copy of what has been accepted so far, in arrival order. A
// message is recorded before its DATA is acknowledged, so once the client's send has
// returned it is here.
func (s *Sink) Messages() []Received {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Received, len(s.msgs))
	copy(out, s.msgs)
	return out
}

// Reset forgets the messages received so far.
func (s *Sink) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.msgs = nil
}

// FailNext makes the next n RCPT TO commands fail with code (451 for a temporary
// failure, 550 for a permanent one), to test the sender's retry decisions.
func (s *Sink) FailNext(n, code int) {
	s.FailNextWith(n, code, "mailsink: injected failure")
}

// FailNextWith is FailNext with the reply's text, such as "5.1.1 no such user" or
// "5.7.1 relaying denied", for tests of how a client reads an enhanced status code.
func (s *Sink) FailNextWith(n, code int, text string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failN, s.failCode, s.failText = n, code, text
}

// DropNext makes the sink record the next n messages and then hang up without
// acknowledging them: the case where a client cannot know whether its mail was
// delivered.
func (s *Sink) DropNext(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropN = n
}

// Close stops listening, closes open connections and waits for their handlers.
func (s *Sink) Close() error {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	err := s.ln.Close()
	s.wg.Wait()
	return err
}

func (s *Sink) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return // listener closed
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			_ = c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				_ = c.Close()
			}()
			s.handle(c)
		}()
	}
}

// session is the state of one SMTP transaction.
type session struct {
	helo   bool
	authed bool
	mail   bool // MAIL FROM seen; from may be empty (the null sender <>)
	from   string
	to     []string
}

// auth runs AUTH PLAIN (with the initial response on the line or after a 334), and
// reports whether the connection is still usable.
func (s *Sink) auth(tc *textproto.Conn, reply func(int, string) bool, st *session, arg string) bool {
	user, password := s.credentials()
	mech, resp, _ := strings.Cut(arg, " ")
	if user == "" || !strings.EqualFold(mech, "PLAIN") {
		return reply(504, "5.5.4 unrecognized authentication type")
	}
	if !st.helo || st.authed {
		return reply(503, "5.5.1 EHLO first, and AUTH once")
	}
	if resp == "" {
		if !reply(334, "") {
			return false
		}
		line, err := tc.ReadLine()
		if err != nil {
			return false
		}
		resp = line
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(resp))
	parts := strings.Split(string(raw), "\x00")
	if err != nil || len(parts) != 3 || parts[1] != user || parts[2] != password {
		return reply(535, "5.7.8 authentication credentials invalid")
	}
	st.authed = true
	return reply(235, "2.7.0 authentication successful")
}

func (s *Sink) handle(c net.Conn) {
	tc := textproto.NewConn(c)
	reply := func(code int, msg string) bool {
		_ = c.SetWriteDeadline(s.now().Add(idleTimeout))
		return tc.PrintfLine("%d %s", code, msg) == nil
	}
	if !reply(220, "mailsink ESMTP ready") {
		return
	}
	var st session
	for {
		_ = c.SetReadDeadline(s.now().Add(idleTimeout))
		line, err := tc.ReadLine()
		if err != nil {
			return
		}
		verb, arg, _ := strings.Cut(line, " ")
		switch strings.ToUpper(verb) {
		case "EHLO":
			st = session{helo: true}
			_ = c.SetWriteDeadline(s.now().Add(idleTimeout))
			if tc.PrintfLine("250-mailsink greets %s", arg) != nil {
				return
			}
			if user, _ := s.credentials(); user != "" && tc.PrintfLine("250-AUTH PLAIN") != nil {
				return
			}
			if tc.PrintfLine("250-8BITMIME") != nil ||
				tc.PrintfLine("250-SMTPUTF8") != nil ||
				tc.PrintfLine("250-ENHANCEDSTATUSCODES") != nil ||
				tc.PrintfLine("250 SIZE %d", maxMessageSize) != nil {
				return
			}
			continue
		case "HELO":
			st = session{helo: true}
			if !reply(250, "mailsink") {
				return
			}
			continue
		case "NOOP":
			if !reply(250, "OK") {
				return
			}
			continue
		case "AUTH":
			if !s.auth(tc, reply, &st, arg) {
				return
			}
			continue
		case "RSET":
			st = session{helo: st.helo, authed: st.authed}
			if !reply(250, "OK") {
				return
			}
			continue
		case "QUIT":
			reply(221, "bye")
			return
		case "MAIL":
			if !st.helo {
				if !reply(503, "EHLO first") {
					return
				}
				continue
			}
			if user, _ := s.credentials(); user != "" && !st.authed {
				if !reply(530, "5.7.0 authentication required") {
					return
				}
				continue
			}
			addr, ok := pathArg(arg, "FROM:")
			if !ok {
				if !reply(501, "syntax: MAIL FROM:<address>") {
					return
				}
				continue
			}
			st.mail, st.from, st.to = true, addr, nil
			if !reply(250, "OK") {
				return
			}
		case "RCPT":
			if !st.mail {
				if !reply(503, "MAIL first") {
					return
				}
				continue
			}
			addr, ok := pathArg(arg, "TO:")
			if !ok || addr == "" {
				if !reply(501, "syntax: RCPT TO:<address>") {
					return
				}
				continue
			}
			if code, text := s.takeFailure(); code != 0 {
				if !reply(code, text) {
					return
				}
				continue
			}
			st.to = append(st.to, addr)
			if !reply(250, "OK") {
				return
			}
		case "DATA":
			if len(st.to) == 0 {
				if !reply(503, "RCPT first") {
					return
				}
				continue
			}
			if !reply(354, "end with <CRLF>.<CRLF>") {
				return
			}
			_ = c.SetReadDeadline(s.now().Add(idleTimeout))
			data, err := io.ReadAll(io.LimitReader(tc.DotReader(), maxMessageSize+1))
			if err != nil {
				return
			}
			if len(data) > maxMessageSize {
				reply(552, "message too large")
				return
			}
			r := Received{From: st.from, To: st.to, Data: toCRLF(data)}
			if m, err := mail.ReadMessage(bytes.NewReader(r.Data)); err == nil {
				r.Header = m.Header
			}
			drop := s.record(r)
			st = session{helo: true}
			if drop {
				return // hang up without a reply
			}
			if !reply(250, "OK: queued") {
				return
			}
		default:
			if !reply(502, "command not implemented") {
				return
			}
		}
	}
}

// record stores r and reports whether to drop the connection instead of replying.
func (s *Sink) record(r Received) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.msgs = append(s.msgs, r)
	if s.dropN > 0 {
		s.dropN--
		return true
	}
	return false
}

func (s *Sink) takeFailure() (int, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failN <= 0 {
		return 0, ""
	}
	s.failN--
	return s.failCode, s.failText
}

// pathArg parses "FROM:<addr> PARAMS" (or TO:), returning addr. Parameters such as
// BODY=8BITMIME and SMTPUTF8 are accepted and ignored.
func pathArg(arg, prefix string) (string, bool) {
	if len(arg) < len(prefix) || !strings.EqualFold(arg[:len(prefix)], prefix) {
		return "", false
	}
	rest := strings.TrimSpace(arg[len(prefix):])
	if !strings.HasPrefix(rest, "<") {
		return "", false
	}
	end := strings.IndexByte(rest, '>')
	if end < 0 {
		return "", false
	}
	return rest[1:end], true
}

// toCRLF restores the CRLF line ends that textproto's DotReader turned into LF.
func toCRLF(b []byte) []byte {
	return bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n"))
}

// ErrNoMessage is returned by Last when nothing has been received.
var ErrNoMessage = errors.New("mailsink: no message received")

// Last returns the most recent message, for tests that send one.
func (s *Sink) Last() (Received, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.msgs) == 0 {
		return Received{}, ErrNoMessage
	}
	return s.msgs[len(s.msgs)-1], nil
}
