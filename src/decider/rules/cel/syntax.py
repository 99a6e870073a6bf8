"""CEL text to one small tree both engines are checked on: cel-python's parser, then our nodes.

Operators become calls named as in CEL's own AST (`_&&_`, `_==_`, `@in`, `_[_]`), macros
become Comprehensions, `has(a.b)` a testing Select. Literals are decoded here, by the CEL
specification, and what the C++ runtime cannot hold is refused with its place: a NUL
character (it would cut the string there), a lone surrogate, an integer beyond 64 bits.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import celpy
import msgspec
from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
# the C++ parser's limits: sub-expressions within sub-expressions (parentheses, arguments,
# items), and the depth of the tree it builds
PARSE_NESTING = 32
TREE_DEPTH = 32
# words the C++ parser keeps for itself: never a name, and these four not even after a dot
_RESERVED_FIELDS = frozenset({"in", "null", "true", "false"})
_RESERVED = _RESERVED_FIELDS | frozenset(
    {"as", "break", "const", "continue", "else", "for", "function", "if", "import", "let"}
    | {"loop", "package", "namespace", "return", "var", "void", "while"}
)
_TYPE_NAMES = frozenset(
    {"int", "uint", "double", "bool", "string", "bytes", "list", "map", "null_type", "type"}
)


class CelCompileError(Exception):
    """A syntax or type error, or a construct refused. Line and column are 1-based, within
    the expression."""

    def __init__(self, line: int, column: int, message: str) -> None:
        self.line, self.column, self.message = line, column, message
        super().__init__(f"{line}:{column}: {message}")


class CelCompileErrors(Exception):
    """Every error found in one expression."""

    def __init__(self, errors: list[CelCompileError]) -> None:
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))


class Lit(msgspec.Struct, frozen=True):
    value: Any  # None, bool, int, float or str
    line: int
    column: int


class Ident(msgspec.Struct, frozen=True):
    name: str
    line: int
    column: int


class Select(msgspec.Struct, frozen=True):
    """`operand.field`; with `test`, `has(operand.field)`."""

    operand: Expr
    field: str
    line: int
    column: int
    test: bool = False


class Call(msgspec.Struct, frozen=True):
    """A function, a method (`target.f(args)`) or an operator (`_+_`, `!_`, `_?_:_`)."""

    function: str
    args: tuple[Expr, ...]
    line: int
    column: int
    target: Expr | None = None


class ListExpr(msgspec.Struct, frozen=True):
    items: tuple[Expr, ...]
    line: int
    column: int


class MapExpr(msgspec.Struct, frozen=True):
    entries: tuple[tuple[Expr, Expr], ...]
    line: int
    column: int


class Comprehension(msgspec.Struct, frozen=True):
    """`range.macro(var, args...)`: all, exists, exists_one, map (with an optional filter
    before the transform), filter."""

    macro: str
    range: Expr
    var: str
    args: tuple[Expr, ...]
    line: int
    column: int


Expr = Lit | Ident | Select | Call | ListExpr | MapExpr | Comprehension


def parse(source: str) -> Expr:
    """The tree of `source`. Raises CelCompileErrors with every problem found."""
    return _parse(source)


@functools.lru_cache(maxsize=4096)
def _parse(source: str) -> Expr:
    # each rule is parsed by both the check and the compiler; the cache keeps it one parse
    try:
        tree = _grammar().parse(source)
    except UnexpectedInput as exc:
        raise CelCompileErrors([_syntax_error(exc, source)]) from None
    except RecursionError:
        raise CelCompileErrors([CelCompileError(1, 1, "expression nested too deeply")]) from None
    builder = _Builder()
    expr = builder.expr(tree, 0, 1)
    if builder.errors:
        raise CelCompileErrors(builder.errors)
    return expr


@functools.cache
def _grammar() -> Lark:
    """An LALR parser of cel-python's CEL grammar, built once. (cel-python's own turns
    `true` into a token with no place; ours keeps it, for the error messages.)"""
    grammar = (Path(celpy.__file__).parent / "cel.lark").read_text()
    return Lark(
        grammar,
        parser="lalr",
        start="expr",
        propagate_positions=True,
        maybe_placeholders=False,
        priority="invert",
        g_regex_flags=re.M,
        lexer_callbacks={"IDENT": _bool_literal},
    )


def _bool_literal(token: Token) -> Token:
    if token.value in ("true", "false"):
        return Token.new_borrow_pos("BOOL_LIT", token.value, token)
    return token


_COMMENT = re.compile(r"//[^\n]*")
_CLOSERS = {"RPAR": "')'", "RSQB": "']'", "RBRACE": "'}'", "COLON": "':'"}


def _syntax_error(exc: UnexpectedInput, source: str) -> CelCompileError:
    """Where the parser stopped, and what it met there, in a rule author's words."""
    line, column = max(exc.line or 1, 1), max(exc.column or 1, 1)
    if isinstance(exc, UnexpectedToken) and exc.token.type == "$END":
        lines = source.splitlines() or [""]
        missing = [_CLOSERS[t] for t in sorted(exc.expected) if t in _CLOSERS]
        why = f"{' or '.join(missing)} is missing" if missing else "the expression ends too soon"
        return CelCompileError(len(lines), len(lines[-1]) + 1, f"syntax error: {why}")
    if isinstance(exc, UnexpectedToken):
        token = str(exc.token)
        before = _COMMENT.sub("", source[: exc.token.start_pos]).rstrip()
        trailing = token in ")]}" and before.endswith(",")
        hint = " (drop the comma before it)" if trailing else ""
        return CelCompileError(line, column, f"syntax error: unexpected {token!r}{hint}")
    if isinstance(exc, UnexpectedCharacters) and exc.char in "\"'":
        return CelCompileError(line, column, "syntax error: a string is not closed")
    char = getattr(exc, "char", "")
    pos = getattr(exc, "pos_in_stream", None) or 0
    after_operator = source[:pos].rstrip()[-1:] in ("=", "<", ">", "!")  # `===`, `<= =`
    hint = " (compare with ==)" if char == "=" and not after_operator else ""
    return CelCompileError(line, column, f"syntax error: unexpected character {char!r}{hint}")


class _Builder:
    """Lark's tree (cel-python's grammar) to our nodes, as the C++ parser builds its own: a
    run of `&&` (or `||`) is one node, a run of `!` (or `-`) is one or none, one minus before
    a number is part of it. It measures nesting as that parser does and refuses what it would
    refuse: sub-expressions nested more than PARSE_NESTING deep (parentheses, arguments,
    items), a tree deeper than TREE_DEPTH."""

    def __init__(self) -> None:
        self.errors: list[CelCompileError] = []

    def refuse(self, where: Tree[Any] | Token, message: str) -> Lit:
        line, column = _place(where)
        self.errors.append(CelCompileError(line, column, message))
        return Lit(None, line, column)

    def expr(self, node: Tree[Any], nest: int, level: int) -> Expr:
        """`node` as our tree; `nest`: sub-expressions around it, `level`: its depth."""
        kind = node.data
        children: list[Any] = node.children
        if kind == "expr":
            nest += 1
            if nest > PARSE_NESTING + 1:
                return self.refuse(node, f"sub-expressions nested deeper than {PARSE_NESTING}")
        if len(children) == 1 and kind in _WRAPPERS:
            return self.expr(children[0], nest, level)
        if level > TREE_DEPTH:
            return self.refuse(node, f"nested deeper than {TREE_DEPTH} levels")
        line, column = _place(node)
        deeper = level + 1
        if kind == "expr":
            args = tuple(self.expr(c, nest, deeper) for c in children)
            return Call("_?_:_", args, line, column)
        if kind in ("conditionalor", "conditionaland"):
            operands = [self.expr(c, nest, deeper) for c in _chain(node)]
            return Call(
                "_||_" if kind == "conditionalor" else "_&&_", tuple(operands), line, column
            )
        if kind in ("relation", "addition", "multiplication"):
            operator, right = children
            left = self.expr(operator.children[0], nest, deeper)
            line, column = _operator_place(operator)
            args = (left, self.expr(right, nest, deeper))
            return Call(_OPERATORS[operator.data], args, line, column)
        if kind == "unary":
            return self.unary(node, nest, level)
        if kind == "paren_expr":
            return self.expr(children[0], nest, level)
        if kind == "member_dot":
            operand, field = children
            return self.select(operand, field, nest, level, test=False)
        if kind == "member_dot_arg":
            return self.method(node, nest, level)
        if kind == "member_index":
            operand, index = children
            line, column = _place(index)  # point at the bracket, just before the index
            args = (self.expr(operand, nest, deeper), self.expr(index, nest, deeper))
            return Call("_[_]", args, line, max(1, column - 1))
        if kind == "ident_arg":
            return self.function(node, nest, level)
        if kind == "ident":
            return self.ident(children[0], line, column)
        if kind == "list_lit":
            items = self.exprs(children[0], nest, deeper) if children else ()
            return ListExpr(items, line, column)
        if kind == "map_lit":
            flat = self.exprs(children[0], nest, deeper) if children else ()
            return MapExpr(tuple(zip(flat[::2], flat[1::2], strict=True)), line, column)
        if kind == "literal":
            return self.literal(children[0])
        if kind == "member_object":
            return self.refuse(node, "message construction (Name{...}) is not supported")
        if kind in ("dot_ident", "dot_ident_arg"):
            return self.refuse(node, "a leading dot (.name) is not supported")
        return self.refuse(node, f"unsupported syntax ({kind})")

    def unary(self, node: Tree[Any], nest: int, level: int) -> Expr:
        """A run of `!` or of `-`: pairs cancel; one `-` before a number is its sign."""
        line, column = _place(node)
        signs: list[str] = []
        while node.data == "unary" and len(node.children) == 2:
            signs.append(node.children[0].data)
            node = node.children[1]
        if len(set(signs)) > 1:
            return self.refuse(node, "put parentheses between ! and -: !(-x), -(!x)")
        if signs[0] == "unary_neg":
            token = _literal_token(node)
            if token is not None and token.type in ("INT_LIT", "FLOAT_LIT"):
                return self.signed_literal(token, len(signs), level)
        if len(signs) % 2 == 0:
            return self.expr(node, nest, level)
        name = "!_" if signs[0] == "unary_not" else "-_"
        return Call(name, (self.expr(node, nest, level + 1),), line, column)

    def signed_literal(self, token: Token, minuses: int, level: int) -> Expr:
        """A number after `minuses` minus signs. Exactly one makes a negative literal (so
        -9223372036854775808 is an int); more apply in pairs to the number as written."""
        text = str(token)
        minuses += text.startswith("-")
        magnitude = self.literal(
            Token(token.type, text.lstrip("-"), line=token.line, column=token.column),
            allow_int64_min=minuses == 1,
        )
        if not isinstance(magnitude.value, int | float) or minuses % 2 == 0:
            return magnitude
        negative = Lit(-magnitude.value, magnitude.line, magnitude.column)
        if minuses == 1:
            return negative
        if level + 1 > TREE_DEPTH:
            return self.refuse(token, f"nested deeper than {TREE_DEPTH} levels")
        return Call("-_", (magnitude,), magnitude.line, magnitude.column)

    def exprs(self, node: Tree[Any], nest: int, level: int) -> tuple[Expr, ...]:
        return tuple(self.expr(child, nest, level) for child in node.children)

    def ident(self, token: Token, line: int, column: int) -> Expr:
        name = str(token)
        if name in _RESERVED:
            return self.refuse(token, f"{name!r} is a reserved word, not a name")
        if name in _TYPE_NAMES:
            return self.refuse(token, f"{name!r} is a type name; type values are not supported")
        return Ident(name, line, column)

    def select(
        self, operand: Tree[Any], field: Token, nest: int, level: int, *, test: bool
    ) -> Expr:
        name = str(field)
        if name in _RESERVED_FIELDS:
            return self.refuse(field, f"{name!r} is a reserved word; write [{_quote(name)}]")
        line, column = _place(field)
        return Select(self.expr(operand, nest, level + 1), name, line, column - 1, test)

    def method(self, node: Tree[Any], nest: int, level: int) -> Expr:
        target, name_token, *rest = node.children
        name = str(name_token)
        args = rest[0].children if rest else []
        line, column = _place(name_token)
        if name in MACROS:
            return self.comprehension(node, nest, level)
        parsed = tuple(self.expr(a, nest, level + 1) for a in args)
        return Call(name, parsed, line, column, self.expr(target, nest, level + 1))

    def comprehension(self, node: Tree[Any], nest: int, level: int) -> Expr:
        target, name_token, *arglist = node.children
        macro = str(name_token)
        args = arglist[0].children if arglist else []
        arity = (2, 3) if macro == "map" else (2,)
        if len(args) not in arity:
            shape = (
                "a variable, an optional filter and a value"
                if macro == "map"
                else ("a variable and a condition")
            )
            return self.refuse(node, f"{macro}() takes {shape}: list.{macro}(x, ...)")
        variable = _simple_ident(args[0])
        if variable is None or variable in _RESERVED:
            return self.refuse(args[0], f"{macro}()'s first argument must be a variable name")
        line, column = _place(node.children[1])
        parts = tuple(self.expr(a, nest, level + 1) for a in args[1:])
        source = self.expr(target, nest, level + 1)
        return Comprehension(macro, source, variable, parts, line, column)

    def function(self, node: Tree[Any], nest: int, level: int) -> Expr:
        name_token, *rest = node.children
        name = str(name_token)
        args = rest[0].children if rest else []
        line, column = _place(name_token)
        if name == "has":
            inner = _unwrap(args[0]) if len(args) == 1 else None
            if inner is None or inner.data != "member_dot":
                return self.refuse(node, "has() takes one field selection: has(visitor.field)")
            operand, field = list[Any](inner.children)
            # the C++ parser counts has() and its selection as two levels
            return self.select(operand, field, nest + 1, level + 1, test=True)
        return Call(name, tuple(self.expr(a, nest, level + 1) for a in args), line, column)

    def literal(self, token: Token, *, allow_int64_min: bool = False) -> Lit:
        text, kind = str(token), token.type
        line, column = _place(token)
        if kind == "BOOL_LIT":
            return Lit(text == "true", line, column)
        if kind == "NULL_LIT":
            return Lit(None, line, column)
        if kind == "INT_LIT":
            negative = text.startswith("-")
            digits = text.lstrip("-")
            value = int(digits, 16) if digits[:2] in ("0x", "0X") else int(digits, 10)
            value = -value if negative else value
            if not INT64_MIN <= value <= INT64_MAX + allow_int64_min:
                return self.refuse(token, "integer literal out of the 64-bit range")
            return Lit(value, line, column)
        if kind == "FLOAT_LIT":
            if re.search(r"\.(?![0-9])", text):
                return self.refuse(token, f"write {text.replace('.', '.0', 1)}, not {text}")
            return Lit(float(text), line, column)
        if kind in ("STRING_LIT", "MLSTRING_LIT"):
            try:
                return Lit(decode_string(text), line, column)
            except ValueError as exc:
                return self.refuse(token, str(exc))
        if kind == "UINT_LIT":
            return self.refuse(token, "unsigned integers are not supported; drop the u")
        if kind == "BYTES_LIT":
            return self.refuse(token, "bytes literals are not supported; JSON has no bytes")
        return self.refuse(token, f"unsupported literal {text!r}")


_WRAPPERS = frozenset(
    {"expr", "conditionalor", "conditionaland", "relation", "addition", "multiplication"}
    | {"unary", "member", "primary"}
)
_OPERATORS = {
    "relation_lt": "_<_",
    "relation_le": "_<=_",
    "relation_gt": "_>_",
    "relation_ge": "_>=_",
    "relation_eq": "_==_",
    "relation_ne": "_!=_",
    "relation_in": "@in",
    "addition_add": "_+_",
    "addition_sub": "_-_",
    "multiplication_mul": "_*_",
    "multiplication_div": "_/_",
    "multiplication_mod": "_%_",
}


def _place(node: Tree[Any] | Token) -> tuple[int, int]:
    if isinstance(node, Token):
        return node.line or 1, node.column or 1
    meta = node.meta
    return (getattr(meta, "line", 1) or 1, getattr(meta, "column", 1) or 1)


def _operator_place(operator: Tree[Any]) -> tuple[int, int]:
    """Where the operator itself is: the end of its subtree (`left <`), less its width."""
    meta = operator.meta
    width = len(_OPERATORS[operator.data].strip("_@"))
    line = getattr(meta, "end_line", None) or 1
    return line, max(1, (getattr(meta, "end_column", None) or 1) - width)


def _chain(node: Tree[Any]) -> list[Any]:
    """The operands of a run of one logical operator, left to right (lark nests it left)."""
    operands: list[Any] = []
    kind = node.data
    while node.data == kind and len(node.children) == 2:
        operands.append(node.children[1])
        node = node.children[0]
    operands.append(node)
    return operands[::-1]


def _unwrap(node: Any) -> Tree[Any] | None:
    """The node beneath the single-child wrappers (expr, member, primary, ...)."""
    while isinstance(node, Tree) and len(node.children) == 1 and node.data not in ("ident",):
        if node.data in ("member_dot", "literal", "list_lit", "map_lit"):
            break
        node = node.children[0]
    return node if isinstance(node, Tree) else None


def _simple_ident(node: Any) -> str | None:
    inner = _unwrap(node)
    if inner is not None and inner.data == "ident":
        return str(inner.children[0])
    return None


def _quote(text: str) -> str:
    return '"' + text + '"'


_SIMPLE_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    "'": "'",
    '"': '"',
    "`": "`",
    "?": "?",
}
_ESCAPE = re.compile(
    r"\\(?:([abfnrtv\\'\"`?])|[xX]([0-9a-fA-F]{2})|u([0-9a-fA-F]{4})"
    r"|U([0-9a-fA-F]{8})|([0-3][0-7]{2})|(.?))",
    re.S,
)


def decode_string(token: str) -> str:
    """A CEL string literal's value. Raises ValueError, saying why, for an escape CEL does
    not define and for what the C++ runtime cannot hold (NUL, lone surrogates). A CR or CRLF
    written inside a triple-quoted string is a newline there (an escaped \\r stays a CR)."""
    raw = token[0] in "rR"
    body = token[1:] if raw else token
    quote = body[:3] if body[:3] in ('"""', "'''") else body[0]
    text = body[len(quote) : -len(quote)]
    if len(quote) == 3:  # a line break written in it is a newline, as the C++ parser reads it
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if raw:
        if "\\" + quote[0] in text:
            raise ValueError("a raw string may not hold an escaped quote; use a plain string")
        value = text
    else:
        value = _ESCAPE.sub(_unescape, text)
    if "\x00" in value:
        raise ValueError("a string may not hold a NUL character")
    if any("\ud800" <= c <= "\udfff" for c in value):
        raise ValueError("a string may not hold a lone surrogate")
    return value


def _unescape(match: re.Match[str]) -> str:
    simple, hex2, hex4, hex8, octal, bad = match.groups()
    if simple is not None:
        return _SIMPLE_ESCAPES[simple]
    code = hex2 or hex4 or hex8
    if code is not None:
        point = int(code, 16)
    elif octal is not None:
        point = int(octal, 8)
    else:
        raise ValueError(f"unknown escape sequence \\{bad}")
    if point > 0x10FFFF or 0xD800 <= point <= 0xDFFF:
        raise ValueError(f"escape \\{match[0][1:]} is not a Unicode character")
    return chr(point)


def contains(expr: Expr, kind: type[Expr] | tuple[type[Expr], ...]) -> bool:
    """Whether `expr` holds a node of `kind` (isinstance's), anywhere evaluating it reaches
    but inside a comprehension, which is found, or not, as a whole."""
    if isinstance(expr, kind):
        return True
    if isinstance(expr, Select):
        return contains(expr.operand, kind)
    if isinstance(expr, ListExpr):
        return any(contains(item, kind) for item in expr.items)
    if isinstance(expr, MapExpr):
        return any(contains(k, kind) or contains(v, kind) for k, v in expr.entries)
    if isinstance(expr, Call):
        return (expr.target is not None and contains(expr.target, kind)) or any(
            contains(arg, kind) for arg in expr.args
        )
    return False


def start_of(expr: Expr) -> tuple[int, int]:
    """Where `expr` begins in the text: its leftmost operand's place."""
    while True:
        if isinstance(expr, Select) and not expr.test:
            expr = expr.operand
        elif isinstance(expr, Call) and expr.target is not None:
            expr = expr.target
        elif isinstance(expr, Call) and expr.function[0] == "_" and expr.args:
            expr = expr.args[0]
        elif isinstance(expr, Comprehension):
            expr = expr.range
        else:
            return expr.line, expr.column


class Reference(msgspec.Struct, frozen=True):
    """A read of a variable, with the field path that follows it (`account.fit_score`)."""

    root: str
    path: tuple[str, ...]
    line: int
    column: int


def references(source: str) -> tuple[Reference, ...]:
    """Every free identifier `source` reads (a rule variable, or a typo of one), with the
    field path that follows it and its place. Names bound by a macro
    (`roles.exists(r, r == "vp")`) are not variables and are left out. Raises
    CelCompileErrors."""
    return tuple(_reads(parse(source), frozenset()))


def _reads(expr: Expr, bound: frozenset[str]) -> Iterator[Reference]:
    if isinstance(expr, Select):
        path: list[str] = []
        base: Expr = expr
        while isinstance(base, Select):
            path.append(base.field)
            base = base.operand
        if isinstance(base, Ident):
            if base.name not in bound:
                yield Reference(base.name, tuple(reversed(path)), base.line, base.column)
        else:
            yield from _reads(base, bound)
    elif isinstance(expr, Ident):
        if expr.name not in bound:
            yield Reference(expr.name, (), expr.line, expr.column)
    elif isinstance(expr, Call):
        if expr.target is not None:
            yield from _reads(expr.target, bound)
        for arg in expr.args:
            yield from _reads(arg, bound)
    elif isinstance(expr, ListExpr):
        for item in expr.items:
            yield from _reads(item, bound)
    elif isinstance(expr, MapExpr):
        for key, value in expr.entries:
            yield from _reads(key, bound)
            yield from _reads(value, bound)
    elif isinstance(expr, Comprehension):
        yield from _reads(expr.range, bound)
        for arg in expr.args:
            yield from _reads(arg, bound | {expr.var})


def caller_sized(source: str, root: str = "context") -> tuple[Comprehension, ...]:
    """The comprehensions of `source` that range over what the variable `root` holds, directly
    (`context.pages.exists(...)`) or through a variable another one binds to it
    (`context.pages.exists(p, p.tags.exists(...))`): the caller of a request decides how long
    those run. Raises CelCompileErrors."""
    return tuple(_ranging_over(parse(source), root, frozenset()))


def _ranging_over(expr: Expr, root: str, tainted: frozenset[str]) -> Iterator[Comprehension]:
    if isinstance(expr, Comprehension):
        sources = {ref.root for ref in _reads(expr.range, frozenset())}
        ranges = root in sources or not sources.isdisjoint(tainted)
        if ranges:
            yield expr
        yield from _ranging_over(expr.range, root, tainted)
        inner = tainted | {expr.var} if ranges else tainted - {expr.var}
        for arg in expr.args:
            yield from _ranging_over(arg, root, inner)
    elif isinstance(expr, Select):
        yield from _ranging_over(expr.operand, root, tainted)
    elif isinstance(expr, Call):
        for part in (expr.target, *expr.args):
            if part is not None:
                yield from _ranging_over(part, root, tainted)
    elif isinstance(expr, ListExpr):
        for item in expr.items:
            yield from _ranging_over(item, root, tainted)
    elif isinstance(expr, MapExpr):
        for key, value in expr.entries:
            yield from _ranging_over(key, root, tainted)
            yield from _ranging_over(value, root, tainted)


def _literal_token(node: Tree[Any]) -> Token | None:
    """The literal `node` is, through its single-child wrappers but not through parentheses."""
    while isinstance(node, Tree) and node.data in ("unary", "member", "primary"):
        if len(node.children) != 1:
            return None
        node = node.children[0]
    if isinstance(node, Tree) and node.data == "literal":
        token = node.children[0]
        return token if isinstance(token, Token) else None
    return None
