package jsonguard

import (
	"bytes"
	"errors"

	"github.com/valyala/fastjson"
)

// ErrDuplicateKey is returned by CheckUnique for an object that names a key twice.
var ErrDuplicateKey = errors.New("json object names a key twice")

var parsers fastjson.ParserPool

// smallObject is the most keys compared pairwise; larger objects use a set.
const smallObject = 16

// CheckUnique is Check that also refuses, with ErrDuplicateKey, any object (at any
// depth) naming one key twice. Keys are compared after unescaping and byte for byte,
// as encoding/json fills a map: "a" and "\u0061" are one key, "a" and "A" two.
// Decoders disagree on which of two duplicates wins, so a document that has them
// can mean one thing to the code that checks it and another to the code that uses it.
// It costs one Check, one fastjson parse and one walk: linear in len(b).
func CheckUnique(b []byte, maxDepth int) error {
	if err := Check(b, maxDepth); err != nil {
		return err
	}
	p := parsers.Get()
	defer parsers.Put(p)
	v, err := p.ParseBytes(b)
	if err != nil {
		// Unreachable: fastjson accepts every document Check accepts (FuzzCheck).
		return ErrSyntax
	}
	if hasDuplicateKey(v) {
		return ErrDuplicateKey
	}
	return nil
}

// hasDuplicateKey walks v; its recursion is as deep as the document, which Check bounded.
func hasDuplicateKey(v *fastjson.Value) bool {
	switch v.Type() {
	case fastjson.TypeArray:
		for _, e := range v.GetArray() {
			if hasDuplicateKey(e) {
				return true
			}
		}
	case fastjson.TypeObject:
		o, _ := v.Object()
		dup := false
		if o.Len() <= smallObject {
			var small [smallObject][]byte
			keys := small[:0]
			o.Visit(func(k []byte, child *fastjson.Value) {
				for _, seen := range keys {
					if bytes.Equal(seen, k) {
						dup = true
					}
				}
				keys = append(keys, k)
				dup = dup || hasDuplicateKey(child)
			})
			return dup
		}
		seen := make(map[string]struct{}, o.Len())
		o.Visit(func(k []byte, child *fastjson.Value) {
			if _, ok := seen[string(k)]; ok {
				dup = true
			}
			seen[string(k)] = struct{}{}
			dup = dup || hasDuplicateKey(child)
		})
		return dup
	}
	return false
}
