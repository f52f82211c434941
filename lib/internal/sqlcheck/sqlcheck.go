// Package sqlcheck finds SQL built from values. cronkit's rule is that SQL text is
// made of constants and only values travel as parameters; this package is the test
// that holds the code to it, run over every non-test file by its own test.
//
// A query argument (of QueryContext, ExecContext, QueryRowContext, PrepareContext,
// Query, Exec, QueryRow, Prepare; not a prepared statement's args..., which are
// values) is accepted when it is built only from:
//   - string literals and constants (of its package, or of another package of the
//     module);
//   - +, parentheses, indexing and slicing of accepted values, conversions, and
//     composite literals (structs, slices) whose elements are accepted;
//   - strings.Repeat (any count: a run of placeholders), strings.Join,
//     strings.TrimSuffix/TrimPrefix/TrimSpace and fmt.Sprintf of accepted values;
//     len and cap; append of accepted values;
//   - local variables, range variables and struct fields whose every assignment in
//     the function is accepted;
//   - calls to functions and methods of the package whose returned value is
//     accepted, where the function's parameters count as accepted when every call
//     of that function in the package passes accepted arguments for them.
//
// Anything else, such as a string from a request, the time, a number formatted from
// a variable or a call into another package, is reported with its position; so is
// a parameter that reaches a query when nothing in the package calls its function.
// A receiver's field counts as accepted when every assignment to a field of that
// name in the package is. The check reads syntax, not types: functions and fields of
// one name are judged together, which errs on the side of reporting. The few places
// that must put something else into SQL text (an identifier) are listed, with why, in
// the test.
package sqlcheck

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// queryMethods maps a database method to the index of its query argument.
var queryMethods = map[string]int{
	"QueryContext": 1, "ExecContext": 1, "QueryRowContext": 1, "PrepareContext": 1,
	"Query": 0, "Exec": 0, "QueryRow": 0, "Prepare": 0,
}

// Finding is one query argument built from something that is not a constant.
type Finding struct {
	Pos  token.Position
	Call string // the method called, e.g. QueryContext
	Expr string // the part of the argument that is not constant
}

func (f Finding) String() string {
	return fmt.Sprintf("%s: %s query built from %s", f.Pos, f.Call, f.Expr)
}

// Module is the module's path, to resolve constants of its other packages.
type Module struct {
	Path string // e.g. github.com/cronkit/cronkit
	Dir  string
}

// CheckDir checks every package under root (non-test files, skipping testdata and
// dot directories).
func CheckDir(mod Module, root string) ([]Finding, error) {
	var out []Finding
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		if p != root && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) {
			return filepath.SkipDir
		}
		fs, err := CheckPackage(mod, p)
		out = append(out, fs...)
		return err
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Pos.String() < out[j].Pos.String() })
	return out, err
}

// CheckPackage checks the non-test files of one directory.
func CheckPackage(mod Module, dir string) ([]Finding, error) {
	fset := token.NewFileSet()
	files, err := parseDir(fset, dir)
	if err != nil || len(files) == 0 {
		return nil, err
	}
	return check(mod, fset, files), nil
}

func parseDir(fset *token.FileSet, dir string) ([]*ast.File, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var files []*ast.File
	for _, e := range ents {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, e.Name()), nil, 0)
		if err != nil {
			return nil, err
		}
		files = append(files, f)
	}
	return files, nil
}

// CheckSource checks one file's source, for tests of the rule itself.
func CheckSource(src string) ([]Finding, error) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "snippet.go", src, 0)
	if err != nil {
		return nil, err
	}
	return check(Module{}, fset, []*ast.File{f}), nil
}

// pkg is one package under analysis.
type pkg struct {
	mod     Module
	fset    *token.FileSet
	consts  map[string]bool
	funcs   map[string][]*ast.FuncDecl // by name; methods of any receiver share a name
	imports map[string]string          // local name -> path, per package (merged)
	foreign map[string]map[string]bool // import path -> its constants
	// needs are the parameters (function, index) a query depends on: every call
	// must pass an accepted argument there.
	needs    map[paramRef]bool
	visiting map[any]bool
	bad      []string
}

type paramRef struct {
	fn    *ast.FuncDecl
	idx   int
	field string // the field of a struct parameter that reaches the query; "" the whole value
}

func check(mod Module, fset *token.FileSet, files []*ast.File) []Finding {
	p := &pkg{mod: mod, fset: fset, consts: map[string]bool{}, funcs: map[string][]*ast.FuncDecl{},
		imports: map[string]string{}, foreign: map[string]map[string]bool{}, needs: map[paramRef]bool{}}
	for _, f := range files {
		for _, im := range f.Imports {
			path := strings.Trim(im.Path.Value, `"`)
			name := filepath.Base(path)
			if im.Name != nil {
				name = im.Name.Name
			}
			p.imports[name] = path
		}
		for _, d := range f.Decls {
			switch d := d.(type) {
			case *ast.GenDecl:
				if d.Tok == token.CONST {
					for _, s := range d.Specs {
						for _, n := range s.(*ast.ValueSpec).Names {
							p.consts[n.Name] = true
						}
					}
				}
			case *ast.FuncDecl:
				p.funcs[d.Name.Name] = append(p.funcs[d.Name.Name], d)
			}
		}
	}
	var out []Finding
	for _, f := range files {
		for _, d := range f.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok || fd.Body == nil {
				continue
			}
			ast.Inspect(fd.Body, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				sel, ok := call.Fun.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				i, ok := queryMethods[sel.Sel.Name]
				if !ok || len(call.Args) <= i {
					return true
				}
				if _, isPkg := p.imports[identName(sel.X)]; isPkg {
					return true // a package function named Exec (e.g. exec.Command's), not a database call
				}
				if call.Ellipsis.IsValid() && i == len(call.Args)-1 {
					return true // a prepared statement's ExecContext(ctx, args...): values, no query
				}
				p.bad, p.visiting = nil, map[any]bool{}
				if !p.safe(call.Args[i], fd, funcScope(fd, call)) {
					out = append(out, Finding{Pos: fset.Position(call.Args[i].Pos()), Call: sel.Sel.Name, Expr: strings.Join(p.bad, ", ")})
				}
				return true
			})
		}
	}
	// Every call of a function whose parameter reaches a query must pass an
	// accepted argument there; checking one may add needs, so repeat to the end.
	done := map[paramRef]bool{}
	for {
		var todo []paramRef
		for r := range p.needs {
			if !done[r] {
				todo = append(todo, r)
			}
		}
		if len(todo) == 0 {
			break
		}
		for _, r := range todo {
			done[r] = true
			out = append(out, p.checkCallers(files, r)...)
		}
	}
	return out
}

func identName(e ast.Expr) string {
	if id, ok := e.(*ast.Ident); ok {
		return id.Name
	}
	return ""
}

// funcScope is the innermost function (declaration or literal) around n in fd.
func funcScope(fd *ast.FuncDecl, n ast.Node) ast.Node {
	var scope ast.Node = fd
	ast.Inspect(fd.Body, func(m ast.Node) bool {
		if m == nil {
			return false
		}
		if m.Pos() > n.Pos() || m.End() < n.End() {
			return false
		}
		if fl, ok := m.(*ast.FuncLit); ok {
			scope = fl
		}
		return true
	})
	return scope
}

func (p *pkg) checkCallers(files []*ast.File, r paramRef) []Finding {
	var out []Finding
	calls := 0
	for _, f := range files {
		for _, d := range f.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok || fd.Body == nil {
				continue
			}
			ast.Inspect(fd.Body, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok || calleeName(call) != r.fn.Name.Name || r.idx >= len(call.Args) {
					return true
				}
				calls++
				p.bad, p.visiting = nil, map[any]bool{}
				arg, scope := call.Args[r.idx], funcScope(fd, call)
				var good bool
				if r.field == "" {
					good = p.safe(arg, fd, scope)
				} else {
					good = p.safeField(arg, r.field, fd, scope)
				}
				if !good {
					out = append(out, Finding{Pos: p.fset.Position(call.Args[r.idx].Pos()), Call: r.fn.Name.Name + " (builds SQL)", Expr: strings.Join(p.bad, ", ")})
				}
				return true
			})
		}
	}
	if calls == 0 {
		// Nothing in the package says what the parameter holds: a caller elsewhere
		// could pass anything.
		out = append(out, Finding{Pos: p.fset.Position(r.fn.Pos()), Call: r.fn.Name.Name,
			Expr: fmt.Sprintf("parameter %d (no caller in the package vouches for it)", r.idx+1)})
	}
	return out
}

func calleeName(call *ast.CallExpr) string {
	switch f := call.Fun.(type) {
	case *ast.Ident:
		return f.Name
	case *ast.SelectorExpr:
		return f.Sel.Name
	}
	return ""
}

func (p *pkg) fail(e ast.Expr) bool {
	var b strings.Builder
	_ = formatNode(&b, p.fset, e)
	p.bad = append(p.bad, b.String())
	return false
}

// safe reports whether e is built from constants, in function fd (scope is the
// innermost function literal or fd itself).
func (p *pkg) safe(e ast.Expr, fd *ast.FuncDecl, scope ast.Node) bool {
	switch e := e.(type) {
	case *ast.BasicLit:
		return true
	case *ast.ParenExpr:
		return p.safe(e.X, fd, scope)
	case *ast.StarExpr:
		return p.safe(e.X, fd, scope)
	case *ast.UnaryExpr:
		return p.safe(e.X, fd, scope)
	case *ast.BinaryExpr:
		return p.safe(e.X, fd, scope) && p.safe(e.Y, fd, scope)
	case *ast.IndexExpr:
		return p.safe(e.X, fd, scope)
	case *ast.SliceExpr:
		return p.safe(e.X, fd, scope)
	case *ast.CompositeLit:
		for _, el := range e.Elts {
			if kv, ok := el.(*ast.KeyValueExpr); ok {
				el = kv.Value
			}
			if !p.safe(el, fd, scope) {
				return false
			}
		}
		return true
	case *ast.Ident:
		return p.safeIdent(e, fd, scope)
	case *ast.SelectorExpr:
		if path, ok := p.imports[identName(e.X)]; ok {
			if p.foreignConst(path, e.Sel.Name) {
				return true
			}
			return p.fail(e)
		}
		return p.safeField(e.X, e.Sel.Name, fd, scope)
	case *ast.CallExpr:
		return p.safeCall(e, 0, fd, scope)
	}
	return p.fail(e)
}

// safeField judges field f of the struct value e: in a composite literal only that
// field's value counts, so a struct of SQL fragments may also carry values.
func (p *pkg) safeField(e ast.Expr, f string, fd *ast.FuncDecl, scope ast.Node) bool {
	switch e := e.(type) {
	case *ast.ParenExpr:
		return p.safeField(e.X, f, fd, scope)
	case *ast.StarExpr:
		return p.safeField(e.X, f, fd, scope)
	case *ast.UnaryExpr:
		return p.safeField(e.X, f, fd, scope)
	case *ast.IndexExpr:
		return p.safeField(e.X, f, fd, scope)
	case *ast.CompositeLit:
		if _, isArray := e.Type.(*ast.ArrayType); isArray || e.Type == nil {
			for _, el := range e.Elts {
				if !p.safeField(el, f, fd, scope) {
					return false
				}
			}
			return true
		}
		for _, el := range e.Elts {
			kv, ok := el.(*ast.KeyValueExpr)
			if !ok {
				return p.safe(e, fd, scope) // positional: every field
			}
			if identName(kv.Key) == f {
				return p.safe(kv.Value, fd, scope)
			}
		}
		return true // the zero value
	case *ast.Ident:
		return p.safeIdentField(e, f, fd, scope)
	case *ast.CallExpr:
		if identName(e.Fun) == "append" {
			for _, a := range e.Args {
				if !p.safeField(a, f, fd, scope) {
					return false
				}
			}
			return true
		}
	}
	return p.safe(e, fd, scope)
}

// safeCallField judges field f of a call's result-th result.
func (p *pkg) safeCallField(call *ast.CallExpr, result int, f string, fd *ast.FuncDecl, scope ast.Node) bool {
	if f == "" {
		return p.safeCall(call, result, fd, scope)
	}
	name := calleeName(call)
	if fds, ok := p.funcs[name]; ok && len(fds) > 0 {
		for _, callee := range fds {
			if !p.returnsSafe(callee, result, f) {
				return p.fail(call)
			}
		}
		return true
	}
	return p.safeCall(call, result, fd, scope)
}

func (p *pkg) safeCall(call *ast.CallExpr, result int, fd *ast.FuncDecl, scope ast.Node) bool {
	all := func(args []ast.Expr) bool {
		ok := true
		for _, a := range args {
			ok = p.safe(a, fd, scope) && ok
		}
		return ok
	}
	switch fn := call.Fun.(type) {
	case *ast.Ident:
		switch fn.Name {
		case "len", "cap", "make", "new":
			return true
		case "append", "string":
			return all(call.Args)
		}
		if p.consts[fn.Name] {
			return true
		}
		return p.safeFunc(fn.Name, result) && p.checkArgs(fn.Name, call, fd, scope)
	case *ast.ArrayType, *ast.ParenExpr:
		return all(call.Args)
	case *ast.SelectorExpr:
		if path, ok := p.imports[identName(fn.X)]; ok {
			switch path + "." + fn.Sel.Name {
			case "strings.Repeat":
				return p.safe(call.Args[0], fd, scope)
			case "strings.Join", "strings.TrimSuffix", "strings.TrimPrefix", "strings.TrimSpace", "fmt.Sprintf",
				"strings.NewReplacer", "strconv.Itoa", "strconv.FormatInt":
				return all(call.Args)
			}
			return p.fail(call)
		}
		switch fn.Sel.Name {
		case "Replace": // a strings.Replacer of accepted pairs, on accepted text
			if _, isPkgFunc := p.funcs["Replace"]; !isPkgFunc {
				return p.safe(fn.X, fd, scope) && all(call.Args)
			}
		}
		if id, isID := fn.X.(*ast.Ident); isID && fn.Sel.Name == "String" && p.isBuilder(id.Name, fd, scope) {
			return p.safeBuilder(id.Name, fd, scope)
		}
		if _, ok := p.funcs[fn.Sel.Name]; ok {
			// A method of the package: its text is what it returns (the receiver's
			// fields judged by their assignments), not the receiver itself.
			return p.safeFunc(fn.Sel.Name, result) && p.checkArgs(fn.Sel.Name, call, fd, scope)
		}
	}
	return p.fail(call)
}

// isBuilder reports whether name is declared in scope as a strings.Builder.
func (p *pkg) isBuilder(name string, fd *ast.FuncDecl, scope ast.Node) bool {
	var body ast.Node = fd.Body
	if fl, isLit := scope.(*ast.FuncLit); isLit {
		body = fl.Body
	}
	found := false
	ast.Inspect(body, func(n ast.Node) bool {
		if vs, ok := n.(*ast.ValueSpec); ok {
			if sel, isSel := vs.Type.(*ast.SelectorExpr); isSel && identName(sel.X) == "strings" && sel.Sel.Name == "Builder" {
				for _, n := range vs.Names {
					found = found || n.Name == name
				}
			}
		}
		return !found
	})
	return found
}

// safeBuilder judges a strings.Builder named name by every write to it in scope.
func (p *pkg) safeBuilder(name string, fd *ast.FuncDecl, scope ast.Node) bool {
	var body ast.Node = fd.Body
	if fl, isLit := scope.(*ast.FuncLit); isLit {
		body = fl.Body
	}
	ok := true
	ast.Inspect(body, func(n ast.Node) bool {
		c, isCall := n.(*ast.CallExpr)
		if !isCall {
			return true
		}
		if sel, isSel := c.Fun.(*ast.SelectorExpr); isSel && identName(sel.X) == name {
			switch sel.Sel.Name {
			case "WriteString", "WriteByte", "WriteRune", "Write":
				for _, a := range c.Args {
					ok = p.safe(a, fd, scope) && ok
				}
			}
		}
		return true
	})
	return ok
}

// checkArgs is true: the arguments of a call into the package are checked where
// they matter, when the callee's parameter reaches a query (needs).
func (p *pkg) checkArgs(string, *ast.CallExpr, *ast.FuncDecl, ast.Node) bool { return true }

// safeFunc reports whether every function or method named name returns an accepted
// value as its result-th result.
func (p *pkg) safeFunc(name string, result int) bool {
	fds := p.funcs[name]
	if len(fds) == 0 {
		p.bad = append(p.bad, name+"()")
		return false
	}
	for _, fd := range fds {
		if !p.returnsSafe(fd, result, "") {
			p.bad = append(p.bad, name+"()")
			return false
		}
	}
	return true
}

// returnsSafe reports whether fd's result-th result (its field f, if set) is
// accepted on every return.
func (p *pkg) returnsSafe(fd *ast.FuncDecl, result int, f string) bool {
	{
		key := [3]any{fd, result, f}
		if p.visiting[key] {
			return true // recursion: judged by the other returns
		}
		p.visiting[key] = true
		if fd.Body == nil {
			return false
		}
		ok := true
		ast.Inspect(fd.Body, func(n ast.Node) bool {
			if _, isLit := n.(*ast.FuncLit); isLit {
				return false
			}
			ret, isRet := n.(*ast.ReturnStmt)
			if !isRet {
				return true
			}
			switch {
			case len(ret.Results) > result && f == "":
				ok = p.safe(ret.Results[result], fd, fd) && ok
			case len(ret.Results) > result:
				ok = p.safeField(ret.Results[result], f, fd, fd) && ok
			case len(ret.Results) == 1:
				if c, isCall := ret.Results[0].(*ast.CallExpr); isCall {
					ok = p.safeCallField(c, result, f, fd, fd) && ok
				}
			case len(ret.Results) == 0:
				ok = p.namedResult(fd, result) && ok
			}
			return true
		})
		return ok
	}
}

// namedResult judges a bare return by the named result's assignments.
func (p *pkg) namedResult(fd *ast.FuncDecl, result int) bool {
	i := 0
	for _, f := range fd.Type.Results.List {
		for _, n := range f.Names {
			if i == result {
				return p.safeIdent(n, fd, fd)
			}
			i++
		}
	}
	return false
}

// safeIdent judges a name: a constant, a parameter (then a need on every call), or a
// variable whose every assignment in scope is accepted.
func (p *pkg) safeIdent(id *ast.Ident, fd *ast.FuncDecl, scope ast.Node) bool {
	return p.safeIdentField(id, "", fd, scope)
}

// safeIdentField judges field f of the variable id ("" the variable itself).
func (p *pkg) safeIdentField(id *ast.Ident, f string, fd *ast.FuncDecl, scope ast.Node) bool {
	// sub judges an assignment's value in the function it is written in (a literal
	// inside scope assigns in its own scope).
	sub := func(e ast.Expr) bool {
		sc := funcScope(fd, e)
		if f == "" {
			return p.safe(e, fd, sc)
		}
		return p.safeField(e, f, fd, sc)
	}
	switch id.Name {
	case "nil", "true", "false", "iota":
		return true
	}
	vkey := id.Name + "." + f + "@" + fmt.Sprint(scope.Pos())
	if p.visiting[vkey] {
		return true // a loop such as q += ...: judged by its other assignments
	}
	p.visiting[vkey] = true
	// A parameter of fd: judged at every call (needs); the receiver's fields by
	// their assignments.
	if scope == ast.Node(fd) {
		idx := 0
		params := fd.Type.Params.List
		if fd.Recv != nil {
			params = append(append([]*ast.Field{}, fd.Recv.List...), params...)
			idx = -len(fd.Recv.List)
		}
		for _, pf := range params {
			for _, n := range pf.Names {
				if n.Name == id.Name {
					if idx >= 0 {
						p.needs[paramRef{fd, idx, f}] = true
						return true
					}
					return p.safeReceiverField(fd, f)
				}
				idx++
			}
			if len(pf.Names) == 0 {
				idx++
			}
		}
	}
	found, ok := false, true
	var body ast.Node = fd.Body
	if fl, isLit := scope.(*ast.FuncLit); isLit {
		body = fl.Body
		if idx := paramIndex(fl.Type, id.Name); idx >= 0 {
			return p.safeClosureArg(fl, idx, f, fd)
		}
	}
	ast.Inspect(body, func(n ast.Node) bool {
		switch s := n.(type) {
		case *ast.AssignStmt:
			for i, l := range s.Lhs {
				if identName(l) != id.Name {
					continue
				}
				found = true
				switch {
				case len(s.Rhs) == len(s.Lhs):
					ok = sub(s.Rhs[i]) && ok
				case len(s.Rhs) == 1:
					if c, isCall := s.Rhs[0].(*ast.CallExpr); isCall {
						ok = p.safeCallField(c, i, f, fd, funcScope(fd, c)) && ok
					} else {
						ok = p.fail(s.Rhs[0]) && ok
					}
				}
			}
		case *ast.ValueSpec:
			for i, n := range s.Names {
				if n.Name != id.Name {
					continue
				}
				found = true
				if len(s.Values) > i {
					ok = sub(s.Values[i]) && ok
				}
			}
		case *ast.GenDecl:
			if s.Tok == token.CONST {
				for _, sp := range s.Specs {
					for _, n := range sp.(*ast.ValueSpec).Names {
						if n.Name == id.Name {
							found = true
						}
					}
				}
				return false
			}
		case *ast.RangeStmt:
			if identName(s.Key) == id.Name {
				found = true // an index
			}
			if s.Value != nil && identName(s.Value) == id.Name {
				found = true
				ok = sub(s.X) && ok
			}
		}
		return true
	})
	if found {
		return ok
	}
	if p.consts[id.Name] {
		return true
	}
	if scope != ast.Node(fd) {
		// A variable of the enclosing function, captured by the literal.
		return p.safeIdentField(id, f, fd, fd)
	}
	return p.fail(id)
}

func paramIndex(ft *ast.FuncType, name string) int {
	idx := 0
	for _, fl := range ft.Params.List {
		for _, n := range fl.Names {
			if n.Name == name {
				return idx
			}
			idx++
		}
		if len(fl.Names) == 0 {
			idx++
		}
	}
	return -1
}

// safeClosureArg judges a function literal's parameter by every call of the
// variable the literal is assigned to, in fd.
func (p *pkg) safeClosureArg(fl *ast.FuncLit, idx int, f string, fd *ast.FuncDecl) bool {
	name := ""
	ast.Inspect(fd.Body, func(n ast.Node) bool {
		if as, ok := n.(*ast.AssignStmt); ok {
			for i, r := range as.Rhs {
				if r == ast.Expr(fl) && i < len(as.Lhs) {
					name = identName(as.Lhs[i])
				}
			}
		}
		return name == ""
	})
	if name == "" {
		return p.fail(fl)
	}
	ok, calls := true, 0
	ast.Inspect(fd.Body, func(n ast.Node) bool {
		c, isCall := n.(*ast.CallExpr)
		if !isCall || identName(c.Fun) != name || idx >= len(c.Args) {
			return true
		}
		calls++
		scope := funcScope(fd, c)
		if f == "" {
			ok = p.safe(c.Args[idx], fd, scope) && ok
		} else {
			ok = p.safeField(c.Args[idx], f, fd, scope) && ok
		}
		return true
	})
	return calls > 0 && ok
}

// safeReceiverField judges a field of a method's receiver by every assignment to
// that field in the package (composite literals keyed by it, and x.f = ...).
func (p *pkg) safeReceiverField(fd *ast.FuncDecl, f string) bool {
	if f == "" {
		return p.fail(fd.Recv.List[0].Type)
	}
	ok := true
	for _, fds := range p.funcs {
		for _, other := range fds {
			if other.Body == nil {
				continue
			}
			ast.Inspect(other.Body, func(n ast.Node) bool {
				switch s := n.(type) {
				case *ast.KeyValueExpr:
					if identName(s.Key) == f {
						ok = p.safe(s.Value, other, funcScope(other, s)) && ok
					}
				case *ast.AssignStmt:
					for i, l := range s.Lhs {
						if sel, isSel := l.(*ast.SelectorExpr); isSel && sel.Sel.Name == f && len(s.Rhs) == len(s.Lhs) {
							ok = p.safe(s.Rhs[i], other, funcScope(other, s)) && ok
						}
					}
				}
				return true
			})
		}
	}
	return ok
}

// foreignConst reports whether the module's package at path declares a constant
// name.
func (p *pkg) foreignConst(path, name string) bool {
	if p.mod.Path == "" || !strings.HasPrefix(path, p.mod.Path+"/") {
		return false
	}
	consts, ok := p.foreign[path]
	if !ok {
		consts = map[string]bool{}
		files, _ := parseDir(token.NewFileSet(), filepath.Join(p.mod.Dir, strings.TrimPrefix(path, p.mod.Path+"/")))
		for _, f := range files {
			for _, d := range f.Decls {
				if g, isGen := d.(*ast.GenDecl); isGen && g.Tok == token.CONST {
					for _, s := range g.Specs {
						for _, n := range s.(*ast.ValueSpec).Names {
							consts[n.Name] = true
						}
					}
				}
			}
		}
		p.foreign[path] = consts
	}
	return consts[name]
}
