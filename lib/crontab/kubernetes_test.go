package crontab

import (
	"slices"
	"strings"
	"testing"
)

const testCronJobs = `# leading comment
apiVersion: v1
kind: ConfigMap
metadata:
  name: not-a-cronjob
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: cronkit-billing
spec:
  schedule: "5 * * * *"
  timeZone: Europe/Berlin
  concurrencyPolicy: Forbid
  jobTemplate:
    spec:
      template:
        spec:
          securityContext:
            runAsUser: 10001
          containers:
            - name: sidecar
              image: busybox
              command: ["sleep", "1"]
            - name: jobs
              image: cronkit
              command: ["/usr/bin/cronkit", "billing"]
              args: ["--timeout", "50m"]
---
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: cronkit-abuse
spec:
  schedule: "@hourly"
  jobTemplate:
    spec:
      template:
        spec:
          containers:
            - name: jobs
              command: [cronkit-abuse]
              args: [--timeout, 12m]
              securityContext:
                runAsUser: 42
`

func TestParseKubernetes(t *testing.T) {
	entries, err := ParseKubernetes(strings.NewReader(testCronJobs), "k8s/cj.yaml")
	if err != nil {
		t.Fatalf("ParseKubernetes: %v", err)
	}
	if len(entries) != 2 {
		t.Fatalf("got %d entries, want 2", len(entries))
	}
	tests := []struct {
		e                     Entry
		name, spec, loc, user string
		line                  int
		args                  []string
		forbid                bool
	}{
		{entries[0], "cronkit-billing", "5 * * * *", "Europe/Berlin", "10001", 12, []string{"billing", "--timeout", "50m"}, true},
		// No timeZone: read as UTC. No concurrencyPolicy: Kubernetes' default, Allow.
		{entries[1], "cronkit-abuse", "@hourly", "UTC", "42", 36, []string{"abuse", "--timeout", "12m"}, false},
	}
	for _, tt := range tests {
		e := tt.e
		if e.Name != tt.name || e.Spec != tt.spec || e.Location.String() != tt.loc || e.User != tt.user || e.Line != tt.line {
			t.Errorf("got %s %q %s user %q line %d, want %s %q %s %q %d", e.Name, e.Spec, e.Location, e.User, e.Line, tt.name, tt.spec, tt.loc, tt.user, tt.line)
		}
		if !slices.Equal(e.Args, tt.args) || e.ConcurrencyForbid != tt.forbid {
			t.Errorf("%s: args %q forbid %v, want %q %v", e.Name, e.Args, e.ConcurrencyForbid, tt.args, tt.forbid)
		}
		if e.Format != FormatKubernetes || e.Source != "k8s/cj.yaml" || e.Schedule == nil {
			t.Errorf("%s: format %q source %q schedule %v", e.Name, e.Format, e.Source, e.Schedule)
		}
	}
}

func TestParseKubernetesErrors(t *testing.T) {
	cronJob := func(spec string, container string) string {
		return "apiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: x\nspec:\n" + spec +
			"  jobTemplate:\n    spec:\n      template:\n        spec:\n          containers:\n" + container
	}
	jobs := "            - name: jobs\n              command: [/usr/bin/cronkit, billing]\n"
	tests := []struct {
		name, yaml, wantAt, want string
	}{
		{"bad schedule", cronJob("  schedule: \"61 * * * *\"\n", jobs), "k.yaml:6: ", "above maximum"},
		{"unknown descriptor", cronJob("  schedule: \"@fortnightly\"\n", jobs), "k.yaml:6: ", "unrecognized descriptor"},
		{"zone in the schedule", cronJob("  schedule: \"CRON_TZ=UTC 5 * * * *\"\n", jobs), "k.yaml:6: ", "time zone outside the spec"},
		{"bad zone", cronJob("  schedule: \"5 * * * *\"\n  timeZone: Mars/Olympus\n", jobs), "k.yaml:7: ", "Mars/Olympus"},
		{"not the cronkit binary", cronJob("  schedule: \"5 * * * *\"\n", "            - name: c\n              command: [/bin/sh, -c, jobs billing]\n"), "k.yaml:12: ", "no container"},
		{"command without subcommand", cronJob("  schedule: \"5 * * * *\"\n", "            - name: c\n              command: [jobs]\n"), "k.yaml:12: ", "no subcommand"},
		{"old apiVersion", strings.Replace(cronJob("  schedule: \"5 * * * *\"\n", jobs), "batch/v1", "batch/v1beta1", 1), "k.yaml:1: ", "want batch/v1"},
		{"yaml syntax", "kind: CronJob\nspec: [\n", "k.yaml: ", "yaml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			entries, err := ParseKubernetes(strings.NewReader(tt.yaml), "k.yaml")
			if len(entries) != 0 {
				t.Errorf("got %d entries, want none", len(entries))
			}
			if err == nil || !strings.HasPrefix(err.Error(), tt.wantAt) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one starting %q containing %q", err, tt.wantAt, tt.want)
			}
		})
	}
}
