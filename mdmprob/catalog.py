"""What the zoo, the decoder presets and the experiments offer, read from their source files.

``mdmprob models`` / ``decoders`` / ``experiments`` list names, descriptions and parameter
defaults. Importing the modules that define them would import torch and Pyro (seconds); these
functions read the same facts from the source with :mod:`ast` (milliseconds): a model's module
docstring and ``build()`` defaults, each preset's docstring and defaults, each experiment's
``name``, ``title`` and ``Config`` defaults. Anything the static reading cannot resolve (a default
that is not a literal, a registry built in an unusual way) falls back to importing the module, so
the answer is always the imported one (the tests check that both agree).
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path
from typing import Any


def models(from_source: bool = True) -> dict[str, dict[str, Any]]:
    """``{name: {"description": first docstring line, "params": {name: default}}}`` of the zoo
    (``from_source=False``: by importing the models instead)."""
    try:
        if from_source:
            return _static_models()
    except _Dynamic:
        pass
    from mdmprob.structure import list_models, model_parameters

    return {name: {"description": desc, "params": {k: _plain(v) for k, v in
                                                    model_parameters(name).items()}}
            for name, desc in list_models().items()}


def decoders(from_source: bool = True) -> dict[str, dict[str, Any]]:
    """``{name: {"description": first docstring paragraph, "params": {name: default}}}`` of the
    decoder presets, sorted by name."""
    try:
        if from_source:
            return _static_decoders()
    except _Dynamic:
        pass
    import inspect

    from mdmprob.decoders import PRESETS

    return {name: {"description": describe(fn.__doc__),
                   "params": {p.name: _plain(p.default) for p in
                              inspect.signature(fn).parameters.values()
                              if p.default is not inspect.Parameter.empty}}
            for name, fn in sorted(PRESETS.items())}


def experiments(from_source: bool = True) -> dict[str, dict[str, Any]]:
    """``{name: {"description": title, "params": {field: default}}}`` of the experiments."""
    try:
        if from_source:
            return _static_experiments()
    except _Dynamic:
        pass
    import dataclasses

    from mdmprob.experiments import registry

    return {name: {"description": exp.title,
                   "params": {f.name: _plain(f.default) for f in dataclasses.fields(exp.Config)}}
            for name, exp in registry().items()}


def describe(doc: str | None) -> str:
    """The first paragraph of a docstring on one line."""
    paragraph = (doc or "").strip().split("\n\n")[0]
    return " ".join(paragraph.split())


# ---------------------------------------------------------------------------- static readers
class _Dynamic(Exception):
    """The static reading cannot answer; import the modules instead."""


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise _Dynamic(name)
    return Path(next(iter(spec.submodule_search_locations)))


def _parse(path: Path) -> ast.Module:
    try:
        return ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError) as e:
        raise _Dynamic(str(path)) from e


def _static_models() -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted(_package_dir("mdmprob.models").glob("*.py")):
        if path.stem.startswith("_"):
            continue
        tree = _parse(path)
        build = _functions(tree).get("build")
        if build is None:
            continue
        doc = (ast.get_docstring(tree) or "").strip()
        out[path.stem] = {"description": doc.splitlines()[0] if doc else "",
                          "params": _defaults(build, {}, every=True)}
    return out


def _static_decoders() -> dict[str, dict[str, Any]]:
    path = _package_dir("mdmprob.decoders") / "presets.py"
    tree = _parse(path)
    functions = _functions(tree)
    names: dict[str, str] = {}
    for node in tree.body:  # PRESETS = {...}; PRESETS["x"] = f; PRESETS.update(x=f)
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "PRESETS"
                                                for t in node.targets):
            if not isinstance(node.value, ast.Dict):
                raise _Dynamic("PRESETS")
            for k, v in zip(node.value.keys, node.value.values, strict=True):
                names[_literal(k, {})] = _name(v)
        elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Subscript) and isinstance(t.value, ast.Name) and
                t.value.id == "PRESETS" for t in node.targets):
            target = next(t for t in node.targets if isinstance(t, ast.Subscript))
            names[_literal(target.slice, {})] = _name(node.value)
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and \
                ast.unparse(node.value.func) == "PRESETS.update":
            if node.value.args:
                raise _Dynamic("PRESETS.update")
            for kw in node.value.keywords:
                names[kw.arg] = _name(kw.value)
        elif "PRESETS" in ast.unparse(node) and not isinstance(node, ast.FunctionDef):
            raise _Dynamic("PRESETS")  # a registration this reader does not know
    if not names or any(fn not in functions for fn in names.values()):
        raise _Dynamic("PRESETS")
    return {name: {"description": describe(ast.get_docstring(functions[fn])),
                   "params": _defaults(functions[fn], {}, every=False)}
            for name, fn in sorted(names.items())}


def _static_experiments() -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted(_package_dir("mdmprob.experiments").glob("*.py")):
        if path.stem in ("base", "executor", "report", "plotting") or path.stem.startswith("_"):
            continue
        tree = _parse(path)
        if not any(isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and
                                                     t.id == "EXPERIMENT" for t in n.targets)
                   for n in tree.body):
            continue
        constants = _constants(tree)
        classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
        exp = next((c for c in classes.values() if any(_name(b) == "Experiment" for b in c.bases)),
                   None)
        if exp is None:
            raise _Dynamic(str(path))
        attrs = _class_constants(exp, constants)
        config = classes.get(_name(_class_nodes(exp).get("Config")))
        if config is None or "name" not in attrs:
            raise _Dynamic(str(path))
        params = {}
        for node in config.body:
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                if node.value is None:
                    raise _Dynamic(str(path))
                params[node.target.id] = _plain(_literal(node.value, constants))
        found[attrs["name"]] = {"description": attrs.get("title", ""), "params": params}
    return dict(sorted(found.items()))


def _functions(tree: ast.Module) -> dict[str, ast.FunctionDef]:
    return {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}


def _defaults(fn: ast.FunctionDef, constants: dict, every: bool) -> dict[str, Any]:
    """Parameter defaults of ``fn`` (``every``: parameters without one too, as ``inspect``
    reports them, ``inspect._empty`` is not JSON: refuse)."""
    args = fn.args
    if args.vararg or args.kwarg:
        raise _Dynamic(fn.name)
    positional = args.posonlyargs + args.args
    pairs = list(zip(positional[len(positional) - len(args.defaults):], args.defaults,
                     strict=True))
    pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True)
              if d is not None]
    if every and len(pairs) != len(positional) + len(args.kwonlyargs):
        raise _Dynamic(fn.name)
    order = {a.arg: i for i, a in enumerate(positional + args.kwonlyargs)}
    pairs.sort(key=lambda p: order[p[0].arg])
    return {a.arg: _plain(_literal(d, constants)) for a, d in pairs}


def _constants(tree: ast.Module) -> dict[str, Any]:
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and \
                isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = _literal(node.value, out)
            except _Dynamic:
                pass
    return out


def _class_nodes(cls: ast.ClassDef) -> dict[str, ast.expr]:
    out = {}
    for node in cls.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and \
                isinstance(node.targets[0], ast.Name):
            out[node.targets[0].id] = node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value:
            out[node.target.id] = node.value
    return out


def _class_constants(cls: ast.ClassDef, constants: dict) -> dict[str, Any]:
    out = {}
    for key in ("name", "title"):
        node = _class_nodes(cls).get(key)
        if node is not None:
            out[key] = _literal(node, constants)
    return out


def _literal(node: ast.expr | None, constants: dict) -> Any:
    if node is None:
        raise _Dynamic("no value")
    if isinstance(node, ast.Name):
        if node.id in constants:
            return constants[node.id]
        raise _Dynamic(node.id)
    if isinstance(node, ast.Tuple | ast.List):
        items = [_literal(e, constants) for e in node.elts]
        return tuple(items) if isinstance(node, ast.Tuple) else items
    if isinstance(node, ast.BinOp):  # implicit string concatenation over lines, 2 ** 10, ...
        left, right = _literal(node.left, constants), _literal(node.right, constants)
        ops = {ast.Add: lambda a, b: a + b, ast.Mult: lambda a, b: a * b,
               ast.Pow: lambda a, b: a ** b, ast.Sub: lambda a, b: a - b}
        if type(node.op) not in ops:
            raise _Dynamic("operator")
        return ops[type(node.op)](left, right)
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError) as e:
        raise _Dynamic(ast.unparse(node)) from e


def _name(node) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if node is None:
        return None
    raise _Dynamic(ast.unparse(node))


def _plain(v):
    return [_plain(x) for x in v] if isinstance(v, tuple | list) else v
