package payment

import (
	"context"
	"iter"
	"maps"
	"slices"
	"strings"

	"github.com/stripe/stripe-go/v82"
)

// GetPaymentIntent fetches one PaymentIntent: reconciliation re-asks Stripe about an
// attempt whose answer it does not trust or never got. A missing one is ErrNotFound.
func (c *Client) GetPaymentIntent(ctx context.Context, id string) (PaymentIntent, error) {
	pi, err := c.stripe.V1PaymentIntents.Retrieve(ctx, id, nil)
	if err != nil {
		return PaymentIntent{}, c.wrapError("get payment intent "+id, err)
	}
	return summarize(pi), nil
}

// SearchPaymentIntents streams the PaymentIntents whose metadata holds every pair of
// metadata (metadata['invoice_id']:'42' AND metadata['attempt']:'1'), through
// Stripe's search API: how an attempt whose answer was lost, so that no PaymentIntent
// id was recorded, is found again. Stripe's search index lags writes by up to a
// minute (an hour during outages): an empty answer about a fresh attempt proves
// nothing. An empty metadata is an error, not "everything".
func (c *Client) SearchPaymentIntents(ctx context.Context, metadata map[string]string) iter.Seq2[PaymentIntent, error] {
	return func(yield func(PaymentIntent, error) bool) {
		if len(metadata) == 0 {
			yield(PaymentIntent{}, &Error{Op: "search payment intents", Message: "no metadata to search for", kind: ErrInvalidRequest})
			return
		}
		params := &stripe.PaymentIntentSearchParams{}
		params.Query = MetadataQuery(metadata)
		params.Limit = stripe.Int64(100)
		for pi, err := range c.stripe.V1PaymentIntents.Search(ctx, params) {
			if err != nil {
				yield(PaymentIntent{}, c.wrapError("search payment intents", err))
				return
			}
			if !yield(summarize(pi), nil) {
				return
			}
		}
	}
}

// MetadataQuery is Stripe's search query for metadata pairs, keys sorted so the same
// pairs always make the same query: metadata['attempt']:'1' AND metadata['invoice_id']:'42'.
// Quotes and backslashes are escaped with a backslash, as Stripe's query language wants.
func MetadataQuery(metadata map[string]string) string {
	keys := slices.Sorted(maps.Keys(metadata))
	clauses := make([]string, len(keys))
	for i, k := range keys {
		clauses[i] = "metadata[" + quoteSearch(k) + "]:" + quoteSearch(metadata[k])
	}
	return strings.Join(clauses, " AND ")
}

func quoteSearch(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}
