package sqlcheck

import (
	"go/format"
	"go/token"
	"io"
)

func formatNode(w io.Writer, fset *token.FileSet, n any) error { return format.Node(w, fset, n) }
