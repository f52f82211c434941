package crontab

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// ParseCrontab reads a crontab: a cron.d file when systemFormat is set (5 fields,
// user, command) or a user crontab otherwise (5 fields, command). CRON_TZ= or TZ=
// lines set the zone of the lines after them; without one, lines are read in UTC,
// the zone cronkit's hosts run in (cron itself uses the host's zone, and Debian's cron
// ignores CRON_TZ, so keep hosts in UTC). Comments, blank lines and other variables
// are skipped. Every line must run the jobs binary directly, without shell syntax, so
// that its arguments can be checked. It returns the good entries and all problems,
// each as a *ParseError, joined.
func ParseCrontab(r io.Reader, source string, systemFormat bool) ([]Entry, error) {
	format := FormatCrontab
	if systemFormat {
		format = FormatCronD
	}
	loc := time.UTC
	var entries []Entry
	var errs []error
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
			continue
		case strings.ContainsRune("0123456789*@", rune(line[0])):
			e, err := parseCronLine(line, systemFormat)
			if err != nil {
				errs = append(errs, &ParseError{Source: source, Line: n, Err: err})
				continue
			}
			e.Source, e.Line, e.Format = source, n, format
			e.Location = loc
			if e.Schedule, err = parseSpec(e.Spec, loc); err != nil {
				errs = append(errs, &ParseError{Source: source, Line: n, Err: err})
				continue
			}
			entries = append(entries, e)
		default:
			name, value, ok := parseEnvLine(line)
			if !ok {
				errs = append(errs, lineErr(source, n, "neither a schedule nor a NAME=value line: %q", line))
				continue
			}
			if name != "CRON_TZ" && name != "TZ" {
				continue
			}
			l, err := loadLocation(value)
			if err != nil {
				errs = append(errs, lineErr(source, n, "%s: %v", name, err))
				continue
			}
			loc = l
		}
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, &ParseError{Source: source, Err: fmt.Errorf("read: %w", err)})
	}
	return entries, errors.Join(errs...)
}

// loadLocation loads a zone name, refusing "" and "Local": the host's zone is not
// something a checked-in file can rely on.
func loadLocation(name string) (*time.Location, error) {
	if name == "" || name == "Local" {
		return nil, fmt.Errorf("time zone %q: name a zone, e.g. UTC", name)
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("time zone %q: %w", name, err)
	}
	return loc, nil
}

// parseEnvLine reads cron's `NAME = value` lines; quotes around value are dropped.
func parseEnvLine(line string) (name, value string, ok bool) {
	name, value, ok = strings.Cut(line, "=")
	name, value = strings.TrimSpace(name), strings.TrimSpace(value)
	if !ok || !isEnvName(name) {
		return "", "", false
	}
	if len(value) >= 2 && (value[0] == '"' || value[0] == '\'') && value[len(value)-1] == value[0] {
		value = value[1 : len(value)-1]
	}
	return name, value, true
}

func isEnvName(s string) bool {
	for i, c := range s {
		switch {
		case c == '_', 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case i > 0 && '0' <= c && c <= '9':
		default:
			return false
		}
	}
	return s != ""
}

// parseCronLine splits a schedule line into spec, user and command, and checks the
// command; the caller parses the spec (it knows the zone).
func parseCronLine(line string, systemFormat bool) (Entry, error) {
	var e Entry
	nspec := 5
	if strings.HasPrefix(line, "@") {
		nspec = 1
		if strings.HasPrefix(line, "@every") {
			nspec = 2
		}
	}
	fields, rest := cutFields(line, nspec)
	if len(fields) < nspec {
		return e, fmt.Errorf("schedule needs %d fields, line has %d", nspec, len(fields))
	}
	e.Spec = strings.Join(fields, " ")
	if systemFormat {
		user, cmd := cutFields(rest, 1)
		if len(user) == 0 {
			return e, fmt.Errorf("missing user and command after the schedule")
		}
		// (A bare cronkit is the usual user, not the command.)
		if strings.Contains(user[0], "/") || user[0] == legacyBinaryName {
			return e, fmt.Errorf("missing user field: %q is the command (cron.d lines are: 5 time fields, user, command)", user[0])
		}
		e.User, rest = user[0], cmd
	}
	if strings.Contains(rest, "%") {
		return e, fmt.Errorf("command contains %%, which cron turns into a newline")
	}
	words, err := splitWords(rest, true)
	if err != nil {
		return e, err
	}
	if e.Args, err = commandArgs(words); err != nil {
		return e, err
	}
	e.Name = e.Job()
	return e, nil
}

// cutFields returns the first n whitespace-separated fields of s and the rest of s,
// which keeps its own spacing and quoting.
func cutFields(s string, n int) ([]string, string) {
	var fields []string
	rest := strings.TrimLeft(s, " \t")
	for len(fields) < n && rest != "" {
		i := strings.IndexAny(rest, " \t")
		if i < 0 {
			fields, rest = append(fields, rest), ""
			break
		}
		fields = append(fields, rest[:i])
		rest = strings.TrimLeft(rest[i:], " \t")
	}
	return fields, rest
}

// splitWords splits a command into words with single quotes, double quotes and
// backslash escapes. With shell set (cron runs commands through /bin/sh), anything the
// shell would interpret (pipes, redirections, variables, globs...) is refused, since
// the words would then not be the arguments `jobs` receives.
func splitWords(s string, shell bool) ([]string, error) {
	const shellSpecial = "|&;<>()$`*?[]{}~#!"
	var words []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case c == '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return nil, fmt.Errorf("command: unterminated single quote")
			}
			cur.WriteString(s[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case c == '"':
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				switch {
				case s[i] == '\\' && i+1 < len(s):
					i++
				case shell && (s[i] == '$' || s[i] == '`'):
					return nil, fmt.Errorf("command: shell expansion %q is not supported, call the %s binary directly", s[i], BinaryName)
				}
				cur.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, fmt.Errorf("command: unterminated double quote")
			}
			inWord = true
		case c == '\\':
			if i+1 >= len(s) {
				return nil, fmt.Errorf("command: trailing backslash")
			}
			i++
			cur.WriteByte(s[i])
			inWord = true
		case shell && strings.IndexByte(shellSpecial, c) >= 0:
			return nil, fmt.Errorf("command: shell syntax %q is not supported, call the %s binary directly", c, BinaryName)
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}
