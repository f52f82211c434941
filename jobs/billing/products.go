package billing

import (
	"errors"
	"fmt"
	"math/big"
	"regexp"
	"strings"

	"github.com/BurntSushi/toml"
)

// Products maps CloudStack usage records to billing products: the --products file.
// Ignore entries are tried first (a record one matches is counted, never billed);
// then the product entries, in the file's order, the first match winning.
type Products struct {
	Product []ProductRule `toml:"product"`
	Ignore  []IgnoreRule  `toml:"ignore"`
}

// ProductRule is one [[product]] entry.
type ProductRule struct {
	// UsageType is CloudStack's usage type (1 RUNNING_VM, 2 ALLOCATED_VM, 3
	// IP_ADDRESS, 4/5 NETWORK_BYTES_SENT/RECEIVED, 6 VOLUME, 9 SNAPSHOT, 26
	// VOLUME_SECONDARY, ...).
	UsageType int `toml:"usage_type"`
	// OfferingID is the record's offeringid; empty matches any offering.
	OfferingID string `toml:"offering_id"`
	// Product is the usage_records product, priced by the price list.
	Product string `toml:"product"`
	// Quantity is how a record becomes a quantity: hours (rawusage), gib_hours
	// (rawusage x size / 2^30) or gib (rawusage, in bytes, / 2^30).
	Quantity string `toml:"quantity"`
}

// IgnoreRule is one [[ignore]] entry: records nobody bills (counted, not reported).
// A record matches when every field given matches.
type IgnoreRule struct {
	UsageType int    `toml:"usage_type"`
	Account   string `toml:"account"` // the record's account name
}

// Quantity rules.
const (
	QuantityHours    = "hours"
	QuantityGiBHours = "gib_hours"
	QuantityGiB      = "gib"
)

// ErrProducts is a --products file that cannot be used as written.
var ErrProducts = errors.New("invalid product mapping")

// productName is what usage_records.product and prices.product hold.
var productName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$`)

// ParseProducts reads and checks a product mapping. Every problem names its entry
// ("product 3: ..."), wrapped in ErrProducts; unknown keys are refused, so a typo
// never silently maps nothing.
func ParseProducts(data []byte) (*Products, error) {
	var p Products
	md, err := toml.Decode(string(data), &p)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrProducts, err)
	}
	if un := md.Undecoded(); len(un) > 0 {
		keys := make([]string, len(un))
		for i, k := range un {
			keys[i] = k.String()
		}
		return nil, fmt.Errorf("%w: unknown keys %s (want [[product]] usage_type, offering_id, product, quantity; [[ignore]] usage_type, account)",
			ErrProducts, strings.Join(keys, ", "))
	}
	if len(p.Product) == 0 {
		return nil, fmt.Errorf("%w: no [[product]] entry: nothing would be billed", ErrProducts)
	}
	for i, r := range p.Product {
		at := fmt.Sprintf("product %d", i+1)
		if r.Product != "" {
			at += fmt.Sprintf(" (%s)", r.Product)
		}
		switch {
		case r.UsageType <= 0:
			return nil, fmt.Errorf("%w: %s: usage_type must be a CloudStack usage type (1 RUNNING_VM, 6 VOLUME, ...)", ErrProducts, at)
		case !productName.MatchString(r.Product):
			return nil, fmt.Errorf("%w: %s: product %q: want 1 to 64 letters, digits, '.', '_', ':' or '-'", ErrProducts, at, r.Product)
		case r.Quantity != QuantityHours && r.Quantity != QuantityGiBHours && r.Quantity != QuantityGiB:
			return nil, fmt.Errorf("%w: %s: quantity %q: want hours, gib_hours or gib", ErrProducts, at, r.Quantity)
		case len(r.OfferingID) > 64:
			return nil, fmt.Errorf("%w: %s: offering_id longer than 64 characters", ErrProducts, at)
		}
	}
	for i, r := range p.Ignore {
		if r.UsageType <= 0 && r.Account == "" {
			return nil, fmt.Errorf("%w: ignore %d: give usage_type, account or both (an empty entry would ignore everything)", ErrProducts, i+1)
		}
		if r.UsageType < 0 {
			return nil, fmt.Errorf("%w: ignore %d: usage_type must be positive", ErrProducts, i+1)
		}
	}
	return &p, nil
}

// Mapping problems, as cloudstack_usage.problem and report kinds.
const (
	problemUnknownAccount   = "unknown_account"
	problemAmbiguousAccount = "ambiguous_account"
	problemUnknownUsageType = "unknown_usage_type"
	problemUnmappedOffering = "unmapped_offering"
	problemBadQuantity      = "bad_quantity"
)

// match finds what a record is: ignored, a product rule, or a problem.
func (p *Products) match(usageType int, offering, account string) (rule *ProductRule, ignored bool, problem string) {
	for _, r := range p.Ignore {
		if (r.UsageType == 0 || r.UsageType == usageType) && (r.Account == "" || strings.EqualFold(r.Account, account)) {
			return nil, true, ""
		}
	}
	typeKnown := false
	for i := range p.Product {
		r := &p.Product[i]
		if r.UsageType != usageType {
			continue
		}
		typeKnown = true
		if r.OfferingID == "" || r.OfferingID == offering {
			return r, false, ""
		}
	}
	if typeKnown {
		return nil, false, problemUnmappedOffering
	}
	return nil, false, problemUnknownUsageType
}

// plainDecimal is a decimal as CloudStack writes rawusage: no exponent, no fraction.
var plainDecimal = regexp.MustCompile(`^-?[0-9]+(\.[0-9]+)?$`)

// gib is 2^30 bytes.
var gib = big.NewRat(1<<30, 1)

// quantity computes a record's quantity exactly (rational arithmetic, never a float)
// and rounds it half away from zero to the 6 decimals usage_records keeps.
func (r *ProductRule) quantity(rawUsage string, size int64) (Micros, error) {
	if !plainDecimal.MatchString(rawUsage) {
		return 0, fmt.Errorf("rawusage %q is not a decimal", rawUsage)
	}
	q, ok := new(big.Rat).SetString(rawUsage)
	if !ok {
		return 0, fmt.Errorf("rawusage %q is not a decimal", rawUsage)
	}
	switch r.Quantity {
	case QuantityGiBHours:
		if size < 0 {
			return 0, fmt.Errorf("size %d is negative", size)
		}
		q.Mul(q, new(big.Rat).SetInt64(size))
		q.Quo(q, gib)
	case QuantityGiB:
		q.Quo(q, gib)
	}
	return roundMicros(q)
}

// roundMicros rounds r half away from zero to millionths.
func roundMicros(r *big.Rat) (Micros, error) {
	scaled := new(big.Rat).Mul(r, big.NewRat(microsPerUnit, 1))
	num, den := new(big.Int).Set(scaled.Num()), scaled.Denom()
	neg := num.Sign() < 0
	num.Abs(num)
	q, rem := new(big.Int).QuoRem(num, den, new(big.Int))
	if rem.Lsh(rem, 1).Cmp(den) >= 0 {
		q.Add(q, big.NewInt(1))
	}
	if !q.IsInt64() {
		return 0, fmt.Errorf("quantity %s is out of range", r.FloatString(6))
	}
	m := Micros(q.Int64())
	if neg {
		m = -m
	}
	return m, nil
}
