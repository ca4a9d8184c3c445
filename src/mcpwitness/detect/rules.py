"""Detection rules as data: YAML files of rules, lists and macros, in the
shape Falco uses, checked completely before they replace a running set.

    - list: downloaders
      items: [curl, wget, nc]
    - macro: in_call
      condition: attribution.call exists
    - rule: Tool ran a downloader
      desc: a tool call started curl, wget...
      condition: type = exec and in_call and category = downloader
      output: "%call.tool ran %filename (server %call.server, call %call.id)"
      priority: WARNING
      tags: [mcp, execution]
      exceptions:
        - name: known_fetchers
          fields: [call.server, call.tool]
          values: [[my-server, fetch_url]]
    - detector: rate          # settings of a stateful detector (detectors.py)
      window: 10s

The condition language (compiled to one Python function per rule):
    expr   := expr or expr | expr and expr | not expr | ( expr ) | macro
            | field | field exists | field OP value
    OP     := = == != < <= > >= in intersects contains icontains
              startswith endswith glob regex
    value  := number | true | false | "string" | 'string' | bare-word
            | ( value, value, list-name, ... )
A field is a dotted path into the record (`arguments.path`, `server.exe`) or
into the detectors' facts for it (`rate.client.burst`, `args.traversal`,
`call.tool`...); `type` is the record's type. A missing field makes every
comparison false; a bare field is true when its value is truthy.

This module is pure: no kernel, no I/O beyond reading the files.
"""
from __future__ import annotations

import fnmatch
import operator
import os
import re
from dataclasses import dataclass, field

import yaml
from msgspec import UNSET

from ..util import ConfigError, duration

PRIORITIES = ["emergency", "alert", "critical", "error", "warning", "notice", "informational", "debug"]
_PRIO_ALIASES = {"info": "informational", "warn": "warning", "err": "error", "crit": "critical",
                 "emerg": "emergency"}
ONCE_PER = ("call", "session", "record")
RULE_KEYS = {"rule", "desc", "condition", "output", "priority", "tags", "enabled", "exceptions", "append",
             "once_per", "aggregate", "aggregate_by"}
# repeats of a rule's alert for the same server, tool and key facts (aggregate_by) within this
# window become one alert with an exact count (engine.py); `aggregate: 0` turns it off
AGGREGATE_DEFAULT = 60.0


class RuleError(ValueError):
    """A rule file that cannot be used: file:line: reason."""


# --- the YAML, with line numbers ------------------------------------------

class _Map(dict):
    line = 0
    lines: dict = {}


class _Loader(yaml.SafeLoader):
    pass


def _construct_map(loader, node):
    loader.flatten_mapping(node)
    m = _Map()
    m.line = node.start_mark.line + 1
    m.lines = {}
    for k, v in node.value:
        key = loader.construct_object(k, deep=True)
        m[key] = loader.construct_object(v, deep=True)
        m.lines[key] = k.start_mark.line + 1
    return m


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)
# a bare `=` (Falco's `comps: [=, startswith]`) is YAML's "value" tag: read it as the string
_Loader.add_constructor("tag:yaml.org,2002:value", lambda loader, node: loader.construct_scalar(node))


def _where(path: str, item, key=None) -> str:
    line = getattr(item, "lines", {}).get(key) if key is not None else None
    return f"{path}:{line or getattr(item, 'line', 0) or '?'}"


# --- fields ---------------------------------------------------------------

# Record types and the top-level keys the pipeline writes for them. A
# condition naming a key no type has is refused (a typo would otherwise
# make a rule silently never match).
def _record_fields() -> dict[str, list[str]]:
    """From the record structs themselves, so the check cannot drift from
    what the pipeline writes."""
    from ..records import WRITTEN
    return {cls.__struct_config__.tag: list(cls.__struct_fields__) for cls in WRITTEN
            if cls.__struct_config__.tag not in ("alert", "rules", "stats", "start")}


RECORD_FIELDS: dict[str, list[str]] = _record_fields()
# facts the detectors add (detectors.py documents each); None: free-form below
_RATE = {"burst": None, "count": None, "window_s": None, "baseline_per_min": None, "learning": None, "key": None,
         "jump": None, "jump_count": None, "jump_window_s": None, "rate_before_per_min": None, "prior_per_min": None,
         "why": None}
DETECTOR_FIELDS: dict = {
    "call": {"id": None, "tool": None, "method": None, "session": None, "client": None, "server": None,
             "arguments": "*", "candidates": None, "principal": None},
    "identity": {k: None for k in ("declared", "program", "exe", "app", "ancestors", "expected", "mismatch",
                                   "new_program", "programs_before", "principal", "uid", "exe_sha256")},
    "rate": {"client": _RATE, "server": _RATE, "tool": _RATE, "method": _RATE, "burst": None},
    "args": {k: None for k in ("traversal", "sensitive", "outside_roots", "shell_meta", "sql", "long", "repeated",
                               "max_length", "roots", "strings")},
    "content": {k: None for k in ("injection", "invisible", "base64", "secrets")},
    "pair": {k: None for k in ("client", "server", "key", "new", "allowed", "learning")},
    "novelty": {k: None for k in ("server", "prior_calls", "learning", "new_destination", "destination",
                                  "first_egress", "new_program", "program", "new_write_dir", "write_dir")},
    "tooldefs": {k: None for k in ("known", "tools", "changed", "added", "diff")},
    "chain": {k: None for k in ("sensitive_then_egress", "read", "sensitive", "read_ms", "connect", "connect_ms",
                                "read_pid", "connect_pid")},
    "decl": {k: None for k in ("read_only", "destructive", "closed_world", "open_world", "runs_commands",
                                          "annotations")},
    "size": {k: None for k in ("response", "request", "typical", "samples", "ratio", "anomalous", "key",
                               "amplification")},
    "behaviour": {k: None for k in ("tool_key", "prior_calls", "learning", "first_write", "new_destination",
                                    "destination")},
}
DETECTOR_ROOTS = tuple(DETECTOR_FIELDS)
KNOWN_ROOTS = {"type"} | set(DETECTOR_ROOTS) | {k for v in RECORD_FIELDS.values() for k in v}


def _check_field(name: str, types: set | None) -> str | None:
    """Why a field cannot be used, or None."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_/\-]+)*", name):
        return f"not a field name: {name!r}"
    parts = name.split(".")
    root = parts[0]
    if root not in KNOWN_ROOTS:
        return f"unknown field {name!r}"
    if root in DETECTOR_FIELDS:
        node = DETECTOR_FIELDS
        for i, p in enumerate(parts):
            if node == "*":
                break
            if node is None or p not in node:
                known = ", ".join(sorted(node)) if isinstance(node, dict) else "nothing below it"
                return f"unknown field {name!r} ({'.'.join(parts[:i]) or 'fields'}: {known})"
            node = node[p]
        return None
    if types and root not in DETECTOR_ROOTS and root != "type":
        if not any(root in RECORD_FIELDS.get(t, ()) for t in types):
            return f"field {name!r} is not in {'/'.join(sorted(types))} records"
    return None


# --- the condition language -----------------------------------------------

_TOKEN = re.compile(r"""
    \s*(?:
      (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    | (?P<op><=|>=|!=|==|=|<|>|\(|\)|,)
    | (?P<word>[^\s()=<>!,"']+)
    )""", re.X)
BINOPS = {"=", "==", "!=", "<", "<=", ">", ">=", "in", "intersects", "contains", "icontains", "startswith",
          "endswith", "glob", "regex"}


class _Tok:
    __slots__ = ("kind", "text", "pos")

    def __init__(self, kind, text, pos):
        self.kind, self.text, self.pos = kind, text, pos


def tokenize(s: str) -> list[_Tok]:
    out, i = [], 0
    while i < len(s):
        m = _TOKEN.match(s, i)
        if not m or m.end() == i:
            if s[i:].strip() == "":
                break
            raise SyntaxError(f"unexpected character {s[i]!r} at column {i + 1}")
        kind = m.lastgroup
        text = m.group(kind)
        out.append(_Tok(kind, text, m.start(kind)))
        i = m.end()
    return out


# AST nodes: tuples
#   ("and", a, b) ("or", a, b) ("not", a) ("truthy", field) ("exists", field)
#   ("cmp", op, field, value)   value: a python constant or a tuple (list)

class _Parser:
    def __init__(self, text: str, macros: dict, lists: dict):
        self.toks = tokenize(text)
        self.i = 0
        self.macros, self.lists = macros, lists
        self.fields: list[str] = []

    def peek(self, k=0):
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else None

    def take(self):
        t = self.peek()
        if t is None:
            raise SyntaxError("unexpected end of condition")
        self.i += 1
        return t

    def word(self, w):
        t = self.peek()
        return t is not None and t.kind == "word" and t.text == w

    def parse(self):
        if not self.toks:
            raise SyntaxError("empty condition")
        node = self.or_()
        t = self.peek()
        if t is not None:
            raise SyntaxError(f"unexpected {t.text!r} at column {t.pos + 1}")
        return node

    def _chain(self, op: str, operand):
        """operand (op operand)*, left-associative."""
        node = operand()
        while self.word(op):
            self.take()
            node = (op, node, operand())
        return node

    def or_(self):
        return self._chain("or", self.and_)

    def and_(self):
        return self._chain("and", self.not_)

    def not_(self):
        if self.word("not"):
            self.take()
            return ("not", self.not_())
        return self.atom()

    def atom(self):
        t = self.take()
        if t.kind == "op" and t.text == "(":
            node = self.or_()
            c = self.take()
            if c.text != ")":
                raise SyntaxError(f"expected ')' at column {c.pos + 1}, got {c.text!r}")
            return node
        if t.kind != "word" or t.text in ("and", "or", "not") or t.text in BINOPS:
            raise SyntaxError(f"expected a field or macro at column {t.pos + 1}, got {t.text!r}")
        name = t.text
        nxt = self.peek()
        is_op = nxt is not None and ((nxt.kind == "op" and nxt.text not in ("(", ")", ","))
                                     or (nxt.kind == "word" and (nxt.text in BINOPS or nxt.text == "exists")))
        if name in self.macros and not is_op:
            return ("macro", name, self.macros[name])
        self.fields.append(name)
        if not is_op:
            return ("truthy", name)
        op = self.take().text
        if op == "exists":
            return ("exists", name)
        if op == "==":
            op = "="
        value = self.value(op)
        return ("cmp", op, name, value)

    def value(self, op):
        t = self.peek()
        if t is not None and t.kind == "op" and t.text == "(":
            self.take()
            items = []
            while True:
                v = self.take()
                if v.kind == "op" and v.text == ")" and not items:
                    break
                if v.kind == "op":
                    raise SyntaxError(f"expected a value at column {v.pos + 1}, got {v.text!r}")
                if v.kind == "word" and v.text in self.lists:
                    items.extend(self.lists[v.text])
                else:
                    items.append(self.scalar(v))
                sep = self.take()
                if sep.text == ")":
                    break
                if sep.text != ",":
                    raise SyntaxError(f"expected ',' or ')' at column {sep.pos + 1}, got {sep.text!r}")
            return tuple(items)
        v = self.take()
        if v.kind == "op":
            raise SyntaxError(f"expected a value after {op!r} at column {v.pos + 1}")
        if v.kind == "word" and v.text in self.lists:
            return tuple(self.lists[v.text])
        return self.scalar(v)

    @staticmethod
    def scalar(t):
        if t.kind == "str":
            body = t.text[1:-1]
            return re.sub(r"\\(.)", r"\1", body)
        w = t.text
        if w in ("true", "false"):
            return w == "true"
        if re.fullmatch(r"-?\d+", w):
            return int(w)
        if re.fullmatch(r"-?\d+\.\d*", w):
            return float(w)
        return w


def _types_of(node) -> set | None:
    """The record types a condition can match (from `type = x` / `type in
    (...)` conjuncts), or None for any."""
    k = node[0]
    if k == "macro":
        return _types_of(node[2])
    if k == "cmp" and node[2] == "type" and node[1] in ("=", "in"):
        v = node[3]
        return {str(x) for x in v} if isinstance(v, tuple) else {str(v)}
    if k == "and":
        a, b = _types_of(node[1]), _types_of(node[2])
        if a is None:
            return b
        return a if b is None else a & b
    if k == "or":
        a, b = _types_of(node[1]), _types_of(node[2])
        return None if a is None or b is None else a | b
    return None


# --- compilation ----------------------------------------------------------

def get(o, k):
    """One step of a field path: dict key, list index or attribute."""
    if o is None:
        return None
    if type(o) is dict:
        return o.get(k)
    if type(o) is list:
        try:
            return o[int(k)]
        except (ValueError, IndexError):
            return None
    v = getattr(o, k, None)
    return None if v is UNSET else v


def _num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def op_eq(a, b):
    if type(a) is type(b):
        return a == b
    if a is None:
        return False
    if _num(b) and not _num(a):
        try:
            return float(a) == b
        except (TypeError, ValueError):
            return False
    if isinstance(b, str) and not isinstance(a, str):
        if isinstance(a, bool):
            return str(a).lower() == b
        return str(a) == b
    return a == b


def op_order(a, b, cmp):
    """<, <=, >, >= (cmp is the operator): numeric when b is a number."""
    if a is None:
        return False
    if _num(b) and not _num(a):
        try:
            a = float(a)
        except (TypeError, ValueError):
            return False
    try:
        return cmp(a, b)
    except TypeError:
        return False


def op_in(a, values):
    if a is None:
        return False
    if isinstance(a, (list, tuple)):
        return any(op_in(x, values) for x in a)
    return any(op_eq(a, v) for v in values)


def op_intersects(a, values):
    if a is None:
        return False
    items = a if isinstance(a, (list, tuple)) else [a]
    return any(op_eq(x, v) for x in items for v in values)


def op_contains(a, b, fold):
    if a is None:
        return False
    bs = b if isinstance(b, tuple) else (b,)
    if isinstance(a, (list, tuple)):
        return any(op_eq(x, v) for x in a for v in bs)
    if isinstance(a, dict):
        return any(str(v) in a for v in bs)
    s = str(a)
    if fold:
        s = s.lower()
        return any(str(v).lower() in s for v in bs)
    return any(str(v) in s for v in bs)


def op_startswith(a, b, end):
    if a is None or isinstance(a, (dict, list)):
        return False
    s = str(a)
    bs = tuple(str(v) for v in b) if isinstance(b, tuple) else (str(b),)
    return s.endswith(bs) if end else s.startswith(bs)


def op_match(a, pats):
    """glob/regex: pats are compiled patterns; lists match if any item does."""
    if a is None or isinstance(a, dict):
        return False
    items = a if isinstance(a, list) else [a]
    return any(p.search(str(x)) for x in items for p in pats)


def _exists(v):
    return v is not None


class _Compiler:
    """An AST -> the source of one Python expression over R (the record),
    T (its type) and C (the detectors' facts), with its constants in K."""

    def __init__(self):
        self.consts: list = []

    def const(self, v) -> str:
        self.consts.append(v)
        return f"K[{len(self.consts) - 1}]"

    def field(self, name: str) -> str:
        parts = name.split(".")
        root = parts[0]
        if root == "type":
            return "T"
        # detector facts (call.* too: for call records the detector fills it from the record)
        expr = f"C.get({root!r})" if root in DETECTOR_ROOTS else f"get(R, {root!r})"
        for p in parts[1:]:
            expr = f"get({expr}, {p!r})"
        return expr

    def emit(self, node) -> str:
        k = node[0]
        if k == "macro":
            # compiled once; evaluated at most once per record, however many rules use it
            fn = _MACRO_CACHE.get(id(node[2]))
            if fn is None or fn[0] is not node[2]:
                fn = (node[2], compile_condition(node[2])[0])
                _MACRO_CACHE[id(node[2])] = fn
            return f"_mac({self.const(fn[1])}, R, T, C)"
        if k == "and":
            return f"({self.emit(node[1])} and {self.emit(node[2])})"
        if k == "or":
            return f"({self.emit(node[1])} or {self.emit(node[2])})"
        if k == "not":
            return f"(not {self.emit(node[1])})"
        if k == "truthy":
            return f"bool({self.field(node[1])})"
        if k == "exists":
            return f"_exists({self.field(node[1])})"
        _, op, name, value = node
        f = self.field(name)
        if name == "type" and op in ("=", "!="):
            return f"(T {'==' if op == '=' else '!='} {self.const(str(value))})"
        if op == "=":
            return f"op_eq({f}, {self.const(value)})"
        if op == "!=":
            return f"_ne({f}, {self.const(value)})"
        if op in _ORDER:
            return f"op_order({f}, {self.const(value)}, {self.const(_ORDER[op])})"
        if op in ("in", "intersects"):
            vals = value if isinstance(value, tuple) else (value,)
            if name == "type":
                return f"(T in {self.const(frozenset(str(v) for v in vals))})"
            return f"op_{op}({f}, {self.const(vals)})"
        if op in ("contains", "icontains"):
            return f"op_contains({f}, {self.const(value)}, {op == 'icontains'})"
        if op in ("startswith", "endswith"):
            return f"op_startswith({f}, {self.const(value)}, {op == 'endswith'})"
        if op in ("glob", "regex"):
            vals = value if isinstance(value, tuple) else (value,)
            pats = []
            for v in vals:
                pat = re.compile(fnmatch.translate(str(v))) if op == "glob" else re.compile(str(v))
                pats.append(pat)
            return f"op_match({f}, {self.const(tuple(pats))})"
        raise SyntaxError(f"unknown operator {op!r}")


def _ne(a, b):
    return a is not None and not op_eq(a, b)


_MACRO_CACHE: dict = {}


def _mac(fn, R, T, C):
    """A macro's value for this record, computed once (facts carry the memo)."""
    memo = C.get("__macros")
    if memo is None:
        memo = C["__macros"] = {}
    v = memo.get(fn)
    if v is None:
        v = memo[fn] = fn(R, T, C)
    return v


_ORDER = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_ENV = {"get": get, "op_eq": op_eq, "op_order": op_order, "op_in": op_in, "op_intersects": op_intersects,
        "op_contains": op_contains, "op_startswith": op_startswith, "op_match": op_match, "_exists": _exists,
        "_ne": _ne, "_mac": _mac}


def _function(c: _Compiler, src: str):
    code = compile(f"lambda R, T, C: {src}", "<rule>", "eval")
    return eval(code, {**_ENV, "K": c.consts, "__builtins__": {"bool": bool}})


def compile_condition(node):
    """(fn(record, type, facts) -> bool, its Python source)."""
    c = _Compiler()
    src = c.emit(node)
    return _function(c, src), src


# %field.path, or %{field.path} where the path has - or / in it or text follows directly
_TEMPLATE = re.compile(r"%\{([A-Za-z0-9_.\-/]+)\}|%([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)")


def template_fields(text: str) -> list[str]:
    return [m.group(1) or m.group(2) for m in _TEMPLATE.finditer(text)]


# --- rules and rule sets -----------------------------------------------------

@dataclass
class Rule:
    name: str
    desc: str
    condition: str
    output: str
    priority: str
    tags: list[str]
    where: str
    once_per: str = "call"
    enabled: bool = True
    aggregate: float = AGGREGATE_DEFAULT            # seconds; 0: every match is its own alert
    aggregate_by: list = field(default_factory=list)  # field names: the key facts of a repeat
    agg_getters: list = field(default_factory=list)
    exceptions: list = field(default_factory=list)   # [(name, condition text)]
    types: frozenset | None = None                  # record types it can match (None: any)
    fn: object = None                               # compiled: fn(record, type, facts) -> bool
    out_fields: list[str] = field(default_factory=list)
    out_getters: list = field(default_factory=list)
    source: str = ""                                # the generated Python, for --explain


@dataclass
class RuleSet:
    rules: list[Rule]
    detectors: dict                    # detector name -> settings (merged over the files)
    files: list[str]
    by_type: dict = field(default_factory=dict)   # type -> [Rule], "*" -> rules for any type
    warnings: list[str] = field(default_factory=list)


DEFAULT_RULES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "default_rules.yaml")


def _read(path: str):
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise RuleError(f"{path}: {e.strerror}") from None
    try:
        doc = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        raise RuleError(f"{where}: not valid YAML: {getattr(e, 'problem', None) or e}") from None
    if doc is None:
        return []
    if not isinstance(doc, list):
        raise RuleError(f"{path}:1: a rules file is a list of items (- rule:, - list:, - macro:, - detector:)")
    return doc


def _strlist(v, where: str, what: str) -> list:
    if isinstance(v, (str, int, float)) and not isinstance(v, bool):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(x, (str, int, float)) and not isinstance(x, bool) for x in v):
        raise RuleError(f"{where}: {what} must be a list of strings")
    return list(v)


def load(paths: list[str]) -> RuleSet:
    """Read, check and compile rule files, in order (later files override and
    append to earlier ones). Raises RuleError with file:line: reason."""
    lists: dict[str, list] = {}
    macro_text: dict[str, tuple[str, str]] = {}
    rules: dict[str, dict] = {}
    order: list[str] = []
    detectors: dict[str, dict] = {}
    for path in paths:
        for item in _read(path):
            if not isinstance(item, dict):
                raise RuleError(f"{path}:{getattr(item, 'line', '?')}: each item must be a mapping")
            w = _where(path, item)
            kinds = [k for k in ("rule", "list", "macro", "detector") if k in item]
            if len(kinds) != 1:
                raise RuleError(f"{w}: an item has exactly one of rule, list, macro, detector")
            kind = kinds[0]
            name = item[kind]
            if not isinstance(name, str) or not name.strip():
                raise RuleError(f"{w}: {kind}: must be a non-empty name")
            if kind == "list":
                bad = set(item) - {"list", "items", "append"}
                if bad:
                    raise RuleError(f"{w}: list {name!r}: unknown keys {sorted(bad)}")
                items = _strlist(item.get("items", []), _where(path, item, "items"), f"list {name!r}: items")
                if item.get("append"):
                    if name not in lists:
                        raise RuleError(f"{w}: list {name!r}: append to a list that is not defined")
                    lists[name] = lists[name] + items
                else:
                    lists[name] = items
            elif kind == "macro":
                bad = set(item) - {"macro", "condition", "append"}
                if bad:
                    raise RuleError(f"{w}: macro {name!r}: unknown keys {sorted(bad)}")
                cond = item.get("condition")
                if not isinstance(cond, str) or not cond.strip():
                    raise RuleError(f"{w}: macro {name!r}: condition must be a non-empty string")
                if item.get("append"):
                    if name not in macro_text:
                        raise RuleError(f"{w}: macro {name!r}: append to a macro that is not defined")
                    macro_text[name] = (f"{macro_text[name][0]} {cond}", macro_text[name][1])
                else:
                    macro_text[name] = (cond, _where(path, item, "condition"))
            elif kind == "detector":
                settings = {k: v for k, v in item.items() if k != "detector"}
                detectors.setdefault(name, {}).update(settings)
                detectors[name]["__where__"] = w
            else:
                bad = set(item) - RULE_KEYS
                if bad:
                    raise RuleError(f"{w}: rule {name!r}: unknown keys {sorted(bad)} (known: {sorted(RULE_KEYS)})")
                _merge_rule(rules, order, name, item, path)
    return _build(lists, macro_text, rules, order, detectors, paths)


def _merge_rule(rules: dict, order: list, name: str, item: dict, path: str) -> None:
    w = _where(path, item)
    old = rules.get(name)
    if item.get("append"):
        if old is None:
            raise RuleError(f"{w}: rule {name!r}: append to a rule that is not defined")
        if "condition" in item:
            old["condition"] = f"{old['condition']} {item['condition']}"
        old["exceptions"] = old["exceptions"] + [(e, path) for e in (item.get("exceptions") or [])]
        return
    full = "condition" in item
    if old is not None and not full:
        # an override of some keys (enabled: false, priority, tags...)
        for k in ("enabled", "priority", "tags", "output", "desc", "once_per", "aggregate", "aggregate_by"):
            if k in item:
                old[k] = item[k]
                old["lines"][k] = _where(path, item, k)
        if "exceptions" in item:
            old["exceptions"] = [(e, path) for e in (item.get("exceptions") or [])]
        return
    if not full:
        raise RuleError(f"{w}: rule {name!r}: condition is required (or the rule must already exist to be changed)")
    for k in ("output", "priority"):
        if k not in item:
            raise RuleError(f"{w}: rule {name!r}: {k} is required")
    if old is None:
        order.append(name)
    rules[name] = {"name": name, "desc": item.get("desc", ""), "condition": item["condition"],
                   "output": item["output"], "priority": item["priority"], "tags": item.get("tags", []),
                   "enabled": item.get("enabled", True), "once_per": item.get("once_per", "call"),
                   "aggregate": item.get("aggregate", AGGREGATE_DEFAULT), "aggregate_by": item.get("aggregate_by", []),
                   "exceptions": [(e, path) for e in (item.get("exceptions") or [])], "where": w,
                   "lines": {k: _where(path, item, k) for k in item}}


def _expand_macros(macro_text: dict, lists: dict) -> dict:
    """Macro name -> parsed AST, each checked, in dependency order (a macro
    may use macros defined before or after it; a cycle is refused)."""
    done: dict = {}
    busy: set = set()

    def build(name):
        if name in done:
            return done[name]
        if name in busy:
            raise RuleError(f"{macro_text[name][1]}: macro {name!r}: refers to itself")
        busy.add(name)
        text, where = macro_text[name]
        # the macros it uses are the words of its text that name macros
        for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text):
            if w in macro_text and w != name:
                build(w)
        try:
            p = _Parser(text, done, lists)
            node = p.parse()
        except SyntaxError as e:
            raise RuleError(f"{where}: macro {name!r}: {e}") from None
        for f in p.fields:
            why = _check_field(f, None)
            if why:
                raise RuleError(f"{where}: macro {name!r}: {why}")
        busy.discard(name)
        done[name] = node
        return node

    for name in macro_text:
        build(name)
    return done


def _exception_node(exc, where: str, name: str, macros: dict, lists: dict):
    """A Falco-style exception -> an AST node that matches the known-good cases."""
    if not isinstance(exc, dict) or not isinstance(exc.get("name"), str):
        raise RuleError(f"{where}: rule {name!r}: each exception needs a name")
    ew = _where(where.rsplit(":", 1)[0], exc) if hasattr(exc, "line") else where
    bad = set(exc) - {"name", "fields", "comps", "values", "condition"}
    if bad:
        raise RuleError(f"{ew}: rule {name!r}: exception {exc['name']!r}: unknown keys {sorted(bad)}")
    if "condition" in exc:
        try:
            p = _Parser(str(exc["condition"]), macros, lists)
            node = p.parse()
        except SyntaxError as e:
            raise RuleError(f"{ew}: rule {name!r}: exception {exc['name']!r}: {e}") from None
        return node, p.fields
    fields = exc.get("fields")
    single = isinstance(fields, str)
    fields = [fields] if single else fields
    if not isinstance(fields, list) or not fields or not all(isinstance(f, str) for f in fields):
        raise RuleError(f"{ew}: rule {name!r}: exception {exc['name']!r}: fields must be a field or a list of them")
    comps = exc.get("comps", "in" if single else ["="] * len(fields))
    comps = [comps] if isinstance(comps, str) else comps
    if not isinstance(comps, list) or len(comps) != len(fields) or not all(c in BINOPS for c in comps):
        raise RuleError(f"{ew}: rule {name!r}: exception {exc['name']!r}: comps must give one operator per field "
                        f"({', '.join(sorted(BINOPS))})")
    values = exc.get("values", [])
    if not isinstance(values, list):
        raise RuleError(f"{ew}: rule {name!r}: exception {exc['name']!r}: values must be a list")
    alts = []
    for row in values:
        if single:
            row = [row]
        if not isinstance(row, list) or len(row) != len(fields):
            raise RuleError(f"{ew}: rule {name!r}: exception {exc['name']!r}: each value must give one entry per "
                            f"field ({len(fields)})")
        conj = None
        for f, c, v in zip(fields, comps, row):
            if isinstance(v, list):
                v = tuple(x for item in v for x in (lists.get(item, [item]) if isinstance(item, str) else [item]))
            elif isinstance(v, str) and v in lists:
                v = tuple(lists[v])
            if c in ("glob", "regex"):
                try:
                    for pat in (v if isinstance(v, tuple) else (v,)):
                        re.compile(fnmatch.translate(str(pat)) if c == "glob" else str(pat))
                except re.error as e:
                    raise RuleError(f"{ew}: rule {name!r}: exception {exc['name']!r}: bad pattern: {e}") from None
            n = ("cmp", "=" if c == "==" else c, f, v)
            conj = n if conj is None else ("and", conj, n)
        alts.append(conj)
    node = None
    for a in alts:
        node = a if node is None else ("or", node, a)
    return node, list(fields)


def _build(lists, macro_text, rules, order, detectors, paths) -> RuleSet:
    _MACRO_CACHE.clear()  # one compiled function per macro of this set, shared by its rules
    macros = _expand_macros(macro_text, lists)
    out: list[Rule] = []
    warnings: list[str] = []
    for name in order:
        r = rules[name]
        w = r["lines"].get("condition", r["where"])
        prio = r["priority"]
        p = str(prio).lower() if isinstance(prio, str) else None
        p = _PRIO_ALIASES.get(p, p)
        if p not in PRIORITIES:
            raise RuleError(f"{r['lines'].get('priority', r['where'])}: rule {name!r}: priority must be one of "
                            f"{', '.join(PRIORITIES)} (got {prio!r})")
        if not isinstance(r["output"], str):
            raise RuleError(f"{r['lines'].get('output', r['where'])}: rule {name!r}: output must be a string")
        tags = _strlist(r["tags"], r["lines"].get("tags", r["where"]), f"rule {name!r}: tags")
        if r["once_per"] not in ONCE_PER:
            raise RuleError(f"{r['lines'].get('once_per', r['where'])}: rule {name!r}: once_per must be one of "
                            f"{', '.join(ONCE_PER)}")
        try:
            agg = duration(r["aggregate"], f"{r['lines'].get('aggregate', r['where'])}: rule {name!r}: aggregate")
        except ConfigError as e:
            raise RuleError(str(e)) from None
        agg_by = _strlist(r["aggregate_by"], r["lines"].get("aggregate_by", r["where"]),
                          f"rule {name!r}: aggregate_by")
        if not isinstance(r["enabled"], bool):
            raise RuleError(f"{r['lines'].get('enabled', r['where'])}: rule {name!r}: enabled must be true or false")
        if not isinstance(r["condition"], str):
            raise RuleError(f"{w}: rule {name!r}: condition must be a string")
        try:
            p_ = _Parser(r["condition"], macros, lists)
            node = p_.parse()
        except SyntaxError as e:
            raise RuleError(f"{w}: rule {name!r}: condition: {e}") from None
        types = _types_of(node)
        if types is not None:
            unknown = types - set(RECORD_FIELDS)
            if unknown:
                raise RuleError(f"{w}: rule {name!r}: unknown record type {sorted(unknown)[0]!r} (known: "
                                f"{', '.join(sorted(RECORD_FIELDS))})")
        for f in p_.fields:
            why = _check_field(f, types)
            if why:
                raise RuleError(f"{w}: rule {name!r}: condition: {why}")
        excs = []
        for exc, epath in r["exceptions"]:
            en, efields = _exception_node(exc, r["lines"].get("exceptions", r["where"]), name, macros, lists)
            for f in efields:
                why = _check_field(f, types)
                if why:
                    raise RuleError(f"{_where(epath, exc)}: rule {name!r}: exception {exc['name']!r}: {why}")
            if en is not None:  # an exception with no values (yet: a later file may append some) excepts nothing
                node = ("and", node, ("not", en))
            excs.append((exc["name"], exc.get("condition")))
        for f in agg_by:
            why = _check_field(f, types)
            if why:
                raise RuleError(f"{r['lines'].get('aggregate_by', r['where'])}: rule {name!r}: aggregate_by: {why}")
        ofields = template_fields(r["output"])
        for f in ofields:
            why = _check_field(f, types)
            if why:
                raise RuleError(f"{r['lines'].get('output', r['where'])}: rule {name!r}: output: {why}")
        if types is None:
            warnings.append(f"{r['where']}: rule {name!r}: no `type = ...` in its condition: it is tried on every "
                            f"record (slower)")
        try:
            fn, src = compile_condition(node)
            getters = [_getter(f) for f in ofields]
            agg_getters = [_getter(f) for f in agg_by]
        except (SyntaxError, re.error) as e:
            raise RuleError(f"{w}: rule {name!r}: {e}") from None
        out.append(Rule(name=name, desc=str(r["desc"]), condition=r["condition"], output=r["output"],
                        priority=p, tags=[str(t) for t in tags], where=r["where"], once_per=r["once_per"],
                        aggregate=agg, aggregate_by=list(agg_by), agg_getters=agg_getters,
                        enabled=r["enabled"], exceptions=excs, types=frozenset(types) if types else None,
                        fn=fn, out_fields=ofields, out_getters=getters, source=src))
    rs = RuleSet(rules=out, detectors=detectors, files=list(paths), warnings=warnings)
    index(rs)
    return rs


def _getter(name: str):
    c = _Compiler()
    return _function(c, c.field(name))


def index(rs: RuleSet) -> None:
    """Enabled rules by the record types they can match."""
    live = [r for r in rs.rules if r.enabled]
    anytype = [r for r in live if r.types is None]
    by: dict[str, list] = {"*": anytype}
    for t in RECORD_FIELDS:
        by[t] = [r for r in live if r.types is None or t in r.types]
    rs.by_type = by


def render(rule: Rule, record, rtype: str, facts: dict) -> tuple[str, dict]:
    """The output text and the fields it names (Falco's output_fields)."""
    values = {}
    for name, g in zip(rule.out_fields, rule.out_getters):
        try:
            values[name] = g(record, rtype, facts)
        except Exception:
            values[name] = None

    def sub(m):
        v = values.get(m.group(1) or m.group(2))
        if v is None:
            return "<NA>"
        if isinstance(v, (list, tuple)):
            return ",".join(map(str, v))
        return str(v)

    return _TEMPLATE.sub(sub, rule.output), {k: _plain(v) for k, v in values.items()}


def _plain(v):
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    return str(v)
