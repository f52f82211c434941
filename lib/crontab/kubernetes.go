package crontab

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// cronJob is the part of a batch/v1 CronJob that says when and what it runs.
type cronJob struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Spec struct {
		Schedule          string `yaml:"schedule"`
		TimeZone          string `yaml:"timeZone"`
		ConcurrencyPolicy string `yaml:"concurrencyPolicy"`
		JobTemplate       struct {
			Spec struct {
				Template struct {
					Spec struct {
						SecurityContext struct {
							RunAsUser *int64 `yaml:"runAsUser"`
						} `yaml:"securityContext"`
						Containers []struct {
							Name            string   `yaml:"name"`
							Command         []string `yaml:"command"`
							Args            []string `yaml:"args"`
							SecurityContext struct {
								RunAsUser *int64 `yaml:"runAsUser"`
							} `yaml:"securityContext"`
						} `yaml:"containers"`
					} `yaml:"spec"`
				} `yaml:"template"`
			} `yaml:"spec"`
		} `yaml:"jobTemplate"`
	} `yaml:"spec"`
}

// ParseKubernetes reads a multi-document YAML stream and returns one Entry per
// CronJob (other kinds are skipped). The container whose command runs the jobs binary
// gives the arguments (the rest of command, then args); timeZone gives the zone (UTC
// when unset, though Kubernetes would then use the controller manager's zone: set
// it); concurrencyPolicy Forbid gives ConcurrencyForbid. Entry.Line is the line of
// spec.schedule.
func ParseKubernetes(r io.Reader, source string) ([]Entry, error) {
	dec := yaml.NewDecoder(r)
	var entries []Entry
	var errs []error
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			// The decoder cannot resume after a syntax error.
			errs = append(errs, &ParseError{Source: source, Err: err})
			break
		}
		if len(doc.Content) == 0 {
			continue // an empty document between two ---
		}
		var cj cronJob
		if err := doc.Decode(&cj); err != nil {
			errs = append(errs, &ParseError{Source: source, Line: doc.Line, Err: err})
			continue
		}
		if cj.Kind != "CronJob" {
			continue
		}
		e, err := cronJobEntry(&cj, &doc, source)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		entries = append(entries, e)
	}
	return entries, errors.Join(errs...)
}

func cronJobEntry(cj *cronJob, doc *yaml.Node, source string) (Entry, error) {
	line := nodeLine(doc, "spec", "schedule")
	name := cj.Metadata.Name
	fail := func(at int, format string, args ...any) (Entry, error) {
		return Entry{}, lineErr(source, at, "CronJob %s: %s", name, fmt.Sprintf(format, args...))
	}
	if cj.APIVersion != "batch/v1" {
		return fail(nodeLine(doc, "apiVersion"), "apiVersion %q: want batch/v1", cj.APIVersion)
	}
	if cj.Spec.Schedule == "" {
		return fail(line, "no spec.schedule")
	}
	loc := time.UTC
	if cj.Spec.TimeZone != "" {
		l, err := loadLocation(cj.Spec.TimeZone)
		if err != nil {
			return fail(nodeLine(doc, "spec", "timeZone"), "timeZone: %v", err)
		}
		loc = l
	}
	sched, err := parseSpec(cj.Spec.Schedule, loc)
	if err != nil {
		return fail(line, "%v", err)
	}

	pod := &cj.Spec.JobTemplate.Spec.Template.Spec
	var found []int
	for i, c := range pod.Containers {
		if _, ok := binaryArgs(c.Command); ok {
			found = append(found, i)
		}
	}
	containersLine := nodeLine(doc, "spec", "jobTemplate", "spec", "template", "spec", "containers")
	switch len(found) {
	case 0:
		return fail(containersLine, "no container has command [.../%s ...]: set command so the arguments can be checked", BinaryName)
	case 1:
	default:
		return fail(containersLine, "%d containers run %s: want one", len(found), BinaryName)
	}
	c := pod.Containers[found[0]]
	args, err := commandArgs(append(append([]string(nil), c.Command...), c.Args...))
	if err != nil {
		return fail(containersLine, "container %s: %v", c.Name, err)
	}
	user := ""
	for _, uid := range []*int64{c.SecurityContext.RunAsUser, pod.SecurityContext.RunAsUser} {
		if uid != nil {
			user = strconv.FormatInt(*uid, 10)
			break
		}
	}
	return Entry{
		Source: source, Line: line, Format: FormatKubernetes, Name: name,
		Spec: strings.TrimSpace(cj.Spec.Schedule), Location: loc, Schedule: sched,
		Args: args, User: user, ConcurrencyForbid: cj.Spec.ConcurrencyPolicy == "Forbid",
	}, nil
}

// nodeLine returns the line of the value at keys in a YAML document, or of the
// deepest key found on the way.
func nodeLine(doc *yaml.Node, keys ...string) int {
	n := doc
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	line := n.Line
	for _, k := range keys {
		if n.Kind != yaml.MappingNode {
			return line
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == k {
				next = n.Content[i+1]
				line = n.Content[i].Line
				break
			}
		}
		if next == nil {
			return line
		}
		n = next
		line = n.Line
	}
	return line
}
