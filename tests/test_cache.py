"""The caches of compiled structures (mdmprob.cache): hits give the same graph and the same engine
answers, corrupt or stale entries are rebuilt, changed models miss."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

import mdmprob.compile as compile_module
from mdmprob import cache
from mdmprob.exact import ExactEngine
from mdmprob.structure import Structure, load_model
from tests.brute import conditionals as brute_conditionals
from tests.brute import token_log_joint


@pytest.fixture
def disk(tmp_path, monkeypatch):
    """An empty disk cache and an empty in-process cache; counts the compiles and plans."""
    monkeypatch.setenv("MDMPROB_CACHE", str(tmp_path))
    cache.forget()
    calls = {"compile": 0, "plan": 0}
    compile_model, build_plan = compile_module.compile_model, ExactEngine._build_plan

    def counting_compile(*args, **kwargs):
        calls["compile"] += 1
        return compile_model(*args, **kwargs)

    def counting_plan(self, *args, **kwargs):
        calls["plan"] += 1
        return build_plan(self, *args, **kwargs)

    monkeypatch.setattr(compile_module, "compile_model", counting_compile)
    monkeypatch.setattr(ExactEngine, "_build_plan", counting_plan)
    yield tmp_path, calls
    cache.forget()


def _files(folder, kind):
    return sorted((folder / kind).glob("*.pt"))


def _same_graph(a, b) -> bool:
    return (a.names == b.names and a.cards == b.cards and a.n_tokens == b.n_tokens
            and a.scale == b.scale and a.log_constant == b.log_constant
            and [f.variables for f in a.factors] == [f.variables for f in b.factors]
            and [f.site for f in a.factors] == [f.site for f in b.factors]
            and all(torch.equal(f.table, g.table) for f, g in zip(a.factors, b.factors,
                                                                    strict=True)))


def _partial(n, seed=0):
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 2, (6, n), generator=gen)
    visible = torch.rand(6, n, generator=gen) < 0.5
    return tokens, visible


def test_second_load_hits_the_disk_then_the_process_and_answers_the_same(disk):
    folder, calls = disk
    cold = load_model("block_hmm", n_blocks=2, block_size=2)
    tokens, visible = _partial(cold.n_tokens)
    cold_answer = cold.engine().conditionals(tokens, visible)
    plans = calls["plan"]
    assert calls["compile"] == 1 and plans >= 1
    assert len(_files(folder, "graph")) == 1 and len(_files(folder, "plan")) == plans

    cache.forget()  # a new run: only the disk is left
    warm = load_model("block_hmm", n_blocks=2, block_size=2)
    warm_answer = warm.engine().conditionals(tokens, visible)
    assert calls == {"compile": 1, "plan": plans}  # neither traced nor planned again
    assert _same_graph(warm.factor_graph, cold.factor_graph)
    assert torch.equal(warm_answer, cold_answer)
    # and the answer is the model's: brute-force enumeration of the joint
    brute = brute_conditionals(token_log_joint(cold), tokens, visible)
    masked = ~visible
    assert torch.allclose(warm_answer[masked].exp(), brute[masked].exp(), atol=1e-10)

    again = load_model("block_hmm", n_blocks=2, block_size=2)  # in the process: the same graph
    assert again.factor_graph is warm.factor_graph and calls["compile"] == 1
    # engines of one cached graph on one device and dtype share their message trees
    assert again.engine().message_tree() is warm.engine().message_tree()
    assert torch.equal(again.engine().conditionals(tokens, visible), cold_answer)


def test_changed_parameters_or_code_miss(disk):
    folder, calls = disk
    a = load_model("block_hmm", n_blocks=2, block_size=2, a=0.9)
    b = load_model("block_hmm", n_blocks=2, block_size=2, a=0.8)
    assert calls["compile"] == 2 and len(_files(folder, "graph")) == 2
    assert not _same_graph(a.factor_graph, b.factor_graph)
    assert a.factor_graph.cache_key != b.factor_graph.cache_key

    def coin(p):
        def model():
            pyro.sample("x", dist.Categorical(torch.tensor([p, 1 - p])))
        return model

    s1, s2 = Structure(coin(0.3), ["x"], 2), Structure(coin(0.4), ["x"], 2)
    assert calls["compile"] == 4  # same code, another closure: a miss
    assert s1.factor_graph.factors[0].table.exp()[0] == pytest.approx(0.3)
    assert s2.factor_graph.factors[0].table.exp()[0] == pytest.approx(0.4)
    Structure(coin(0.3), ["x"], 2)  # same code and closure: a hit
    assert calls["compile"] == 4


@pytest.mark.parametrize("damage", ["garbage", "truncated", "payload_byte", "other_key"])
def test_a_corrupt_entry_is_rebuilt_and_rewritten(disk, damage):
    folder, calls = disk
    cold = load_model("block_hmm", n_blocks=2, block_size=2)
    (path,) = _files(folder, "graph")
    data = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"not a cache entry")
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "payload_byte":
        flipped = bytearray(data)
        flipped[-20] ^= 0xFF
        path.write_bytes(bytes(flipped))
    else:
        path.write_bytes(data.replace(cold.factor_graph.cache_key.encode(), b"0" * 64, 1))
    cache.forget()
    rebuilt = load_model("block_hmm", n_blocks=2, block_size=2)
    assert calls["compile"] == 2
    assert _same_graph(rebuilt.factor_graph, cold.factor_graph)
    assert path.read_bytes() == data  # rewritten whole
    cache.forget()
    load_model("block_hmm", n_blocks=2, block_size=2)
    assert calls["compile"] == 2  # and read back


def test_a_well_formed_entry_that_is_not_a_graph_is_rebuilt(disk):
    folder, calls = disk
    cold = load_model("block_hmm", n_blocks=2, block_size=2)
    key = cold.factor_graph.cache_key
    body = compile_module.graph_body(cold.factor_graph)
    bad = dict(body, tables=body["tables"].clone())
    bad["tables"][0] = math.nan  # a checksum-valid entry with a NaN log-factor
    cache.write("graph", key, bad)
    cache.forget()
    rebuilt = load_model("block_hmm", n_blocks=2, block_size=2)
    assert calls["compile"] == 2 and _same_graph(rebuilt.factor_graph, cold.factor_graph)
    for broken in (dict(body, tables=body["tables"][:-1]),  # a table short
                   dict(body, variables=[[99]] + body["variables"][1:]),  # no such variable
                   dict(body, cards=body["cards"][:-1])):
        assert compile_module.graph_from_body(broken) is None
    assert _same_graph(compile_module.graph_from_body(body), cold.factor_graph)


def test_a_corrupt_plan_is_rebuilt(disk):
    folder, calls = disk
    s = load_model("block_hmm", n_blocks=2, block_size=2)
    plan = s.engine().plan((), False, True)
    (path,) = _files(folder, "plan")
    path.write_bytes(path.read_bytes()[:-7])
    cache.forget()
    again = load_model("block_hmm", n_blocks=2, block_size=2).engine().plan((), False, True)
    assert calls["plan"] == 2 and again == plan


def test_cache_off_writes_nothing_and_unkeyable_models_compile_each_time(tmp_path, disk,
                                                                         monkeypatch):
    folder, calls = disk
    monkeypatch.setenv("MDMPROB_CACHE", "off")
    assert cache.cache_dir() is None
    load_model("block_hmm", n_blocks=2, block_size=2)
    assert not any(folder.iterdir())
    monkeypatch.setenv("MDMPROB_CACHE", str(folder))

    class Opaque:  # an object the key cannot identify
        p = 0.3

    box = Opaque()

    def model():
        pyro.sample("x", dist.Categorical(torch.tensor([box.p, 1 - box.p])))

    for _ in range(2):
        s = Structure(model, ["x"], 2)
        assert s.factor_graph.cache_key is None
    assert calls["compile"] == 3 and not _files(folder, "graph")


def test_an_unwritable_cache_warns_and_still_compiles(tmp_path, disk, monkeypatch):
    _, calls = disk
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv("MDMPROB_CACHE", str(blocker / "below"))
    with pytest.warns(UserWarning, match="MDMPROB_CACHE"):
        s = load_model("block_hmm", n_blocks=2, block_size=2)
    assert calls["compile"] == 1 and s.n_tokens == 4


def test_cache_dir_default_and_relocation(monkeypatch, tmp_path):
    monkeypatch.delenv("MDMPROB_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache.cache_dir() == tmp_path / "mdmprob"
    monkeypatch.setenv("MDMPROB_CACHE", str(tmp_path / "elsewhere"))
    assert cache.cache_dir() == tmp_path / "elsewhere"


def test_fingerprint_follows_code_closure_and_tensors():
    def make(c, t):
        return lambda: c * t.sum()

    t = torch.tensor([1.0, 2.0])
    assert cache.fingerprint(make(2, t)) == cache.fingerprint(make(2, t.clone()))
    assert cache.fingerprint(make(2, t)) != cache.fingerprint(make(3, t))
    assert cache.fingerprint(make(2, t)) != cache.fingerprint(make(2, t + 1))
    assert cache.fingerprint(make(2, t)) != cache.fingerprint(lambda: 2 * t.prod())
    assert cache.fingerprint(torch.tensor([1.0], dtype=torch.float64)) != cache.fingerprint(
        torch.tensor([1.0], dtype=torch.float32))
    with pytest.raises(cache.Unhashable):
        cache.fingerprint(object())


def test_the_collector_pause_restores_its_state_even_on_errors():
    import gc

    from mdmprob.cache import gc_paused

    assert gc.isenabled()
    with pytest.raises(RuntimeError):
        with gc_paused():
            assert not gc.isenabled()
            raise RuntimeError("a failing build")
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # a caller's own pause is left as it was
    finally:
        gc.enable()


def test_a_plan_round_trips_through_its_disk_body():
    from mdmprob.exact import _plan_body, _plan_from_body

    engine = load_model("block_hmm", n_blocks=5, block_size=3).engine()
    for args in [((), False, True), ((), False, False), ((), True, False), ((0, 4), False, False)]:
        plan = engine._build_plan(*args)
        assert _plan_from_body(_plan_body(plan)) == plan
    body = _plan_body(plan)
    body["steps"] = body["steps"][:-1]  # a truncated body is refused (then rebuilt)
    with pytest.raises((ValueError, IndexError)):
        _plan_from_body(body)
