package billing

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Micros is an amount of money (or a quantity) in millionths, exactly as the database
// stores DECIMAL(20,6): Go never sees money as a float. int64 holds ±9.2 trillion
// units, far above any invoice; parsing refuses anything that does not fit.
type Micros int64

// microsPerUnit is 10^6, the scale of DECIMAL(20,6).
const microsPerUnit = 1_000_000

// ErrAmount reports a decimal that is not a DECIMAL(20,6) value.
var ErrAmount = errors.New("invalid amount")

// ParseMicros reads a decimal as MySQL returns it ("12.345600", "-0.5", "7"). More than
// six decimals are accepted only if the extra digits are zeros: billing never rounds
// silently.
func ParseMicros(s string) (Micros, error) {
	str := s
	neg := false
	switch {
	case strings.HasPrefix(str, "-"):
		neg, str = true, str[1:]
	case strings.HasPrefix(str, "+"):
		str = str[1:]
	}
	whole, frac, _ := strings.Cut(str, ".")
	if whole == "" && frac == "" {
		return 0, fmt.Errorf("%w: %q", ErrAmount, s)
	}
	if len(frac) > 6 {
		if strings.Trim(frac[6:], "0") != "" {
			return 0, fmt.Errorf("%w: %q has more than 6 decimals", ErrAmount, s)
		}
		frac = frac[:6]
	}
	for _, part := range []string{whole, frac} {
		if strings.Trim(part, "0123456789") != "" {
			return 0, fmt.Errorf("%w: %q", ErrAmount, s)
		}
	}
	frac += strings.Repeat("0", 6-len(frac))
	if whole == "" {
		whole = "0"
	}
	w, err := strconv.ParseInt(whole, 10, 64)
	if err != nil || w > math.MaxInt64/microsPerUnit-1 {
		return 0, fmt.Errorf("%w: %q out of range", ErrAmount, s)
	}
	f, _ := strconv.ParseInt(frac, 10, 64) // six digits, checked above
	m := Micros(w*microsPerUnit + f)
	if neg {
		m = -m
	}
	return m, nil
}

// String renders the amount with six decimals, as the database would.
func (m Micros) String() string {
	sign := ""
	u := uint64(m)
	if m < 0 {
		sign, u = "-", uint64(-m)
	}
	return fmt.Sprintf("%s%d.%06d", sign, u/microsPerUnit, u%microsPerUnit)
}

// Add returns m+o, refusing an overflow rather than wrapping.
func (m Micros) Add(o Micros) (Micros, error) {
	s := m + o
	if (o > 0 && s < m) || (o < 0 && s > m) {
		return 0, fmt.Errorf("%w: %s + %s overflows", ErrAmount, m, o)
	}
	return s, nil
}

// ErrUnknownCurrency reports a currency whose minor unit billing does not know, so it
// cannot round an invoice in it.
var ErrUnknownCurrency = errors.New("unknown currency")

// currencyExponents is ISO 4217's minor-unit exponent for the currencies billing may
// meet; a currency missing here is never guessed (its invoice is reported instead).
// Most currencies have 2 decimals; these differ.
var currencyExponents = map[string]int{
	// zero decimals
	"BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0,
	"PYG": 0, "RWF": 0, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
	// three decimals
	"BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
	// four decimals
	"CLF": 4, "UYW": 4,
	// two decimals (the usual case), listed so an unknown code is caught
	"AED": 2, "ARS": 2, "AUD": 2, "BGN": 2, "BRL": 2, "CAD": 2, "CHF": 2, "CNY": 2,
	"COP": 2, "CZK": 2, "DKK": 2, "EGP": 2, "EUR": 2, "GBP": 2, "HKD": 2, "HUF": 2,
	"IDR": 2, "ILS": 2, "INR": 2, "KES": 2, "MAD": 2, "MXN": 2, "MYR": 2, "NGN": 2,
	"NOK": 2, "NZD": 2, "PEN": 2, "PHP": 2, "PKR": 2, "PLN": 2, "RON": 2, "RSD": 2,
	"SAR": 2, "SEK": 2, "SGD": 2, "THB": 2, "TRY": 2, "TWD": 2, "UAH": 2, "USD": 2,
	"ZAR": 2,
}

// CurrencyExponent returns the number of decimals of currency's minor unit (USD 2,
// JPY 0, KWD 3).
func CurrencyExponent(currency string) (int, error) {
	e, ok := currencyExponents[strings.ToUpper(currency)]
	if !ok {
		return 0, fmt.Errorf("%w %q", ErrUnknownCurrency, currency)
	}
	return e, nil
}

// ToMinor rounds m to the currency's minor unit, half away from zero (half-up for the
// positive amounts invoices hold: 0.125 USD is 13 cents), as MySQL's ROUND does for
// DECIMAL. An invoice is rounded exactly once, here, on its total.
func ToMinor(m Micros, currency string) (int64, error) {
	exp, err := CurrencyExponent(currency)
	if err != nil {
		return 0, err
	}
	div := int64(microsPerUnit)
	for range exp {
		div /= 10
	}
	q, r := int64(m)/div, int64(m)%div
	if r < 0 {
		r = -r
	}
	if 2*r >= div {
		if m < 0 {
			q--
		} else {
			q++
		}
	}
	return q, nil
}

// FormatMinor renders minor units with the currency's decimals: "USD 12.34",
// "JPY 1200". An unknown currency is shown in minor units with its code.
func FormatMinor(minor int64, currency string) string {
	return currency + " " + minorDecimal(minor, currency)
}

// minorDecimal renders minor units as the exact decimal of the currency's major unit
// ("12.34" for 1234 USD cents, "1200" for 1200 yen), as reports carry amounts. An
// unknown currency is shown in minor units.
func minorDecimal(minor int64, currency string) string {
	exp, err := CurrencyExponent(currency)
	if err != nil || exp == 0 {
		return strconv.FormatInt(minor, 10)
	}
	div := int64(1)
	for range exp {
		div *= 10
	}
	sign := ""
	u := minor
	if u < 0 {
		sign, u = "-", -u
	}
	return fmt.Sprintf("%s%d.%0*d", sign, u/div, exp, u%div)
}
