from gatekeeper.bundle.manifest import messages_for
from gatekeeper.runtime.cache import CachedRuntime, ResponseCache
from gatekeeper.runtime.requests import Generate, LogLik
from gatekeeper.testing import FakeRuntime


def _requests():
    return [Generate(messages_for(f"q{k}"), 8) for k in range(5)]


def test_an_unchanged_recheck_never_reaches_the_model(tmp_path):
    inner = FakeRuntime({"adapter": lambda t: t.upper()})
    first = CachedRuntime(inner, ResponseCache(tmp_path / "c.sqlite"))
    assert first.generate("adapter", _requests()) == ["Q0", "Q1", "Q2", "Q3", "Q4"]
    again = CachedRuntime(inner, ResponseCache(tmp_path / "c.sqlite"))
    assert again.generate("adapter", _requests()) == ["Q0", "Q1", "Q2", "Q3", "Q4"]
    assert inner.calls == [("adapter", 5)]
    assert (again.hits, again.misses) == (5, 0)


def test_the_key_includes_the_model_not_just_the_prompt(tmp_path):
    """Two adapters asked the same prompt must not share answers."""
    cache = ResponseCache(tmp_path / "c.sqlite")
    one = CachedRuntime(FakeRuntime({"adapter": lambda t: "one"}, name="adapter-1"), cache)
    two = CachedRuntime(FakeRuntime({"adapter": lambda t: "two"}, name="adapter-2"), cache)
    assert one.generate("adapter", _requests()) == ["one"] * 5
    assert two.generate("adapter", _requests()) == ["two"] * 5
    # and the side is part of the key too
    both = CachedRuntime(FakeRuntime({"adapter": lambda t: "a", "base": lambda t: "b"}), cache)
    assert both.generate("adapter", _requests()[:1]) == ["a"]
    assert both.generate("base", _requests()[:1]) == ["b"]


def test_decoding_settings_are_part_of_the_key(tmp_path):
    inner = FakeRuntime({"adapter": lambda t: t})
    cached = CachedRuntime(inner, ResponseCache(tmp_path / "c.sqlite"))
    cached.generate("adapter", [Generate(messages_for("x"), 8)])
    cached.generate("adapter", [Generate(messages_for("x"), 16)])
    assert cached.misses == 2


def test_loglik_results_round_trip(tmp_path):
    inner = FakeRuntime({"base": lambda t: "yes"})
    cached = CachedRuntime(inner, ResponseCache(tmp_path / "c.sqlite"))
    requests = [LogLik(messages_for("q"), "yes"), LogLik(messages_for("q"), "no")]
    first = cached.loglik("base", requests)
    assert cached.loglik("base", requests) == first
    assert first[0].greedy and not first[1].greedy
    assert inner.calls == [("base", 2)]
