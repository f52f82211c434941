package reconcile

import (
	"strconv"
	"strings"
)

// Money here is always an int64 of minor units, as Stripe and billing's payments
// table keep it; it becomes a decimal string only for reports. No float anywhere.

// minorDigits is the decimals of a currency's minor unit as Stripe counts them (its
// zero-decimal and three-decimal lists); every other currency has two.
func minorDigits(currency string) int {
	switch strings.ToUpper(currency) {
	case "BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF":
		return 0
	case "BHD", "JOD", "KWD", "OMR", "TND":
		return 3
	}
	return 2
}

// decimal renders minor units as the exact decimal of the major unit: 1234 USD cents
// is "12.34", -5 is "-0.05", 1200 yen is "1200".
func decimal(minor int64, currency string) string {
	digits := minorDigits(currency)
	neg := minor < 0
	u := uint64(minor)
	if neg {
		u = -u
	}
	s := strconv.FormatUint(u, 10)
	if digits > 0 {
		for len(s) <= digits {
			s = "0" + s
		}
		s = s[:len(s)-digits] + "." + s[len(s)-digits:]
	}
	if neg {
		s = "-" + s
	}
	return s
}

// money is "EUR 12.30", for report lines.
func money(minor int64, currency string) string { return currency + " " + decimal(minor, currency) }
