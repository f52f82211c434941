package fakestripe

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
)

// Customer seeds a customer, from Go or from a fixtures file.
type Customer struct {
	// ID is the customer's Stripe ID (cus_...); empty means the fake picks one.
	ID    string `json:"id"`
	Email string `json:"email"`
	Name  string `json:"name,omitempty"`
	// DefaultPaymentMethod is a Stripe test PaymentMethod such as pm_card_visa, set as
	// invoice_settings.default_payment_method; empty means the customer has none.
	DefaultPaymentMethod string            `json:"default_payment_method,omitempty"`
	Metadata             map[string]string `json:"metadata,omitempty"`
	// Created is a unix time in seconds; 0 means the fake's now.
	Created int64 `json:"created,omitempty"`
}

// Fixtures is the document LoadFixtures reads.
type Fixtures struct {
	Customers []Customer `json:"customers"`
}

// LoadFixtures seeds the fake from a JSON document such as
// {"customers":[{"id":"cus_A","email":"a@example.com","default_payment_method":"pm_card_visa"}]},
// so that the demo starts with a believable provider state.
func (s *Server) LoadFixtures(r io.Reader) error {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	var f Fixtures
	if err := dec.Decode(&f); err != nil {
		return fmt.Errorf("load stripe fixtures: %w", err)
	}
	for _, c := range f.Customers {
		if _, err := s.AddCustomer(c); err != nil {
			return fmt.Errorf("load stripe fixtures: %w", err)
		}
	}
	return nil
}

// AddCustomer creates a customer directly, without an API call, and returns its ID.
func (s *Server) AddCustomer(c Customer) (string, error) {
	if c.DefaultPaymentMethod != "" {
		if _, ok := lookupTestCard(c.DefaultPaymentMethod); !ok {
			return "", fmt.Errorf("customer %q: unknown test payment method %q", c.ID, c.DefaultPaymentMethod)
		}
	}
	if c.ID != "" && !strings.HasPrefix(c.ID, "cus_") {
		return "", fmt.Errorf("customer %q: IDs start with cus_", c.ID)
	}
	created := c.Created
	if created == 0 {
		created = s.now().Unix()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.ID == "" {
		c.ID = s.newIDLocked("cus")
	}
	if _, dup := s.customers[c.ID]; dup {
		return "", fmt.Errorf("customer %q already exists", c.ID)
	}
	cu := s.newCustomerLocked(c.ID, created)
	cu.obj.Email = optString(c.Email)
	cu.obj.Name = optString(c.Name)
	cu.obj.InvoiceSettings.DefaultPaymentMethod = optString(c.DefaultPaymentMethod)
	maps.Copy(cu.obj.Metadata, c.Metadata)
	return c.ID, nil
}

// SetDefaultPaymentMethod replaces a customer's invoice_settings.default_payment_method
// (pm "" removes it), as when a customer updates their card between two attempts.
func (s *Server) SetDefaultPaymentMethod(customerID, pm string) error {
	if pm != "" {
		if _, ok := lookupTestCard(pm); !ok {
			return fmt.Errorf("set default payment method of %s: unknown test payment method %q", customerID, pm)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cu := s.customers[customerID]
	if cu == nil {
		return fmt.Errorf("set default payment method: no such customer %q", customerID)
	}
	cu.obj.InvoiceSettings.DefaultPaymentMethod = optString(pm)
	return nil
}

type customer struct {
	seq uint64
	obj customerJSON
}

func (c *customer) sortKey() sortKey { return sortKey{created: c.obj.Created, seq: c.seq} }

// customerJSON is Stripe's customer object.
type customerJSON struct {
	ID                  string              `json:"id"`
	Object              string              `json:"object"`
	Address             any                 `json:"address"`
	Balance             int64               `json:"balance"`
	Created             int64               `json:"created"`
	Currency            *string             `json:"currency"`
	DefaultSource       *string             `json:"default_source"`
	Delinquent          bool                `json:"delinquent"`
	Description         *string             `json:"description"`
	Discount            any                 `json:"discount"`
	Email               *string             `json:"email"`
	InvoicePrefix       string              `json:"invoice_prefix"`
	InvoiceSettings     invoiceSettingsJSON `json:"invoice_settings"`
	Livemode            bool                `json:"livemode"`
	Metadata            map[string]string   `json:"metadata"`
	Name                *string             `json:"name"`
	NextInvoiceSequence int64               `json:"next_invoice_sequence"`
	Phone               *string             `json:"phone"`
	PreferredLocales    []string            `json:"preferred_locales"`
	Shipping            any                 `json:"shipping"`
	TaxExempt           string              `json:"tax_exempt"`
	TestClock           *string             `json:"test_clock"`
}

type invoiceSettingsJSON struct {
	CustomFields         any     `json:"custom_fields"`
	DefaultPaymentMethod *string `json:"default_payment_method"`
	Footer               *string `json:"footer"`
	RenderingOptions     any     `json:"rendering_options"`
}

func (s *Server) newCustomerLocked(id string, created int64) *customer {
	s.seq++
	cu := &customer{seq: s.seq, obj: customerJSON{
		ID:                  id,
		Object:              "customer",
		Created:             created,
		InvoicePrefix:       fmt.Sprintf("F%07X", s.seq),
		Metadata:            map[string]string{},
		NextInvoiceSequence: 1,
		PreferredLocales:    []string{},
		TaxExempt:           "none",
	}}
	s.customers[id] = cu
	return cu
}

// render copies the object so that it can be marshalled outside the lock.
func (c *customer) render() customerJSON {
	o := c.obj
	o.Metadata = maps.Clone(c.obj.Metadata)
	o.PreferredLocales = slices.Clone(c.obj.PreferredLocales)
	return o
}

func customerPatterns() []paramPattern {
	return []paramPattern{"email", "name", "description", "phone", "metadata[*]", "expand[]",
		"payment_method", "invoice_settings[default_payment_method]"}
}

// applyCustomerParams applies validated create/update parameters. Caller holds mu.
func applyCustomerParams(cu *customer, r *request) {
	f := r.form
	if v, ok := lastValue(f, "email"); ok {
		cu.obj.Email = optString(v)
	}
	if v, ok := lastValue(f, "name"); ok {
		cu.obj.Name = optString(v)
	}
	if v, ok := lastValue(f, "description"); ok {
		cu.obj.Description = optString(v)
	}
	if v, ok := lastValue(f, "phone"); ok {
		cu.obj.Phone = optString(v)
	}
	for k, v := range formMap(f, "metadata") {
		if v == "" { // Stripe unsets a metadata key given an empty value
			delete(cu.obj.Metadata, k)
		} else {
			cu.obj.Metadata[k] = v
		}
	}
	if v, ok := lastValue(f, "invoice_settings[default_payment_method]"); ok {
		cu.obj.InvoiceSettings.DefaultPaymentMethod = optString(v)
	}
}

// validateCustomerParams checks parameters before anything changes.
func validateCustomerParams(r *request) *response {
	if bad := checkParams(r.form, customerPatterns()...); bad != nil {
		return bad
	}
	for _, key := range []string{"payment_method", "invoice_settings[default_payment_method]"} {
		if v, ok := lastValue(r.form, key); ok && v != "" {
			if _, known := lookupTestCard(v); !known {
				resp := notFound(key, "PaymentMethod", v)
				return &resp
			}
		}
	}
	return nil
}

func (s *Server) createCustomer(r *request) response {
	if bad := validateCustomerParams(r); bad != nil {
		return *bad
	}
	created := s.now().Unix()
	s.mu.Lock()
	cu := s.newCustomerLocked(s.newIDLocked("cus"), created)
	applyCustomerParams(cu, r)
	obj := cu.render()
	s.mu.Unlock()
	return jsonResponse(http.StatusOK, obj, true)
}

func (s *Server) updateCustomer(r *request) response {
	if bad := validateCustomerParams(r); bad != nil {
		return *bad
	}
	s.mu.Lock()
	cu := s.customers[r.pathID]
	if cu == nil {
		s.mu.Unlock()
		return notFound("id", "customer", r.pathID)
	}
	applyCustomerParams(cu, r)
	obj := cu.render()
	s.mu.Unlock()
	return jsonResponse(http.StatusOK, obj, true)
}

func (s *Server) getCustomer(r *request) response {
	if bad := checkParams(r.form, "expand[]"); bad != nil {
		return *bad
	}
	s.mu.Lock()
	cu := s.customers[r.pathID]
	if cu == nil {
		s.mu.Unlock()
		return notFound("id", "customer", r.pathID)
	}
	obj := cu.render()
	s.mu.Unlock()
	return jsonResponse(http.StatusOK, obj, false)
}

func (s *Server) listCustomers(r *request) response {
	if bad := checkParams(r.form, listPatterns("email")...); bad != nil {
		return *bad
	}
	q, bad := parseListQuery(r.form)
	if bad != nil {
		return *bad
	}
	email, hasEmail := lastValue(r.form, "email")

	s.mu.Lock()
	defer s.mu.Unlock()
	var items []*customer
	for _, cu := range s.customers {
		if !q.created.match(cu.obj.Created) {
			continue
		}
		if hasEmail && (cu.obj.Email == nil || *cu.obj.Email != email) {
			continue
		}
		items = append(items, cu)
	}
	slices.SortFunc(items, func(a, b *customer) int { return newestFirst(a.sortKey(), b.sortKey()) })
	page, more, badPage := paginate(items, (*customer).sortKey, q, func(id string) (sortKey, bool) {
		cu := s.customers[id]
		if cu == nil {
			return sortKey{}, false
		}
		return cu.sortKey(), true
	}, "customer")
	if badPage != nil {
		return *badPage
	}
	data := make([]customerJSON, len(page))
	for i, cu := range page {
		data[i] = cu.render()
	}
	return listResponse(data, more, "/v1/customers")
}

func newestFirst(a, b sortKey) int {
	switch {
	case a.newerThan(b):
		return -1
	case b.newerThan(a):
		return 1
	}
	return 0
}
