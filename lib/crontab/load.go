package crontab

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// LoadDir reads every schedule the repository's crontab/ directory holds: *.cron
// files at its top (cron.d format), systemd/ (timers and services) and k8s/ (*.yaml,
// *.yml). Missing parts are skipped; a directory with no schedule at all is an error.
// Entries come sorted by source and line; all problems are returned, joined.
func LoadDir(dir string) ([]Entry, error) {
	var entries []Entry
	var errs []error
	add := func(es []Entry, err error) {
		entries = append(entries, es...)
		if err != nil {
			errs = append(errs, err)
		}
	}

	crons, err := filepath.Glob(filepath.Join(dir, "*.cron"))
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", dir, err)
	}
	for _, p := range crons {
		add(parseFile(p, func(f *os.File) ([]Entry, error) { return ParseCrontab(f, p, true) }))
	}

	sd := filepath.Join(dir, "systemd")
	if fi, err := os.Stat(sd); err == nil && fi.IsDir() {
		add(ParseSystemd(os.DirFS(sd), sd))
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, fmt.Errorf("load %s: %w", sd, err))
	}

	var manifests []string
	for _, pat := range []string{"*.yaml", "*.yml"} {
		m, err := filepath.Glob(filepath.Join(dir, "k8s", pat))
		if err != nil {
			return nil, fmt.Errorf("load %s: %w", dir, err)
		}
		manifests = append(manifests, m...)
	}
	slices.Sort(manifests)
	for _, p := range manifests {
		add(parseFile(p, func(f *os.File) ([]Entry, error) { return ParseKubernetes(f, p) }))
	}

	if len(entries) == 0 && len(errs) == 0 {
		return nil, fmt.Errorf("load %s: no schedules (*.cron, systemd/*.timer, k8s/*.yaml)", dir)
	}
	sortEntries(entries)
	return entries, errors.Join(errs...)
}

func parseFile(p string, parse func(*os.File) ([]Entry, error)) ([]Entry, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	defer f.Close()
	return parse(f)
}

// sortEntries orders entries by file and line, the order people read them in.
func sortEntries(entries []Entry) {
	slices.SortStableFunc(entries, func(a, b Entry) int {
		if c := strings.Compare(a.Source, b.Source); c != 0 {
			return c
		}
		if a.Line != b.Line {
			return a.Line - b.Line
		}
		return strings.Compare(a.Name, b.Name)
	})
}
