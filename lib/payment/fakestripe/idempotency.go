package fakestripe

import (
	"fmt"
	"net/http"
)

// idemScope is where an idempotency key lives: Stripe scopes keys per API key.
type idemScope struct{ apiKey, key string }

// idemEntry is a remembered request: its parameters and, once done, its first answer.
type idemEntry struct {
	method, path string
	params       string // the parsed form, re-encoded with sorted keys
	created      int64  // unix nanoseconds on the fake's clock
	done         bool
	resp         response
	reqID        string
}

// serveIdempotent applies Stripe's idempotency semantics around a POST: the first
// answer for a key is stored with the request's parameters and replayed verbatim
// (with Idempotent-Replayed: true) to repeats with the same parameters; a repeat with
// other parameters is an idempotency_error; a repeat while the first is still in
// flight is a 409; keys are forgotten after 24 hours. Answers that Stripe does not
// store (validation errors) release the key.
func (s *Server) serveIdempotent(w http.ResponseWriter, req *request, endpoint func(*request) response) {
	if len(req.idemKey) > 255 {
		writeResponse(w, invalidParam("", "", "Idempotency-Key must be at most 255 characters long."))
		return
	}
	canon := req.form.Encode() // url.Values.Encode sorts by key: order-insensitive
	scope := idemScope{apiKey: req.apiKey, key: req.idemKey}
	now := s.now().UnixNano()

	s.mu.Lock()
	e := s.idem[scope]
	if e != nil && now-e.created >= int64(idempotencyTTL) {
		delete(s.idem, scope)
		e = nil
	}
	if e != nil {
		if !e.done {
			s.mu.Unlock()
			writeResponse(w, errorResponse(http.StatusConflict, apiError{
				Type: "idempotency_error",
				Code: "idempotency_key_in_use",
				Message: fmt.Sprintf("There is currently another in-progress request using this Idempotent Key (that probably means you submitted twice, and the other request is still going through): %s. Please try again later.",
					req.idemKey),
				DocURL: "https://stripe.com/docs/error-codes/idempotency-key-in-use",
			}, false))
			return
		}
		if e.method != req.method || e.path != req.path || e.params != canon {
			s.mu.Unlock()
			writeResponse(w, errorResponse(http.StatusBadRequest, apiError{
				Type: "idempotency_error",
				Message: fmt.Sprintf("Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '%s' if you meant to execute a different request.",
					req.idemKey),
			}, false))
			return
		}
		resp, orig := e.resp, e.reqID
		s.mu.Unlock()
		w.Header().Set("Idempotent-Replayed", "true")
		w.Header().Set("Original-Request", orig)
		writeResponse(w, resp)
		return
	}
	e = &idemEntry{method: req.method, path: req.path, params: canon, created: now}
	s.idem[scope] = e
	var p *pause
	if len(s.pauses) > 0 {
		p, s.pauses = s.pauses[0], s.pauses[1:]
	}
	s.mu.Unlock()

	if p != nil {
		close(p.arrived)
		select {
		case <-p.release:
		case <-s.closing:
		}
	}

	resp := endpoint(req)

	s.mu.Lock()
	if s.idem[scope] == e {
		if resp.store {
			e.done, e.resp, e.reqID = true, resp, req.reqID
		} else {
			delete(s.idem, scope)
		}
	}
	s.mu.Unlock()
	s.deliver(w, req, resp)
}

// deliver writes a POST's answer, unless DropResponseNext asked to lose it: then the
// fake waits for the client to give up and drops the connection without answering.
func (s *Server) deliver(w http.ResponseWriter, req *request, resp response) {
	s.mu.Lock()
	drop := s.drops > 0
	if drop {
		s.drops--
	}
	s.mu.Unlock()
	if drop {
		select {
		case <-req.ctx.Done():
		case <-s.closing:
		}
		panic(http.ErrAbortHandler) // net/http closes the connection without logging
	}
	writeResponse(w, resp)
}
