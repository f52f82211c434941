package orchestrator

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/apache/cloudstack-go/v2/cloudstack"
)

// FuzzDecodeUsage decodes arbitrary usage records as listUsageRecords returns them:
// never a panic; a record whose dates cannot be read is kept and marked Invalid,
// naming the field and quoting the value, never silently dropped or misdated.
func FuzzDecodeUsage(f *testing.F) {
	f.Add(`{"usageid":"vm-1","usagetype":1,"rawusage":"0.883056","startdate":"2023-07-20T19:00:00+0000","enddate":"2023-07-20T19:59:59+0000","accountid":"a"}`)
	f.Add(`{"usageid":"vol-1","usagetype":6,"rawusage":" 1 ","size":1073741824,"startdate":"2025-05-11'T'00:00:00+00:00","enddate":"2025-05-11'T'00:59:59+00:00"}`)
	f.Add(`{"usageid":"x","startdate":"yesterday","enddate":""}`)
	f.Add(`{"startdate":"2023-07-20T19:00:00+9999","enddate":"9999-12-31T23:59:59Z"}`)
	f.Add(`{"usagetype":"1","size":-1}`)
	f.Fuzz(func(t *testing.T, js string) {
		var u cloudstack.UsageRecord
		if err := json.Unmarshal([]byte(js), &u); err != nil {
			return // the client's JSON decoding refuses it before a record exists
		}
		r := decodeUsage(&u)
		switch {
		case r.Invalid == "":
			if r.Start.Location().String() != "UTC" || r.End.Location().String() != "UTC" {
				t.Fatalf("dates not in UTC: %v %v", r.Start, r.End)
			}
		case strings.HasPrefix(r.Invalid, "startdate: "):
			if !strings.Contains(r.Invalid, strconv.Quote(u.Startdate)) {
				t.Fatalf("Invalid does not quote the start date %q: %s", u.Startdate, r.Invalid)
			}
		case strings.HasPrefix(r.Invalid, "enddate: "):
		default:
			t.Fatalf("Invalid does not name the field: %q", r.Invalid)
		}
		if r.RawUsage != strings.TrimSpace(u.Rawusage) || r.UsageID != u.Usageid {
			t.Fatal("record values changed in decoding")
		}
	})
}
