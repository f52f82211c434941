package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/mattn/go-isatty"

	"github.com/cronkit/cronkit/lib/run"
)

// env is the process as the commands see it: arguments aside, everything run() was
// given, so tests drive the whole binary with buffers and a map.
type env struct {
	getenv  func(string) string
	stdout  io.Writer
	stderr  io.Writer
	version string
	// commit and commitTime name the source the binary was built from (version).
	commit     string
	commitTime string
	host       string
	tty        bool // stderr is a terminal: console logs and progress
	now        func() time.Time
	// self re-executes this binary (cronkit schedule runs each job as a child).
	self string
	// args is the command line after the binary name, recorded (redacted) in job_runs.
	args []string
}

// commandFunc runs a parsed command.
type commandFunc func(ctx context.Context, verb string, args []string) error

// command is one subcommand: its flags, and the function that runs it once parsed.
type command struct {
	name    string
	summary string
	// verbs are optional first words (billing rate|close|charge); "" is the default.
	verbs []string
	// setup registers flags on fs and returns the function that runs the command. Its
	// error decides the exit code (run.ExitCode); nil is success.
	setup func(e *env, fs *flag.FlagSet) commandFunc
	// checkArgs validates positional arguments without running; nil accepts none.
	checkArgs func(verb string, args []string) error
}

func commands() []*command {
	return []*command{
		versionCommand(),
		migrateCommand(),
		historyCommand(),
		noopCommand(),
		billingCommand(),
		abuseCommand(),
		dripCommand(),
		reconcileCommand(),
		pruneCommand(),
		crontabCommand(),
		scheduleCommand(),
		demoCommand(),
	}
}

// runMain is the program: it returns the exit code instead of exiting.
func runMain(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	e := &env{getenv: getenv, stdout: stdout, stderr: stderr, version: version, now: time.Now, args: args,
		commit: commit, commitTime: commitTime}
	e.host, _ = os.Hostname()
	if f, ok := stderr.(interface{ Fd() uintptr }); ok {
		e.tty = isatty.IsTerminal(f.Fd())
	}
	e.self, _ = os.Executable()

	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		if len(args) == 0 {
			return run.ExitUsage
		}
		return run.ExitOK
	}
	cmd := find(args[0])
	if cmd == nil {
		fmt.Fprintf(stderr, "cronkit: unknown command %q (see cronkit --help)\n", args[0])
		return run.ExitUsage
	}
	fn, verb, pos, err := parse(e, cmd, args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return run.ExitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "cronkit %s: %v (see cronkit %s --help)\n", cmd.name, err, cmd.name)
		return run.ExitUsage
	}
	err = fn(ctx, verb, pos)
	// A run's errors are in its log already; anything else gets one line.
	if err != nil && !run.IsLogged(err) {
		fmt.Fprintf(stderr, "cronkit %s: %v\n", cmd.name, err)
	}
	return run.ExitCode(err)
}

// linkPrefix starts the names of the single-purpose links the package installs next
// to the binary: cronkit-billing runs `cronkit billing`.
const linkPrefix = "cronkit-"

// linkedJobs are the commands installed as cronkit-<name> links (packaging/nfpm.yaml
// lists the same; a test keeps them in step): the scheduled jobs, each a command a
// unit or crontab line runs on its own.
func linkedJobs() []string {
	return []string{"abuse", "billing", "drip", "prune", "reconcile"}
}

// linkArgs turns the process's argv into the command line runMain reads. Invoked
// under a link's name (cronkit-billing --dry-run), the job is the first argument
// (billing --dry-run); under any other name the arguments are as given.
func linkArgs(argv []string) []string {
	if len(argv) == 0 {
		return nil
	}
	args := argv[1:]
	job, ok := strings.CutPrefix(filepath.Base(argv[0]), linkPrefix)
	if !ok || !slices.Contains(linkedJobs(), job) {
		return args
	}
	return append([]string{job}, args...)
}

func find(name string) *command {
	for _, c := range commands() {
		if c.name == name {
			return c
		}
	}
	return nil
}

// parse builds cmd's flags, applies the environment, parses args and checks the
// positional arguments. It prints only for --help.
func parse(e *env, cmd *command, args []string) (commandFunc, string, []string, error) {
	verb := ""
	if len(cmd.verbs) > 0 && len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		for _, v := range cmd.verbs {
			if v == args[0] && v != "" {
				verb, args = v, args[1:]
				break
			}
		}
	}
	fs := flag.NewFlagSet("cronkit "+cmd.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fn := cmd.setup(e, fs)
	// Errors are reported in one line by the caller; usage only on --help.
	fs.Usage = func() {}
	if err := bindEnv(fs, e.getenv); err != nil {
		return nil, "", nil, err
	}
	pos, err := parseInterleaved(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		commandUsage(e.stdout, cmd, fs)
		return nil, "", nil, err
	}
	if err != nil {
		return nil, "", nil, err
	}
	check := cmd.checkArgs
	if check == nil {
		check = noArgs
	}
	if err := check(verb, pos); err != nil {
		return nil, "", nil, err
	}
	return fn, verb, pos, nil
}

// validateArgs checks a `jobs` command line without running it: the subcommand, its
// verb, flags and positional arguments must all exist. Used by crontab check.
func validateArgs(e *env) func(args []string) error {
	return func(args []string) error {
		if len(args) == 0 {
			return errors.New("no subcommand")
		}
		cmd := find(args[0])
		if cmd == nil {
			return fmt.Errorf("unknown subcommand %q", args[0])
		}
		quiet := *e
		quiet.stdout, quiet.stderr = io.Discard, io.Discard
		// The environment is the runtime's, not ours: validate the line alone.
		quiet.getenv = func(string) string { return "" }
		_, _, _, err := parse(&quiet, cmd, args[1:])
		if err != nil {
			return fmt.Errorf("cronkit %s: %w", args[0], err)
		}
		return nil
	}
}

// parseInterleaved lets flags follow positional arguments (cronkit abuse show 42
// --output json), which the flag package alone stops at.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func noArgs(verb string, args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("unexpected argument %q", args[0])
	}
	return nil
}

// secretFlags hold credentials: they also read NAME_FILE and never reach a log.
var secretFlags = map[string]bool{
	"db-dsn": true, "stripe-key": true, "cloudstack-secret-key": true, "smtp-password": true,
	"cloudstack-api-key": true, "ping-url": true, "unsubscribe-secret": true,
}

// envName is the variable that sets a flag: --db-dsn is CRONKIT_DB_DSN.
func envName(flagName string) string {
	return "CRONKIT_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// bindEnv sets each flag from its environment variable (or, for secrets, from the
// file named by NAME_FILE) before the command line is parsed, so flags win.
func bindEnv(fs *flag.FlagSet, getenv func(string) string) error {
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil {
			return
		}
		name := envName(f.Name)
		v := getenv(name)
		if v == "" && secretFlags[f.Name] {
			if path := getenv(name + "_FILE"); path != "" {
				b, rerr := os.ReadFile(path)
				if rerr != nil {
					err = fmt.Errorf("%s_FILE: %w", name, rerr)
					return
				}
				v = strings.TrimRight(string(b), "\r\n")
			}
		}
		if v == "" {
			return
		}
		if serr := fs.Set(f.Name, v); serr != nil {
			if secretFlags[f.Name] {
				err = fmt.Errorf("%s: invalid value", name)
			} else {
				err = fmt.Errorf("%s=%q: %v", name, v, serr)
			}
		}
	})
	return err
}

// redactArgs replaces the values of secret flags in a command line, for logs and
// job_runs.
func redactArgs(args []string) []string {
	out := make([]string, len(args))
	copy(out, args)
	for i := 0; i < len(out); i++ {
		name := strings.TrimLeft(out[i], "-")
		if !strings.HasPrefix(out[i], "-") {
			continue
		}
		if k, _, ok := strings.Cut(name, "="); ok {
			if secretFlags[k] {
				out[i] = "--" + k + "=***"
			}
			continue
		}
		if secretFlags[name] && i+1 < len(out) {
			out[i+1] = "***"
			i++
		}
	}
	return out
}

func usage(w io.Writer) {
	fmt.Fprint(w, `cronkit: back-office jobs for a public cloud.

Usage: cronkit <command> [flags]

Commands:
`)
	cmds := commands()
	sort.SliceStable(cmds, func(i, j int) bool { return cmds[i].name < cmds[j].name })
	for _, c := range cmds {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, `
Every flag can also be set with an environment variable: --db-dsn is CRONKIT_DB_DSN;
secrets also read a file named by CRONKIT_<NAME>_FILE.

Exit codes: 0 ok, 1 failed, 2 usage or configuration error, 3 finished with item-level
errors or discrepancies, 75 another run holds the lock (retry later), 130 interrupted.
Run 'cronkit <command> --help' for a command's flags.
`)
}

func commandUsage(w io.Writer, c *command, fs *flag.FlagSet) {
	verbs := ""
	if len(c.verbs) > 0 {
		verbs = " [" + strings.Join(c.verbs, "|") + "]"
	}
	fmt.Fprintf(w, "Usage: cronkit %s%s [flags]\n\n%s\n\nFlags:\n", c.name, verbs, c.summary)
	fs.VisitAll(func(f *flag.Flag) {
		def := ""
		if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "false" && f.DefValue != "0s" {
			def = fmt.Sprintf(" (default %s)", f.DefValue)
		}
		extra := ""
		if secretFlags[f.Name] {
			extra = ", or a file named by " + envName(f.Name) + "_FILE"
		}
		fmt.Fprintf(w, "  --%s\n        %s%s\n        env %s%s\n", f.Name, f.Usage, def, envName(f.Name), extra)
	})
}
