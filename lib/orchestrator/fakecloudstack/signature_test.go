package fakecloudstack

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/apache/cloudstack-go/v2/cloudstack"
)

func TestCanonicalString(t *testing.T) {
	tests := []struct {
		name   string
		params url.Values
		want   string
	}{
		{
			name: "CloudStack developer guide example",
			params: url.Values{
				"command":  {"listUsers"},
				"response": {"json"},
				"apikey":   {"plgWJfZK4gyS3mOMTVmjUVg-X-jlWlnfaUJ9GAbBbf9EdM-kAYMmAiLqzzq1ElZLYq_u38zCm0bewzGUdP66mg"},
			},
			want: "apikey=plgwjfzk4gys3momtvmjuvg-x-jlwlnfauj9gabbbf9edm-kaymmailqzzq1elzlyq_u38zcm0bewzgudp66mg&command=listusers&response=json",
		},
		{
			name:   "space becomes %20 and plus is escaped",
			params: url.Values{"command": {"x"}, "name": {"a b+c"}},
			want:   "command=x&name=a%20b%2bc",
		},
		{
			name:   "java URLEncoder keeps * and escapes ~",
			params: url.Values{"keyword": {"*.example.com~"}},
			want:   "keyword=*.example.com%7e",
		},
		{
			name:   "signature is left out whatever its case",
			params: url.Values{"signature": {"abc"}, "Signature": {"def"}, "a": {"1"}},
			want:   "a=1",
		},
		{
			name:   "names sort case-sensitively before lowercasing, as Java's Collections.sort",
			params: url.Values{"account": {"2"}, "Zone": {"1"}},
			want:   "zone=1&account=2",
		},
		{
			name:   "only the first value of a repeated parameter counts",
			params: url.Values{"a": {"1", "2"}},
			want:   "a=1",
		},
		{
			name:   "expires with offset",
			params: url.Values{"expires": {"2026-11-25T12:00:00+0000"}, "signatureversion": {"3"}},
			want:   "expires=2026-11-25t12%3a00%3a00%2b0000&signatureversion=3",
		},
		{
			name:   "utf-8 bytes are escaped one by one",
			params: url.Values{"name": {"é"}},
			want:   "name=%c3%a9",
		},
		{
			name:   "empty value",
			params: url.Values{"a": {""}, "b": {"x"}},
			want:   "a=&b=x",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := CanonicalString(tt.params); got != tt.want {
				t.Errorf("CanonicalString = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestSignDeveloperGuideVector(t *testing.T) {
	// The worked example of CloudStack's developer guide ("How to sign an API call").
	params := url.Values{
		"command":  {"listUsers"},
		"response": {"json"},
		"apikey":   {"plgWJfZK4gyS3mOMTVmjUVg-X-jlWlnfaUJ9GAbBbf9EdM-kAYMmAiLqzzq1ElZLYq_u38zCm0bewzGUdP66mg"},
	}
	got := Sign(params, "VDaACYb0LV9eNjTetIOElcVQkvJck_J_QljX_FcHRj87ZKiy0z0ty0ZsYBkoXkY9b7eq1EhwJaw7FF3akA3KBQ")
	if want := "TTpdDq/7j/J58XCRHomKoQXEQds="; got != want {
		t.Errorf("Sign = %q, want %q", got, want)
	}
}

// The SDK and the fake must build the same string for everything the SDK sends (it
// differs only on "~", which CloudStack itself rejects from the SDK).
func TestCanonicalStringAgreesWithSDK(t *testing.T) {
	values := []string{"plain", "with space", "a+b", "2026-11-25T12:15:00Z", "*.x.org", "a/b?c=d&e", "ünï", "100%", "x;y,z'\"!()"}
	for _, v := range values {
		p := url.Values{"apiKey": {"KEY"}, "command": {"listVirtualMachines"}, "keyword": {v}, "response": {"json"}}
		want := strings.ToLower(cloudstack.EncodeValues(p))
		if got := CanonicalString(p); got != want {
			t.Errorf("value %q: CanonicalString = %q, SDK signs %q", v, got, want)
		}
	}
}

// signedGet sends a GET signed with secret (params are copied, apikey and response
// added) and returns the status and decoded body.
func signedGet(t *testing.T, base, apiKey, secret string, params url.Values) (int, map[string]any) {
	t.Helper()
	p := url.Values{}
	for k, v := range params {
		p[k] = append([]string(nil), v...)
	}
	p.Set("apikey", apiKey)
	p.Set("response", "json")
	p.Set("signature", Sign(p, secret))
	return get(t, base+"?"+p.Encode())
}

func get(t *testing.T, u string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]any
	if err := json.Unmarshal(b, &body); err != nil {
		t.Fatalf("body %q: %v", b, err)
	}
	return resp.StatusCode, body
}

func TestVerifySignature(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	s := New()
	s.Now = func() time.Time { return now }
	s.AddCredential("KEY", "SECRET")
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	api := srv.URL + "/client/api"

	base := func() url.Values {
		return url.Values{"command": {"listAccounts"}, "apikey": {"KEY"}, "response": {"json"}}
	}
	signed := func(p url.Values, secret string) url.Values {
		p.Set("signature", Sign(p, secret))
		return p
	}
	tests := []struct {
		name   string
		params func() url.Values
		ok     bool
	}{
		{"valid", func() url.Values { return signed(base(), "SECRET") }, true},
		{"wrong secret", func() url.Values { return signed(base(), "OTHER") }, false},
		{"unknown api key", func() url.Values {
			p := base()
			p.Set("apikey", "NOPE")
			return signed(p, "SECRET")
		}, false},
		{"missing signature", base, false},
		{"missing api key", func() url.Values {
			p := base()
			p.Del("apikey")
			return signed(p, "SECRET")
		}, false},
		{"tampered after signing", func() url.Values {
			p := signed(base(), "SECRET")
			p.Set("state", "disabled")
			return p
		}, false},
		{"signature of a different case", func() url.Values {
			p := signed(base(), "SECRET")
			p.Set("signature", strings.ToLower(p.Get("signature")))
			return p
		}, false},
		{"v3 unexpired (+0000 form)", func() url.Values {
			p := base()
			p.Set("signatureversion", "3")
			p.Set("expires", "2026-11-25T12:05:00+0000")
			return signed(p, "SECRET")
		}, true},
		{"v3 unexpired (RFC 3339 form the SDK sends)", func() url.Values {
			p := base()
			p.Set("signatureversion", "3")
			p.Set("expires", "2026-11-25T12:15:00Z")
			return signed(p, "SECRET")
		}, true},
		{"v3 expired", func() url.Values {
			p := base()
			p.Set("signatureversion", "3")
			p.Set("expires", "2026-11-25T11:59:59+0000")
			return signed(p, "SECRET")
		}, false},
		{"v3 without expires", func() url.Values {
			p := base()
			p.Set("signatureversion", "3")
			return signed(p, "SECRET")
		}, false},
		{"v3 with unreadable expires", func() url.Values {
			p := base()
			p.Set("signatureversion", "3")
			p.Set("expires", "tomorrow")
			return signed(p, "SECRET")
		}, false},
		{"expires is ignored without signatureversion=3", func() url.Values {
			p := base()
			p.Set("expires", "2000-01-01T00:00:00+0000")
			return signed(p, "SECRET")
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := get(t, api+"?"+tt.params().Encode())
			if tt.ok {
				if status != http.StatusOK {
					t.Fatalf("status %d, body %v; want 200", status, body)
				}
				if _, ok := body["listaccountsresponse"]; !ok {
					t.Errorf("body %v lacks listaccountsresponse", body)
				}
				return
			}
			if status != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401", status)
			}
			want := map[string]any{"listaccountsresponse": map[string]any{
				"uuidList": []any{}, "errorcode": float64(401), "errortext": authErrorText,
			}}
			if !jsonEqual(body, want) {
				t.Errorf("body %v, want %v", body, want)
			}
		})
	}
	if got := s.Counters().AuthFailures; got != 9 {
		t.Errorf("AuthFailures = %d, want 9", got)
	}
}

func TestVerifyPOST(t *testing.T) {
	s := New()
	s.AddCredential("KEY", "SECRET")
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	p := url.Values{"command": {"listAccounts"}, "apiKey": {"KEY"}, "response": {"json"}}
	p.Set("signature", Sign(p, "SECRET"))
	resp, err := http.PostForm(srv.URL+"/client/api", p)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("signed POST: status %d, want 200", resp.StatusCode)
	}
	p.Set("signature", Sign(p, "WRONG"))
	resp, err = http.PostForm(srv.URL+"/client/api", p)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("badly signed POST: status %d, want 401", resp.StatusCode)
	}
}

func jsonEqual(a, b any) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(ja) == string(jb)
}
