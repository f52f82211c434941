package runtest

import (
	"reflect"
	"testing"
)

func TestScreenReplaysWhatATerminalShows(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []string // written in pieces, to split sequences and runes
		want []string
	}{
		{"lines", []string{"one\ntwo\r\n", "three"}, []string{"one", "two", "three"}},
		{"carriage return overwrites", []string{"bar 1/3\rbar 2/3"}, []string{"bar 2/3"}},
		{"erase line", []string{"bar 1/3\r\x1b[Klog\n"}, []string{"log"}},
		{"text after a bar stays on its row", []string{"bar 1/3 4s", "log line\n"}, []string{"bar 1/3 4slog line"}},
		{"cursor up and erase below, split", []string{"log 1\nbar\n\x1b[", "1A\x1b[J", "log 2\nbar\n"}, []string{"log 1", "log 2", "bar"}},
		{"colours and cursor visibility", []string{"\x1b[90m2026\x1b[0m \x1b[32mINF\x1b[0m x\n\x1b[?25l"}, []string{"2026 INF x"}},
		{"split rune", []string{"\xe2\x96", "\x88\n"}, []string{"█"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s Screen
			for _, p := range tc.in {
				if _, err := s.Write([]byte(p)); err != nil {
					t.Fatal(err)
				}
			}
			if got := s.Lines(); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("lines %q, want %q", got, tc.want)
			}
			if len(s.Unknown) != 0 {
				t.Fatalf("unknown escapes %q", s.Unknown)
			}
		})
	}
}

func TestScreenRecordsEscapesItDoesNotKnow(t *testing.T) {
	var s Screen
	_, _ = s.Write([]byte("a\x1b[2Jb\x1b7"))
	if !reflect.DeepEqual(s.Unknown, []string{`"\x1b[2J"`, `"\x1b7"`}) {
		t.Fatalf("unknown %q", s.Unknown)
	}
}
