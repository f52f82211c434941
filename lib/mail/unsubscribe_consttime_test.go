package mail

import (
	"go/ast"
	"go/parser"
	"go/token"
	"strings"
	"testing"
)

// The signature check must stay constant-time: Verify compares signatures with
// hmac.Equal (or subtle.ConstantTimeCompare), tries every secret whatever matched,
// and never compares the signature with == or !=, which return at the first differing
// byte and let a forger find a valid signature byte by byte.
func TestUnsubscribeVerifyComparesInConstantTime(t *testing.T) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "unsubscribe.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var verify *ast.FuncDecl
	for _, d := range f.Decls {
		if fd, ok := d.(*ast.FuncDecl); ok && fd.Name.Name == "Verify" {
			verify = fd
		}
	}
	if verify == nil {
		t.Fatal("no Verify in unsubscribe.go")
	}
	constantTime, early := 0, false
	ast.Inspect(verify.Body, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.CallExpr:
			if sel, ok := n.Fun.(*ast.SelectorExpr); ok {
				if x, ok := sel.X.(*ast.Ident); ok && (x.Name+"."+sel.Sel.Name == "hmac.Equal" || x.Name+"."+sel.Sel.Name == "subtle.ConstantTimeCompare") {
					constantTime++
				}
			}
		case *ast.BinaryExpr:
			if n.Op == token.EQL || n.Op == token.NEQ {
				for _, side := range []ast.Expr{n.X, n.Y} {
					if id, ok := side.(*ast.Ident); ok && id.Name == "sig" {
						t.Errorf("%s: the signature is compared with %s", fset.Position(n.Pos()), n.Op)
					}
					if c, ok := side.(*ast.CallExpr); ok && strings.Contains(calleeOf(c), "mac") {
						t.Errorf("%s: a computed signature is compared with %s", fset.Position(n.Pos()), n.Op)
					}
				}
			}
		case *ast.RangeStmt:
			// The loop over the secrets must not stop at the first match.
			ast.Inspect(n.Body, func(m ast.Node) bool {
				if b, ok := m.(*ast.BranchStmt); ok && b.Tok == token.BREAK {
					early = true
				}
				if _, ok := m.(*ast.ReturnStmt); ok {
					early = true
				}
				return true
			})
		}
		return true
	})
	if constantTime == 0 {
		t.Error("Verify does not use hmac.Equal or subtle.ConstantTimeCompare")
	}
	if early {
		t.Error("Verify leaves the loop over the secrets early: the time taken tells which secret matched")
	}
}

// calleeOf names a call's function, for the check above.
func calleeOf(c *ast.CallExpr) string {
	if id, ok := c.Fun.(*ast.Ident); ok {
		return id.Name
	}
	return ""
}
