// Package runtest helps tests check what a run looks like to an operator at a
// terminal: a Screen replays the bytes a run wrote, progress bar escapes included,
// into the lines a person would read once the run is over.
package runtest

import (
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
)

// Screen is a small terminal: it understands what the progress bar and the console
// logger write (text, CR, LF, cursor up/down/left/right, erase line, erase below,
// colours) and records any other escape sequence in Unknown, so a test notices
// output it cannot judge. Rows are as wide as their text: a row the real terminal
// would wrap stays one row here, which is what "on the same line" means to a test.
// It is safe for concurrent writes.
type Screen struct {
	mu   sync.Mutex
	rows [][]rune
	row  int
	col  int
	// pending holds an incomplete escape sequence or rune from the last Write.
	pending []byte
	// Unknown lists escape sequences Screen did not interpret.
	Unknown []string
}

// Write feeds b to the screen.
func (s *Screen) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	buf := append(s.pending, b...)
	s.pending = nil
	for len(buf) > 0 {
		switch c := buf[0]; {
		case c == 0x1b:
			n, ok := s.escape(buf)
			if !ok {
				s.pending = append([]byte(nil), buf...)
				return len(b), nil
			}
			buf = buf[n:]
		case c == '\n':
			s.row++
			s.col = 0 // the pty's ONLCR, or the logger's own CR
			s.grow()
			buf = buf[1:]
		case c == '\r':
			s.col = 0
			buf = buf[1:]
		case c < 0x20:
			buf = buf[1:] // bell, tab... none matters here
		default:
			if !utf8.FullRune(buf) {
				s.pending = append([]byte(nil), buf...)
				return len(b), nil
			}
			r, n := utf8.DecodeRune(buf)
			s.put(r)
			buf = buf[n:]
		}
	}
	return len(b), nil
}

// escape interprets the CSI sequence at the start of b and returns its length;
// false when b ends before the sequence does.
func (s *Screen) escape(b []byte) (int, bool) {
	if len(b) < 2 {
		return 0, false
	}
	if b[1] != '[' {
		s.Unknown = append(s.Unknown, strconv.Quote(string(b[:2])))
		return 2, true
	}
	i := 2
	for i < len(b) && (b[i] < 0x40 || b[i] > 0x7e) {
		i++
	}
	if i == len(b) {
		return 0, false
	}
	params, final := string(b[2:i]), b[i]
	n := 1
	if v, err := strconv.Atoi(params); err == nil && v > 0 {
		n = v
	}
	switch {
	case final == 'm': // colours
	case final == 'A':
		s.row = max(s.row-n, 0)
	case final == 'B':
		s.row += n
		s.grow()
	case final == 'C':
		s.col += n
	case final == 'D':
		s.col = max(s.col-n, 0)
	case final == 'K' && (params == "" || params == "0"):
		s.truncate(s.row, s.col)
	case final == 'K' && params == "2":
		s.rows[s.row] = nil
	case final == 'J' && (params == "" || params == "0"):
		s.truncate(s.row, s.col)
		s.rows = s.rows[:s.row+1]
	case (final == 'l' || final == 'h') && params == "?25": // cursor hide/show
	default:
		s.Unknown = append(s.Unknown, strconv.Quote(string(b[:i+1])))
	}
	return i + 1, true
}

func (s *Screen) grow() {
	for len(s.rows) <= s.row {
		s.rows = append(s.rows, nil)
	}
}

func (s *Screen) put(r rune) {
	s.grow()
	line := s.rows[s.row]
	for len(line) < s.col {
		line = append(line, ' ')
	}
	if s.col < len(line) {
		line[s.col] = r
	} else {
		line = append(line, r)
	}
	s.rows[s.row] = line
	s.col++
}

func (s *Screen) truncate(row, col int) {
	s.grow()
	if col < len(s.rows[row]) {
		s.rows[row] = s.rows[row][:col]
	}
}

// Lines returns the screen's rows, trailing blanks trimmed, without the empty rows
// at the bottom: what an operator scrolls back through after the run.
func (s *Screen) Lines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, len(s.rows))
	for i, r := range s.rows {
		out[i] = strings.TrimRight(string(r), " ")
	}
	for len(out) > 0 && out[len(out)-1] == "" {
		out = out[:len(out)-1]
	}
	return out
}
